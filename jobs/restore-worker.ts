import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Job, Queue, UnrecoverableError, Worker, type ConnectionOptions } from 'bullmq';
import { openBackupTarget, type AzureTargetOptions, type BackupTarget } from '../backup/index.js';
import { ShardpipeError, type Logger } from '../common/index.js';
import { checkShardFooter, intersectRanges, openLocalShard, restoreShard, type ShardCheckpoint } from '../restore/index.js';
import type { StoreClient } from '../store/index.js';
import { RESTORE_QUEUE, RESTORE_SHARD_QUEUE, type RestoreParentData, type RestoreReport, type RestoreShardData, type RestoreShardResult } from './restore-flow.js';
import { workerSettings } from './worker-settings.js';

export interface RestoreWorkerOptions {
  connection: ConnectionOptions;
  /** Routes rows to the store nodes. Required; the caller owns and closes it. */
  client: StoreClient;
  /** Credentials and tuning for `az://` backup targets (from this process's environment, never from the jobs). */
  azure?: AzureTargetOptions;
  /** Where shard blobs of `az://` targets are staged while they are read. Default `<os tmpdir>/shardpipe-restore`. */
  stagingDir?: string;
  /** Shards restored at once by this worker. Default 2. */
  concurrency?: number;
  /** How long a job stays claimed by a worker that stopped answering (then another takes it over). Default 30000 ms. */
  lockDurationMs?: number;
  /** BulkInsert calls in flight per shard. Default 4. */
  maxInFlight?: number;
  logger: Logger;
}

/** The restore workers of one process: shard children and the parents that report on them. */
export class RestoreWorkers {
  private readonly workers: Worker[];
  private readonly shardQueue: Queue;
  private readonly targets: Map<string, BackupTarget>;
  private closing: Promise<void> | undefined;

  private constructor(workers: Worker[], shardQueue: Queue, targets: Map<string, BackupTarget>) {
    this.workers = workers;
    this.shardQueue = shardQueue;
    this.targets = targets;
  }

  static start(options: RestoreWorkerOptions): RestoreWorkers {
    const logger = options.logger.child({ module: 'restore-worker' });
    const common = workerSettings(options.connection, options.lockDurationMs);
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
    const shards = new Worker<RestoreShardData, RestoreShardResult>(RESTORE_SHARD_QUEUE, (job, _token, signal) => processShard(job, options, targetOf, logger, signal), {
      ...common,
      concurrency: options.concurrency ?? 2,
    });
    const parents = new Worker<RestoreParentData, RestoreReport>(RESTORE_QUEUE, (job) => reportOnShards(job, shardQueue), { ...common, concurrency: 4 });
    for (const worker of [shards, parents]) {
      worker.on('error', (err) => logger.error({ err, queue: worker.name }, 'restore worker error'));
      worker.on('failed', (job, err) => logger.warn({ jobId: job?.id, attemptsMade: job?.attemptsMade, err: err.message }, 'restore job attempt failed'));
    }
    return new RestoreWorkers([shards, parents], shardQueue, targets);
  }

  /** Resolves once both workers are connected and taking jobs. */
  async waitUntilReady(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
  }

  /** Stops taking jobs and lets running ones finish (their checkpoints make a later resume cheap). Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const results = await Promise.allSettled(this.workers.map((w) => w.close()));
      results.push(...(await Promise.allSettled([this.shardQueue.close(), ...[...this.targets.values()].map((t) => t.close())])));
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed.length > 0) throw new AggregateError(failed.map((f) => f.reason), 'closing restore workers failed');
    })();
    return this.closing;
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
  const log = logger.child({ jobId: job.id, backupId: spec.backupId, shard: shard.index });
  const started = Date.now();
  try {
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
  } catch (err) {
    // A damaged backup does not get better by retrying; an unreachable store or target may.
    if (err instanceof ShardpipeError && !err.retryable) {
      log.error({ code: err.code, err: err.message }, 'shard failed');
      throw new UnrecoverableError(`${err.code}: ${err.message}`);
    }
    throw err;
  }
}

async function reportOnShards(job: Job<RestoreParentData, RestoreReport>, shardQueue: Queue<RestoreShardData>): Promise<RestoreReport> {
  const values = (await job.getChildrenValues<RestoreShardResult>()) as Record<string, RestoreShardResult>;
  const ignored = await job.getIgnoredChildrenFailures();
  const failures: RestoreReport['failures'] = [];
  for (const [key, reason] of Object.entries(ignored)) {
    const child = await Job.fromId<RestoreShardData>(shardQueue, key.slice(key.lastIndexOf(':') + 1));
    failures.push({ shard: child?.data.shard.index ?? -1, file: child?.data.shard.file ?? key, reason });
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
