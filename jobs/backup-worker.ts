import type { Job } from 'bullmq';
import type { RedisOptions } from 'ioredis';
import { Redis } from './commonjs-libraries.js';
import { activeTraceparent, parseTraceparent, startRootSpan, traceparentOf, type Logger } from '../common/index.js';
import {
  BackupError,
  LeaseKeeper,
  MANIFEST_FORMAT_VERSION,
  ShardEncoders,
  applyRetention,
  openBackupTarget,
  writeManifest,
  writeShard,
  type BackupManifest,
  type BackupTarget,
  type OpenBackupTargetOptions,
  type ShardResult,
} from '../backup/index.js';
import { BACKUP_QUEUE, BACKUP_SHARD_QUEUE, shardIndexOf, submitBackup, type BackupParentData, type BackupReport, type BackupShardData, type BackupSpec } from './backup-flow.js';
import { BackupSuccessLog } from './backup-success-log.js';
import type { TracedJobData } from './fan-out-flow.js';
import { FanOutWorkers, type FanOutWorkerOptions } from './fan-out-workers.js';
import { decodeJobFailure, formatJobFailure } from './job-failure.js';

/** Workers' options; `concurrency` counts shards written at once (default 2), `client` reads the store. */
export interface BackupWorkerOptions extends FanOutWorkerOptions {
  /** Credentials and tuning for `az://` targets (this process's own; jobs never carry them). */
  targetOptions?: OpenBackupTargetOptions;
  /** Token for a spec's `metricsUrl` (this process's own; jobs never carry it). Default: none. */
  metricsToken?: string;
  /**
   * Start the encoder threads at once rather than at the first shard (ShardEncoders.prestart): for
   * a process about to back up (the CLI's local worker). Default false.
   */
  prestartEncoders?: boolean;
}

/** Data of a job scheduler's job: start a backup with this spec. */
export interface ScheduledBackupData {
  schedule: string;
  spec: BackupSpec;
}

/**
 * The backup workers of one process: shard jobs (write one shard file each), and on the parent
 * queue both the backup parents (manifest, snapshot release, retention) and the scheduled jobs
 * that start a backup.
 */
export class BackupWorkers extends FanOutWorkers<BackupShardData, ShardResult, BackupParentData | ScheduledBackupData, BackupReport | { backupId: string; traceId: string }> {
  /** Settles once the last successes recorded in Redis are in the metrics. */
  private restored: Promise<void> = Promise.resolve();

  static start(options: BackupWorkerOptions): BackupWorkers {
    const logger = options.logger.child({ module: 'backup-worker' });
    // Its own client, failing fast: the workers' connection retries forever, and a backup that is complete must not hang on this record.
    const redis = new Redis({ ...(options.connection as RedisOptions), maxRetriesPerRequest: 2 });
    redis.on('error', (err: Error) => logger.debug({ err }, 'Redis client of the backup success record: connection error'));
    const successes = new BackupSuccessLog(redis);
    // One encoder thread per shard job at once, so the shards written together encode on as many cores.
    const encoders = ShardEncoders.available() ? new ShardEncoders({ threads: Math.min(64, Math.max(1, options.concurrency ?? 2)) }) : undefined;
    if (options.prestartEncoders) encoders?.prestart();
    const workers = new BackupWorkers(options, {
      kind: 'backup',
      children: { queue: BACKUP_SHARD_QUEUE, process: (job, signal, log) => processShard(job, options, log, signal, encoders) },
      parents: {
        queue: BACKUP_QUEUE,
        concurrency: 2,
        process: (job, signal, log) =>
          job.name === 'scheduled-backup' ? startScheduled(job as Job<ScheduledBackupData>, options, log, signal) : finishBackup(job as Job<BackupParentData>, options, successes, log, signal),
      },
      resources: encoders ? [successes, encoders] : [successes],
    });
    const metrics = options.metrics;
    if (metrics !== undefined) {
      workers.restored = successes.read().then(
        (last) => metrics.restoreBackupSuccess(last),
        (err: unknown) => logger.warn({ err }, 'last backup successes not read from Redis: shardpipe_backup_last_success_timestamp_seconds waits for the next backup'),
      );
    }
    return workers;
  }

  /** Resolves once the workers take jobs and the metrics hold the last successes recorded in Redis. */
  override async waitUntilReady(): Promise<void> {
    await Promise.all([super.waitUntilReady(), this.restored]);
  }
}

async function processShard(job: Job<BackupShardData, ShardResult>, options: BackupWorkerOptions, logger: Logger, signal: AbortSignal | undefined, encoders: ShardEncoders | undefined): Promise<ShardResult> {
  const data = job.data;
  const log = logger.child({ backupId: data.backupId, shard: data.index });
  const target = openBackupTarget(data.target, options.targetOptions);
  let keeper: LeaseKeeper | undefined;
  try {
    if (job.attemptsMade > 0) log.info({ attemptsMade: job.attemptsMade }, 'rewriting shard from its snapshot');
    keeper = await LeaseKeeper.start(options.client, data.leases, { leaseMs: data.leaseMs, what: `backup ${data.backupId}`, logger: log });
    const stop = signal ? AbortSignal.any([signal, keeper.signal]) : keeper.signal;
    let reported = 0;
    const result = await writeShardOrLost(options, target, data, stop, keeper, encoders, async (rows) => {
      options.metrics?.addRows('backup', rows - reported);
      reported = rows;
      await job.updateProgress({ rowsDone: rows, rowsTotal: data.approxRows });
    });
    log.info({ rows: result.rows, bytes: result.bytes, durationMs: result.durationMs }, 'shard written');
    return result;
  } finally {
    keeper?.stop();
    await target.close();
  }
}

async function writeShardOrLost(
  options: BackupWorkerOptions,
  target: BackupTarget,
  data: BackupShardData,
  signal: AbortSignal,
  keeper: LeaseKeeper,
  encoders: ShardEncoders | undefined,
  onProgress: (rows: number) => Promise<void>,
): Promise<ShardResult> {
  try {
    return await writeShard(
      options.client,
      target,
      { backupId: data.backupId, index: data.index, start: Buffer.from(data.start, 'hex'), end: Buffer.from(data.end, 'hex'), leases: data.leases },
      { rowGroupRows: data.rowGroupRows, signal, onProgress, encoders },
    );
  } catch (err) {
    // Aborted because the heartbeat lost the snapshots: that is the failure to report.
    if (keeper.signal.aborted) throw keeper.signal.reason;
    throw err;
  }
}

/**
 * Runs when every shard job has finished (completed or failed for good). With every shard written
 * it checks each file is there with the size its job wrote, then writes the manifest — the last
 * write, which makes the backup complete. The snapshots are released in any case.
 */
async function finishBackup(job: Job<BackupParentData>, options: BackupWorkerOptions, successes: BackupSuccessLog, logger: Logger, signal?: AbortSignal): Promise<BackupReport> {
  const data = job.data;
  const log = logger.child({ backupId: data.backupId });
  const target = openBackupTarget(data.spec.target, options.targetOptions);
  try {
    const failures = await job.getIgnoredChildrenFailures();
    if (Object.keys(failures).length > 0) {
      const named = Object.entries(failures)
        .map(([key, reason]) => ({ shard: shardIndexOf(key), reason: formatJobFailure(decodeJobFailure(reason)) }))
        .sort((a, b) => a.shard - b.shard);
      throw new BackupError(
        'BACKUP_SHARD_FAILED',
        `backup ${data.backupId}: ${named.length} of ${data.shards} shard(s) failed, so no manifest was written: ${named.map((f) => `shard ${f.shard}: ${f.reason}`).join('; ')}`,
        { context: { backupId: data.backupId, target: data.spec.target } },
      );
    }
    const results = Object.values(await job.getChildrenValues<ShardResult>()).sort((a, b) => a.index - b.index);
    if (results.length !== data.shards || results.some((r, i) => r.index !== i)) {
      throw new BackupError('BACKUP_SHARD_FAILED', `backup ${data.backupId}: ${results.length} of ${data.shards} shard results are present; no manifest was written`, {
        context: { backupId: data.backupId },
      });
    }
    for (const r of results) {
      const info = await target.stat(data.backupId, r.file, { signal });
      if (info?.bytes !== r.bytes) {
        throw new BackupError('BACKUP_SHARD_FAILED', `backup ${data.backupId}: ${r.file} ${info ? `has ${info.bytes} bytes, its shard job wrote ${r.bytes}` : 'is missing'}; no manifest was written`, {
          context: { backupId: data.backupId, file: r.file, shard: r.index },
        });
      }
    }
    const finishedAt = new Date();
    const rows = results.reduce((s, r) => s + r.rows, 0);
    const bytes = results.reduce((s, r) => s + r.bytes, 0);
    // A shard written by an older worker (during an upgrade) has no content hash: then the whole
    // manifest is format 1, which restore checks row by row.
    const hashed = results.every((r) => r.contentHash !== undefined);
    const manifest: BackupManifest = {
      formatVersion: hashed ? MANIFEST_FORMAT_VERSION : 1,
      backupId: data.backupId,
      startedAt: new Date(data.startedAtMs).toISOString(),
      finishedAt: finishedAt.toISOString(),
      mapVersion: data.mapVersion,
      snapshotAt: new Date(data.snapshotAtMs).toISOString(),
      partitions: data.partitions,
      shards: results.map(({ index, start, end, file, rows, bytes, checksum, contentHash }) => ({ index, start, end, file, rows, bytes, checksum, ...(hashed ? { contentHash } : {}) })),
      totals: { rows, bytes },
    };
    await writeManifest(target, manifest, { signal });
    const completedAtMs = Date.now();
    options.metrics?.backupCompleted(target.url, completedAtMs);
    // The backup is complete whatever becomes of the record: a failure only delays the metric after a restart.
    await successes.record(target.url, completedAtMs).catch((err: unknown) => log.warn({ err }, 'last backup success not recorded in Redis'));
    const durationMs = finishedAt.getTime() - data.startedAtMs;
    const report: BackupReport = {
      backupId: data.backupId,
      ...traceIdOf((data as BackupParentData & TracedJobData).traceparent),
      target: target.url,
      mapVersion: data.mapVersion,
      snapshotAt: manifest.snapshotAt,
      shards: results.length,
      rows,
      bytes,
      durationMs,
      rowsPerSecond: durationMs > 0 ? Math.round((rows * 1000) / durationMs) : 0,
      bytesPerSecond: durationMs > 0 ? Math.round((bytes * 1000) / durationMs) : 0,
    };
    log.info({ rows, bytes, shards: results.length, durationMs }, 'backup complete: manifest written');
    if (data.spec.keep !== undefined) {
      try {
        report.retention = await applyRetention(target, { keep: data.spec.keep, incompleteGraceMs: data.spec.incompleteGraceMs, signal });
        log.info({ deleted: report.retention.deleted }, 'retention applied');
      } catch (err) {
        // The backup itself is complete; a failed clean-up is reported and tried again next time.
        log.warn({ err }, 'retention failed');
        report.retention = { error: err instanceof Error ? err.message : String(err) };
      }
    }
    return report;
  } finally {
    await options.client.releaseSnapshots(data.leases);
    await target.close();
  }
}

/**
 * A job scheduler's job: starts a backup (its parent then applies retention). Each run is one
 * operation with a trace of its own: exporting, this job attempt's span is the trace's root (its
 * data carries no parent); otherwise a root span with a fresh trace id names it, as the CLI's does.
 * Its shard and parent jobs carry that context, and its log lines and result the trace id.
 */
async function startScheduled(job: Job<ScheduledBackupData>, options: BackupWorkerOptions, logger: Logger, signal?: AbortSignal): Promise<{ backupId: string; traceId: string }> {
  const active = activeTraceparent();
  const root = active === undefined ? startRootSpan('scheduled backup', { 'shardpipe.schedule': job.data.schedule }) : undefined;
  const traceparent = active ?? traceparentOf(root!);
  const traceId = parseTraceparent(traceparent)!.traceId;
  const log = logger.child({ traceId, schedule: job.data.schedule });
  try {
    const submitted = await submitBackup(options.connection, options.client, job.data.spec, { targetOptions: options.targetOptions, metricsToken: options.metricsToken, logger: log, signal, traceparent });
    log.info({ backupId: submitted.backupId }, 'scheduled backup started');
    return { backupId: submitted.backupId, traceId };
  } finally {
    root?.end();
  }
}

/** `{ traceId }` of the operation whose context a job's data carries; `{}` without one. */
function traceIdOf(traceparent: string | undefined): { traceId?: string } {
  const sc = parseTraceparent(traceparent);
  return sc === undefined ? {} : { traceId: sc.traceId };
}
