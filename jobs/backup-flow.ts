import type { ConnectionOptions } from 'bullmq';
import type { Logger } from '../common/index.js';
import { BACKUP_ERROR_CODES, BackupError, newBackupId, openBackupTarget, planBackupShards, type ManifestPartition, type BackupErrorCode, type OpenBackupTargetOptions, type RetentionReport } from '../backup/index.js';
import type { ShardRange, ShardTarget, SnapshotLease, StoreClient } from '../store/index.js';
import { addFanOut } from './fan-out-flow.js';
import { watchFlow, type WatchFlowOptions } from './flow-watch.js';
import { ShardProgressTracker, type ShardProgress } from './shard-progress.js';

/** Queue of parent backup jobs (one per backup; also the scheduled jobs that start one). */
export const BACKUP_QUEUE = 'shardpipe-backup';
/** Queue of shard jobs (one per shard of a backup). */
export const BACKUP_SHARD_QUEUE = 'shardpipe-backup-shard';

/** What a backup is asked to do. Carried by the parent job and by schedules. References only. */
export interface BackupSpec {
  /** `file:///DIR` or `az://CONTAINER/PREFIX`; credentials come from each worker's own configuration. */
  target: string;
  /** Shard size. */
  shardTarget: ShardTarget;
  /** Plan from this metrics server's `/api/shards`; absent: plan in-process with the store client. */
  metricsUrl?: string;
  /** Snapshot lease, renewed by every working shard job, in ms. */
  leaseMs: number;
  /** Rows per Parquet row group (1–65,536). Absent: 65,536. */
  rowGroupRows?: number;
  /** After a complete backup, keep this many complete backups in the target (retention). Absent: no retention. */
  keep?: number;
  /** Retention deletes an incomplete backup only after this long without writes, in ms. Absent: 6 h. */
  incompleteGraceMs?: number;
}

export interface BackupParentData {
  backupId: string;
  spec: BackupSpec;
  startedAtMs: number;
  mapVersion: number;
  /** When the first node was asked for its snapshots (Unix ms); every snapshot is from after it. */
  snapshotAtMs: number;
  /** Released by the parent when it finishes; renewed by the shard jobs until then. */
  leases: SnapshotLease[];
  partitions: ManifestPartition[];
  shards: number;
  approxRows: number;
}

export interface BackupShardData {
  backupId: string;
  target: string;
  index: number;
  /** Hex, '' = start of the keyspace. */
  start: string;
  /** Hex, '' = end of the keyspace. */
  end: string;
  approxRows: number;
  /** All the backup's leases: a working shard keeps every one alive (the backup's heartbeat). */
  leases: SnapshotLease[];
  leaseMs: number;
  rowGroupRows?: number;
}

/** The parent's result. */
export interface BackupReport {
  backupId: string;
  /** The trace of the operation that started the backup (the CLI command or the scheduled run), when its jobs carry one. */
  traceId?: string;
  target: string;
  mapVersion: number;
  snapshotAt: string;
  shards: number;
  rows: number;
  bytes: number;
  durationMs: number;
  rowsPerSecond: number;
  bytesPerSecond: number;
  /** Retention run after the backup (scheduled backups, `--keep`), or why it failed. */
  retention?: RetentionReport | { error: string };
}

/** A submitted backup. */
export interface SubmittedBackup {
  backupId: string;
  target: string;
  mapVersion: number;
  snapshotAtMs: number;
  shards: ShardRange[];
  approxRows: number;
}

export interface SubmitBackupOptions {
  /** Attempts per shard job (a retry rewrites the shard from its snapshot). Default 5. */
  attempts?: number;
  /** Checks the target before snapshots are taken (credentials for `az://`). */
  targetOptions?: OpenBackupTargetOptions;
  /** Sent as `authorization: Bearer` to the spec's `metricsUrl`. Default: none. */
  metricsToken?: string;
  /** Start time (tests). Default now. */
  now?: Date;
  logger?: Logger;
  signal?: AbortSignal;
  /** W3C `traceparent` of the operation's span: every job's span is its child (see TracedJobData). */
  traceparent?: string;
}

/** Tries to take one consistent set of snapshots (the map may move meanwhile). */
const SNAPSHOT_TRIES = 3;

/**
 * Starts a backup: checks the target, plans the shards (metrics server or in-process), pins a
 * snapshot of every partition at once (`openSnapshots`), and creates the flow — a parent job
 * (id = backup id) and one child per shard carrying its range and the lease ids, never rows. From
 * here the backup depends only on workers: shard jobs renew the leases while they work; the parent
 * writes the manifest when every shard succeeded and releases the snapshots in any case.
 */
export async function submitBackup(connection: ConnectionOptions, client: StoreClient, spec: BackupSpec, options: SubmitBackupOptions = {}): Promise<SubmittedBackup> {
  const { signal } = options;
  const target = openBackupTarget(spec.target, options.targetOptions);
  try {
    // Fails fast on a bad URL or credentials, before any snapshot is pinned.
    await target.listBackupIds({ signal });
  } finally {
    await target.close();
  }
  const startedAtMs = (options.now ?? new Date()).getTime();
  const backupId = newBackupId(new Date(startedAtMs));
  const shards = await planBackupShards(client, spec.shardTarget, { metricsUrl: spec.metricsUrl, token: options.metricsToken, signal });

  let snapshot;
  let map;
  for (let attempt = 1; ; attempt++) {
    snapshot = await client.openSnapshots({ leaseMs: spec.leaseMs, signal });
    map = await client.map({ signal });
    if (map.version === snapshot.mapVersion) break;
    await client.releaseSnapshots(snapshot.leases);
    if (attempt >= SNAPSHOT_TRIES) throw new BackupError('BACKUP_PLAN_FAILED', `the partition map kept changing while snapshots were taken (${SNAPSHOT_TRIES} tries); try again`);
  }
  const leases = snapshot.leases;
  const partitions: ManifestPartition[] = map.partitions.map((p) => ({
    id: p.id,
    start: p.start.toString('hex'),
    end: p.end.toString('hex'),
    node: p.node,
    rows: leases.find((l) => l.partitionId === p.id)?.rows ?? 0,
  }));
  const approxRows = partitions.reduce((s, p) => s + p.rows, 0);
  const parent: BackupParentData = {
    backupId,
    spec,
    startedAtMs,
    mapVersion: snapshot.mapVersion,
    snapshotAtMs: snapshot.takenAtMs,
    leases,
    partitions,
    shards: shards.length,
    approxRows,
  };
  const keepFor = { age: 30 * 24 * 3600 };
  try {
    await addFanOut(connection, {
      parent: { name: 'backup', queue: BACKUP_QUEUE, id: backupId, data: parent, opts: { attempts: 5, backoff: { type: 'exponential', delay: 2000 }, removeOnComplete: keepFor, removeOnFail: keepFor } },
      children: {
        name: 'backup-shard',
        queue: BACKUP_SHARD_QUEUE,
        // A retry rewrites the shard from its snapshot.
        attempts: options.attempts,
        keep: keepFor,
        jobs: shards.map((s) => ({
          id: shardJobId(backupId, s.index),
          data: {
            backupId,
            target: spec.target,
            index: s.index,
            start: s.start.toString('hex'),
            end: s.end.toString('hex'),
            approxRows: s.approxRows,
            leases,
            leaseMs: spec.leaseMs,
            rowGroupRows: spec.rowGroupRows,
          } satisfies BackupShardData,
        })),
      },
      traceparent: options.traceparent,
    });
  } catch (err) {
    await client.releaseSnapshots(leases);
    throw err;
  }
  options.logger?.info({ backupId, shards: shards.length, partitions: partitions.length, approxRows, mapVersion: snapshot.mapVersion }, 'backup submitted');
  return { backupId, target: spec.target, mapVersion: snapshot.mapVersion, snapshotAtMs: snapshot.takenAtMs, shards, approxRows };
}

export function shardJobId(backupId: string, index: number): string {
  return `${backupId}-s${index}`;
}

/** The shard index in a shard job's id or BullMQ key (`…-s<index>`, see shardJobId); -1 for another. */
export function shardIndexOf(jobKey: string): number {
  const at = jobKey.lastIndexOf('-s');
  const index = at < 0 ? NaN : Number(jobKey.slice(at + 2));
  return Number.isSafeInteger(index) ? index : -1;
}

/** A progress snapshot of a backup. */
export type BackupProgress = ShardProgress;

export interface WatchBackupOptions extends WatchFlowOptions {
  onProgress?: (progress: BackupProgress) => void;
}

/**
 * Follows a backup until its parent job completes and resolves its report (see watchFlow). A
 * failed backup rejects with its BackupError (BACKUP_SHARD_FAILED naming the shards,
 * BACKUP_SNAPSHOT_LOST, …) when its failure has a backup code, else JobsError JOBS_FAILED.
 */
export async function watchBackup(connection: ConnectionOptions, backupId: string, options: WatchBackupOptions = {}): Promise<BackupReport> {
  const { onProgress } = options;
  let tracker: ShardProgressTracker | undefined;
  return await watchFlow<BackupParentData, BackupReport, BackupShardData>(
    connection,
    {
      kind: 'backup',
      parentQueue: BACKUP_QUEUE,
      childQueue: BACKUP_SHARD_QUEUE,
      parentId: backupId,
      childIds: (parent) => Array.from({ length: parent.data.shards }, (_, i) => shardJobId(backupId, i)),
      onChildren:
        onProgress &&
        ((jobs, parent) => {
          tracker ??= new ShardProgressTracker(parent.data.approxRows);
          onProgress(tracker.update(jobs));
        }),
      errorOf: (failure) =>
        Object.hasOwn(BACKUP_ERROR_CODES, failure.code) ? new BackupError(failure.code as BackupErrorCode, failure.message, { context: { ...failure.context, backupId } }) : undefined,
    },
    options,
  );
}
