import { createHash } from 'node:crypto';
import { FlowProducer, Job, Queue, type ConnectionOptions } from 'bullmq';
import type { BackupManifest } from '../backup/index.js';
import type { ShardCheckpoint, ShardSpec } from '../restore/index.js';
import type { PartitionMap } from '../store/index.js';

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
}

export interface RestoreParentData {
  restoreId: string;
  spec: RestoreSpec;
  shards: number;
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
  bytesRestored: number;
  shards: number;
  shardsOk: number;
  shardsFailed: number;
  failures: Array<{ shard: number; file: string; reason: string }>;
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
}

export interface SubmittedRestore {
  restoreId: string;
  /** 'new': flow created; 'resumed': an unfinished restore of this backup goes on; 'finished': it already completed. */
  state: 'new' | 'resumed' | 'finished';
}

/**
 * Creates the BullMQ flow of a restore: a parent job and one child per shard of the manifest. The
 * restore id comes from the backup, the target and the nodes of the cluster restored into, so
 * submitting the same restore again finds the running (or finished) one.
 */
export async function submitRestore(
  connection: ConnectionOptions,
  spec: RestoreSpec,
  manifest: BackupManifest,
  cluster: PartitionMap,
  options: SubmitRestoreOptions = {},
): Promise<SubmittedRestore> {
  const identity = createHash('sha256')
    .update(JSON.stringify([spec.target, spec.backupId, [...cluster.nodes()].sort()]))
    .digest('hex')
    .slice(0, 12);
  const restoreId = options.restart ? `restore-${spec.backupId}-${identity}-${Date.now().toString(36)}` : `restore-${spec.backupId}-${identity}`;
  const parents = new Queue(RESTORE_QUEUE, { connection });
  try {
    const existing = await Job.fromId<RestoreParentData, RestoreReport>(parents, restoreId);
    if (existing) {
      const state = await existing.getState();
      if (state === 'completed') return { restoreId, state: 'finished' };
      if (state !== 'failed') return { restoreId, state: 'resumed' };
      await existing.remove({ removeChildren: true });
    }
    const flows = new FlowProducer({ connection });
    try {
      await flows.add({
        name: 'restore-backup',
        queueName: RESTORE_QUEUE,
        data: { restoreId, spec, shards: manifest.shards.length, rowsTotal: manifest.totals.rows, submittedAt: Date.now() } satisfies RestoreParentData,
        opts: { jobId: restoreId },
        children: manifest.shards.map((shard) => ({
          name: 'restore-shard',
          queueName: RESTORE_SHARD_QUEUE,
          data: { restoreId, spec, shard: { ...shard } } satisfies RestoreShardData,
          opts: {
            jobId: restoreShardJobId(restoreId, shard.index),
            attempts: options.attempts ?? 5,
            backoff: { type: 'exponential', delay: 1000 },
            // A failed shard is reported by the parent; it does not stop the other shards.
            ignoreDependencyOnFailure: true,
          },
        })),
      });
    } finally {
      await flows.close();
    }
    return { restoreId, state: 'new' };
  } finally {
    await parents.close();
  }
}

export function restoreShardJobId(restoreId: string, index: number): string {
  return `${restoreId}-s${index}`;
}
