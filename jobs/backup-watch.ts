import { setTimeout as sleep } from 'node:timers/promises';
import { Job, Queue, type ConnectionOptions } from 'bullmq';
import { BACKUP_ERROR_CODES, BackupError, type BackupErrorCode } from '../backup/index.js';
import { JobsError } from './jobs-errors.js';
import { BACKUP_QUEUE, BACKUP_SHARD_QUEUE, shardJobId, type BackupParentData, type BackupReport, type BackupShardData } from './backup-flow.js';

/** A progress snapshot of a backup. Rows never go backwards, also across shard retries. */
export interface BackupProgress {
  rowsDone: number;
  /** Partition counts at the snapshots (approximate). */
  rowsTotal: number;
  shardsDone: number;
  shardsFailed: number;
  shards: number;
  rowsPerSecond: number;
  etaSeconds: number | undefined;
}

export interface WatchBackupOptions {
  /** How often to look, in ms. Default 500. */
  pollMs?: number;
  onProgress?: (progress: BackupProgress) => void;
  signal?: AbortSignal;
}

const POLL_CHUNK = 200;

/**
 * Follows a backup until its parent job completes and resolves its report. A failed backup rejects
 * with its BackupError code (BACKUP_SHARD_FAILED naming the shards, BACKUP_SNAPSHOT_LOST, …) when
 * the failure carries one, else JobsError JOBS_FAILED.
 */
export async function watchBackup(connection: ConnectionOptions, backupId: string, options: WatchBackupOptions = {}): Promise<BackupReport> {
  const parents = new Queue<BackupParentData>(BACKUP_QUEUE, { connection });
  const shards = new Queue<BackupShardData>(BACKUP_SHARD_QUEUE, { connection });
  const best = new Map<number, number>();
  const started = performance.now();
  let startRows: number | undefined;
  try {
    for (;;) {
      const parent = await Job.fromId<BackupParentData, BackupReport>(parents, backupId);
      if (!parent) throw new JobsError('JOBS_NOT_FOUND', `backup ${backupId} is not in Redis (removed, or another Redis?)`);
      const state = await parent.getState();
      if (state === 'completed') {
        const done = await Job.fromId<BackupParentData, BackupReport>(parents, backupId);
        if (!done?.returnvalue) throw new JobsError('JOBS_NOT_FOUND', `backup ${backupId} completed but its report is gone from Redis`);
        return done.returnvalue;
      }
      if (state === 'failed') throw failureOf(backupId, parent.failedReason ?? 'no reason recorded');
      if (options.onProgress) {
        const total = parent.data.shards;
        let shardsDone = 0;
        let shardsFailed = 0;
        for (let from = 0; from < total; from += POLL_CHUNK) {
          const ids = Array.from({ length: Math.min(POLL_CHUNK, total - from) }, (_, i) => from + i);
          const jobs = await Promise.all(ids.map((i) => Job.fromId<BackupShardData>(shards, shardJobId(backupId, i))));
          for (const [k, job] of jobs.entries()) {
            if (!job) continue;
            const progress = job.progress as { rowsDone?: number } | number;
            const rows = typeof progress === 'object' && progress !== null ? (progress.rowsDone ?? 0) : 0;
            if (job.finishedOn !== undefined && job.failedReason === undefined) shardsDone++;
            else if (job.finishedOn !== undefined) shardsFailed++;
            best.set(ids[k]!, Math.max(best.get(ids[k]!) ?? 0, rows));
          }
        }
        const rowsDone = [...best.values()].reduce((s, n) => s + n, 0);
        startRows ??= rowsDone;
        const seconds = (performance.now() - started) / 1000;
        const rate = seconds > 0 ? (rowsDone - startRows) / seconds : 0;
        const rowsTotal = Math.max(parent.data.approxRows, rowsDone);
        options.onProgress({
          rowsDone,
          rowsTotal,
          shardsDone,
          shardsFailed,
          shards: total,
          rowsPerSecond: Math.round(rate),
          etaSeconds: rate > 0 ? Math.max(0, Math.round((rowsTotal - rowsDone) / rate)) : undefined,
        });
      }
      await sleep(options.pollMs ?? 500, undefined, { signal: options.signal });
    }
  } finally {
    await Promise.allSettled([parents.close(), shards.close()]);
  }
}

/** A parent's failedReason is `CODE: message` when a typed error failed it. */
function failureOf(backupId: string, reason: string): Error {
  const code = /^([A-Z_]+): /.exec(reason)?.[1];
  if (code !== undefined && Object.hasOwn(BACKUP_ERROR_CODES, code)) return new BackupError(code as BackupErrorCode, reason.slice(code.length + 2), { context: { backupId } });
  return new JobsError('JOBS_FAILED', `backup ${backupId} failed: ${reason}`);
}
