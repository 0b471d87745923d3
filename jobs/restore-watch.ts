import { setTimeout as sleep } from 'node:timers/promises';
import { Job, Queue, type ConnectionOptions } from 'bullmq';
import { JobsError } from './jobs-errors.js';
import { RESTORE_QUEUE, RESTORE_SHARD_QUEUE, restoreShardJobId, type RestoreParentData, type RestoreReport, type RestoreShardData } from './restore-flow.js';

/** A progress snapshot of a restore. Rows never go backwards, also across resumes. */
export interface RestoreProgress {
  rowsDone: number;
  rowsTotal: number;
  shardsDone: number;
  shardsFailed: number;
  shards: number;
  /** Rows per second since watching began. */
  rowsPerSecond: number;
  /** Seconds left at that rate; undefined until there is a rate. */
  etaSeconds: number | undefined;
}

export interface WatchRestoreOptions {
  /** How often to look, in ms. Default 500. */
  pollMs?: number;
  onProgress?: (progress: RestoreProgress) => void;
  signal?: AbortSignal;
}

const POLL_CHUNK = 200;

/**
 * Follows a restore until its parent job completes and resolves its report. `shardIndexes` are the
 * manifest indexes of its shard jobs (default 0 … shards-1: a full restore).
 */
export async function watchRestore(
  connection: ConnectionOptions,
  restore: { restoreId: string; shards: number; rowsTotal: number; shardIndexes?: readonly number[] },
  options: WatchRestoreOptions = {},
): Promise<RestoreReport> {
  const parents = new Queue<RestoreParentData>(RESTORE_QUEUE, { connection });
  const shards = new Queue<RestoreShardData>(RESTORE_SHARD_QUEUE, { connection });
  const best = new Map<number, number>();
  const indexes = restore.shardIndexes ?? Array.from({ length: restore.shards }, (_, i) => i);
  const started = performance.now();
  let startRows: number | undefined;
  try {
    for (;;) {
      const parent = await Job.fromId<RestoreParentData, RestoreReport>(parents, restore.restoreId);
      if (!parent) throw new JobsError('JOBS_NOT_FOUND', `restore ${restore.restoreId} is not in Redis (removed, or another Redis?)`);
      const state = await parent.getState();
      if (state === 'completed') return await completedReport(parents, restore.restoreId);
      if (state === 'failed') throw new JobsError('JOBS_FAILED', `restore ${restore.restoreId} failed: ${parent.failedReason}`);
      if (options.onProgress) {
        let shardsDone = 0;
        let shardsFailed = 0;
        for (let from = 0; from < indexes.length; from += POLL_CHUNK) {
          const ids = indexes.slice(from, from + POLL_CHUNK);
          const jobs = await Promise.all(ids.map((i) => Job.fromId<RestoreShardData>(shards, restoreShardJobId(restore.restoreId, i))));
          for (const [k, job] of jobs.entries()) {
            if (!job) continue;
            const progress = job.progress as { rowsDone?: number } | number;
            const rows = typeof progress === 'object' && progress !== null ? (progress.rowsDone ?? 0) : 0;
            if (job.finishedOn !== undefined && job.failedReason === undefined) shardsDone++;
            else if (job.finishedOn !== undefined) shardsFailed++;
            // A retried shard re-reads from its checkpoint: its progress may dip, the total never does.
            best.set(ids[k]!, Math.max(best.get(ids[k]!) ?? 0, rows));
          }
        }
        const rowsDone = [...best.values()].reduce((s, n) => s + n, 0);
        startRows ??= rowsDone;
        const seconds = (performance.now() - started) / 1000;
        const rate = seconds > 0 ? (rowsDone - startRows) / seconds : 0;
        options.onProgress({
          rowsDone,
          rowsTotal: restore.rowsTotal,
          shardsDone,
          shardsFailed,
          shards: restore.shards,
          rowsPerSecond: Math.round(rate),
          etaSeconds: rate > 0 ? Math.max(0, Math.round((restore.rowsTotal - rowsDone) / rate)) : undefined,
        });
      }
      await sleep(options.pollMs ?? 500, undefined, { signal: options.signal });
    }
  } finally {
    await Promise.allSettled([parents.close(), shards.close()]);
  }
}

async function completedReport(parents: Queue<RestoreParentData>, restoreId: string): Promise<RestoreReport> {
  const job = await Job.fromId<RestoreParentData, RestoreReport>(parents, restoreId);
  if (!job?.returnvalue) throw new JobsError('JOBS_NOT_FOUND', `restore ${restoreId} completed but its report is gone from Redis`);
  return job.returnvalue;
}
