import { createHash } from 'node:crypto';
import type { ConnectionOptions } from 'bullmq';
import type { BackupManifest } from '../backup/index.js';
import { intersectRanges, normalizeRanges, type KeyRange, type ShardCheckpoint, type ShardSpec } from '../restore/index.js';
import type { PartitionMap } from '../store/index.js';
import { addFanOut } from './fan-out-flow.js';
import { watchFlow, type WatchFlowOptions } from './flow-watch.js';
import { ShardProgressTracker, type ShardProgress } from './shard-progress.js';

/** Queue of parent restore jobs (one per restore). */
export const RESTORE_QUEUE = 'shardpipe-restore';
/** Queue of shard restore jobs (one per shard of the backup). */
export const RESTORE_SHARD_QUEUE = 'shardpipe-restore-shard';

/** What a restore is asked to do: references only. Carried by the parent and every child. */
export interface RestoreSpec {
  backupId: string;
  /** The backup target's canonical URL (`file:///DIR` or `az://CONTAINER/PREFIX`); workers open it with their own credentials. */
  target: string;
  /** Per shard; 0 = unlimited. */
  maxRowsPerSecond: number;
  /**
   * A partial restore: only keys in these ranges (hex, normalized) are written, only shards meeting
   * them are read. Absent = the whole backup.
   */
  ranges?: KeyRange[];
}

export interface RestoreParentData {
  restoreId: string;
  spec: RestoreSpec;
  /** Shards restored (children), and their manifest indexes. */
  shards: number;
  shardIndexes: number[];
  /** Rows of the shard files read. */
  rowsTotal: number;
  submittedAt: number;
}

export interface RestoreShardData {
  restoreId: string;
  spec: RestoreSpec;
  /** The shard's entry of the manifest. */
  shard: ShardSpec;
  /** Written by the worker after every acknowledged stretch; a retry continues from it. */
  checkpoint?: ShardCheckpoint;
}

/** What a shard child returns. */
export interface RestoreShardResult extends ShardCheckpoint {
  index: number;
  file: string;
  durationMs: number;
}

/** The parent's result: the restore report (before verification, which the submitter runs). */
export interface RestoreReport {
  restoreId: string;
  backupId: string;
  target: string;
  rowsRestored: number;
  /** Rows skipped because they had expired by the time they were restored. */
  rowsExpired: number;
  /** Rows of the shard files read skipped because their key is outside the selection (partial restores). */
  rowsOutsideRange: number;
  /** The selection of a partial restore; absent for a full restore. */
  ranges?: KeyRange[];
  bytesRestored: number;
  shards: number;
  shardsOk: number;
  shardsFailed: number;
  /** Failed shards: the failure's code, and `CODE: message` for people. */
  failures: Array<{ shard: number; file: string; code: string; reason: string }>;
  /** Per restored shard: what verification needs (see verifyRestore). */
  shardResults: Array<{ index: number; rowsRestored: number; rowsExpired: number; firstExpiresAtMs: number }>;
  durationMs: number;
  rowsPerSecond: number;
}

export interface SubmitRestoreOptions {
  /** Start over even when a restore of the same backup into the same cluster exists. Default false. */
  restart?: boolean;
  /** Retries of a shard after a retryable failure. Default 5. */
  attempts?: number;
  /** W3C `traceparent` of the operation's span: every job's span is its child (see TracedJobData). */
  traceparent?: string;
}

export interface SubmittedRestore {
  restoreId: string;
  /** 'new': flow created; 'resumed': an unfinished restore of this backup goes on; 'finished': it already completed. */
  state: 'new' | 'resumed' | 'finished';
}

/**
 * Creates the BullMQ flow of a restore: a parent job and one child per shard of the manifest (per
 * shard meeting `spec.ranges` for a partial restore). The restore id comes from the backup, the
 * target, the nodes of the cluster restored into and the selection, so submitting the same restore
 * again finds the running (or finished) one, and a partial and a full restore are different flows.
 */
export async function submitRestore(
  connection: ConnectionOptions,
  spec: RestoreSpec,
  manifest: BackupManifest,
  cluster: PartitionMap,
  options: SubmitRestoreOptions = {},
): Promise<SubmittedRestore> {
  const ranges = spec.ranges === undefined ? undefined : normalizeRanges(spec.ranges);
  const shards = ranges === undefined ? manifest.shards : manifest.shards.filter((s) => intersectRanges({ start: s.start, end: s.end }, ranges).length > 0);
  // A full restore hashes what it always did, so restores submitted before selections existed still resume.
  const identity = createHash('sha256')
    .update(JSON.stringify([spec.target, spec.backupId, [...cluster.nodes()].sort(), ...(ranges === undefined ? [] : [ranges])]))
    .digest('hex')
    .slice(0, 12);
  const restoreId = options.restart ? `restore-${spec.backupId}-${identity}-${Date.now().toString(36)}` : `restore-${spec.backupId}-${identity}`;
  const scoped = { ...spec, ranges };
  const state = await addFanOut(
    connection,
    {
      parent: {
        name: 'restore-backup',
        queue: RESTORE_QUEUE,
        id: restoreId,
        data: {
          restoreId,
          spec: scoped,
          shards: shards.length,
          shardIndexes: shards.map((s) => s.index),
          rowsTotal: shards.reduce((n, s) => n + s.rows, 0),
          submittedAt: Date.now(),
        } satisfies RestoreParentData,
      },
      children: {
        name: 'restore-shard',
        queue: RESTORE_SHARD_QUEUE,
        attempts: options.attempts,
        jobs: shards.map((shard) => ({ id: restoreShardJobId(restoreId, shard.index), data: { restoreId, spec: scoped, shard: { ...shard } } satisfies RestoreShardData })),
      },
      traceparent: options.traceparent,
    },
    { resume: true },
  );
  return { restoreId, state };
}

/** A progress snapshot of a restore. */
export type RestoreProgress = ShardProgress;

export interface WatchRestoreOptions extends WatchFlowOptions {
  onProgress?: (progress: RestoreProgress) => void;
}

/**
 * Follows a restore until its parent job completes and resolves its report (see watchFlow).
 * `shardIndexes` are the manifest indexes of its shard jobs (default 0 … shards-1: a full restore).
 */
export async function watchRestore(
  connection: ConnectionOptions,
  restore: { restoreId: string; shards: number; rowsTotal: number; shardIndexes?: readonly number[] },
  options: WatchRestoreOptions = {},
): Promise<RestoreReport> {
  const { onProgress } = options;
  const tracker = new ShardProgressTracker(restore.rowsTotal);
  const ids = (restore.shardIndexes ?? Array.from({ length: restore.shards }, (_, i) => i)).map((i) => restoreShardJobId(restore.restoreId, i));
  return await watchFlow<RestoreParentData, RestoreReport, RestoreShardData>(
    connection,
    {
      kind: 'restore',
      parentQueue: RESTORE_QUEUE,
      childQueue: RESTORE_SHARD_QUEUE,
      parentId: restore.restoreId,
      childIds: () => ids,
      onChildren: onProgress && ((jobs) => onProgress(tracker.update(jobs))),
    },
    options,
  );
}

export function restoreShardJobId(restoreId: string, index: number): string {
  return `${restoreId}-s${index}`;
}
