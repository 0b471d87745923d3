import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Job, Queue } from './commonjs-libraries.js';
import { openBackupTarget, type AzureTargetOptions, type BackupTarget } from '../backup/index.js';
import type { Logger } from '../common/index.js';
import { checkShardFooter, intersectRanges, openLocalShard, restoreShard, type ShardCheckpoint } from '../restore/index.js';
import { RESTORE_QUEUE, RESTORE_SHARD_QUEUE, type RestoreParentData, type RestoreReport, type RestoreShardData, type RestoreShardResult } from './restore-flow.js';
import { FanOutWorkers, type FanOutWorkerOptions } from './fan-out-workers.js';
import { decodeJobFailure, formatJobFailure } from './job-failure.js';

/** Workers' options; `concurrency` counts shards (default 2), `client` routes rows to the store nodes. No metrics yet. */
export interface RestoreWorkerOptions extends Omit<FanOutWorkerOptions, 'metrics'> {
  /** Credentials and tuning for `az://` backup targets (from this process's environment, never from the jobs). */
  azure?: AzureTargetOptions;
  /** Where shard blobs of `az://` targets are staged while they are read. Default `<os tmpdir>/shardpipe-restore`. */
  stagingDir?: string;
  /** BulkInsert calls in flight per shard. Default 4. */
  maxInFlight?: number;
}

/** The restore workers of one process: shard children and the parents that report on them. */
export class RestoreWorkers extends FanOutWorkers<RestoreShardData, RestoreShardResult, RestoreParentData, RestoreReport> {
  static start(options: RestoreWorkerOptions): RestoreWorkers {
    const logger = options.logger.child({ module: 'restore-worker' });
    // One target client per URL for the worker's life (Azure clients keep connections alive).
    const targets = new Map<string, BackupTarget>();
    const targetOf = (url: string): BackupTarget => {
      let target = targets.get(url);
      if (!target) {
        target = openBackupTarget(url, { azure: options.azure });
        targets.set(url, target);
      }
      return target;
    };
    const shardQueue = new Queue<RestoreShardData>(RESTORE_SHARD_QUEUE, { connection: options.connection });
    return new RestoreWorkers(options, {
      kind: 'restore',
      children: { queue: RESTORE_SHARD_QUEUE, process: (job, signal, log) => processShard(job, options, targetOf, log, signal) },
      parents: { queue: RESTORE_QUEUE, concurrency: 4, process: (job) => reportOnShards(job, shardQueue) },
      resources: [shardQueue, { close: () => Promise.all([...targets.values()].map((t) => t.close())).then(() => undefined) }],
    });
  }
}

async function processShard(
  job: Job<RestoreShardData, RestoreShardResult>,
  options: RestoreWorkerOptions,
  targetOf: (url: string) => BackupTarget,
  logger: Logger,
  signal?: AbortSignal,
): Promise<RestoreShardResult> {
  const data = job.data;
  const { shard, spec } = data;
  const log = logger.child({ backupId: spec.backupId, shard: shard.index });
  const started = Date.now();
  const target = targetOf(spec.target);
  const local = await openLocalShard(target, spec.backupId, shard, { stagingDir: options.stagingDir ?? join(tmpdir(), 'shardpipe-restore'), signal });
  try {
    await checkShardFooter(local.file.path, spec.backupId, shard);
    if (data.checkpoint) {
      if (data.checkpoint.fingerprint === local.fingerprint) log.info({ rowGroup: data.checkpoint.rowGroup, rowOffset: data.checkpoint.rowOffset, rowsDone: data.checkpoint.rowsDone }, 'resuming shard from checkpoint');
      else log.warn({ file: shard.file }, 'the shard file changed since the checkpoint: restoring the shard from its start');
    }
    const final = await restoreShard(
      options.client,
      { file: local.file, shard, fingerprint: local.fingerprint, ranges: spec.ranges && intersectRanges({ start: shard.start, end: shard.end }, spec.ranges) },
      {
        resumeFrom: data.checkpoint,
        maxInFlight: options.maxInFlight,
        maxRowsPerSecond: spec.maxRowsPerSecond,
        signal,
        onCheckpoint: async (checkpoint: ShardCheckpoint) => {
          await job.updateData({ ...data, checkpoint });
          await job.updateProgress({ rowsDone: checkpoint.rowsDone, rowsTotal: shard.rows });
        },
      },
    );
    await job.updateProgress({ rowsDone: final.rowsDone, rowsTotal: shard.rows });
    return { ...final, index: shard.index, file: shard.file, durationMs: Date.now() - started };
  } finally {
    await local.release();
  }
}

async function reportOnShards(job: Job<RestoreParentData, RestoreReport>, shardQueue: Queue<RestoreShardData>): Promise<RestoreReport> {
  const values = (await job.getChildrenValues<RestoreShardResult>()) as Record<string, RestoreShardResult>;
  const ignored = await job.getIgnoredChildrenFailures();
  const failures: RestoreReport['failures'] = [];
  for (const [key, failedReason] of Object.entries(ignored)) {
    const failure = decodeJobFailure(failedReason);
    const child = await Job.fromId<RestoreShardData>(shardQueue, key.slice(key.lastIndexOf(':') + 1));
    failures.push({ shard: child?.data.shard.index ?? -1, file: child?.data.shard.file ?? key, code: failure.code, reason: formatJobFailure(failure) });
  }
  failures.sort((a, b) => a.shard - b.shard);
  const results = Object.values(values).sort((a, b) => a.index - b.index);
  const rowsRestored = results.reduce((s, r) => s + r.rowsRestored, 0);
  const durationMs = Date.now() - job.data.submittedAt;
  return {
    restoreId: job.data.restoreId,
    backupId: job.data.spec.backupId,
    target: job.data.spec.target,
    rowsRestored,
    rowsExpired: results.reduce((s, r) => s + r.rowsExpired, 0),
    // Results of shards restored before partial restores existed have no rowsOutsideRange.
    rowsOutsideRange: results.reduce((s, r) => s + (r.rowsOutsideRange ?? 0), 0),
    ...(job.data.spec.ranges ? { ranges: job.data.spec.ranges } : {}),
    bytesRestored: results.reduce((s, r) => s + r.bytesRestored, 0),
    shards: job.data.shards,
    shardsOk: results.length,
    shardsFailed: failures.length,
    failures,
    shardResults: results.map((r) => ({ index: r.index, rowsRestored: r.rowsRestored, rowsExpired: r.rowsExpired, firstExpiresAtMs: r.firstExpiresAtMs })),
    durationMs,
    rowsPerSecond: durationMs > 0 ? Math.round((rowsRestored * 1000) / durationMs) : 0,
  };
}
