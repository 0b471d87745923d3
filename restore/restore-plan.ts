import { partitionContains, type PartitionMap } from '../store/index.js';
import type { ShardSpec } from './shard-reader.js';

/** What a restore plan needs from a manifest. */
export interface PlanManifest {
  backupId: string;
  /** The backed-up cluster's map version. */
  mapVersion: number;
  /** Partitions of the backed-up cluster. */
  partitions: ReadonlyArray<{ id: number; start: string; end: string }>;
  shards: readonly ShardSpec[];
  totals: { rows: number; bytes: number };
}

/** One shard of the plan and the target partitions its range falls into. */
export interface PlannedShard {
  index: number;
  file: string;
  start: string;
  end: string;
  rows: number;
  bytes: number;
  /** Ids of the target cluster's partitions that overlap the shard's range, in key order. */
  targetPartitions: number[];
}

/** What a restore will do, computed before anything is written. */
export interface RestorePlan {
  backupId: string;
  shards: PlannedShard[];
  rows: number;
  bytes: number;
  /** Map version of the backed-up cluster. */
  sourceMapVersion: number;
  sourcePartitions: number;
  /** The target cluster's map, as the plan saw it. */
  targetMapVersion: number;
  targetPartitions: number;
  /** True when the target's partition boundaries equal the backed-up cluster's. */
  samePartitioning: boolean;
}

/**
 * Lays a backup's shards over the target cluster's current partitions (a pure function): which
 * partitions each shard's range writes into. Different boundaries are fine — bulk inserts are cut
 * at the target's boundaries — and the plan shows how they fall.
 */
export function planRestore(manifest: PlanManifest, target: PartitionMap): RestorePlan {
  const shards = manifest.shards.map((shard): PlannedShard => {
    const start = Buffer.from(shard.start, 'hex');
    const end = Buffer.from(shard.end, 'hex');
    const overlapping = target.partitions.filter(
      (p) => partitionContains(p, start) || (Buffer.compare(p.start, start) > 0 && (end.length === 0 || Buffer.compare(p.start, end) < 0)),
    );
    return { index: shard.index, file: shard.file, start: shard.start, end: shard.end, rows: shard.rows, bytes: shard.bytes, targetPartitions: overlapping.map((p) => p.id) };
  });
  const sourceBounds = manifest.partitions.map((p) => `${p.start}-${p.end}`).sort();
  const targetBounds = target.partitions.map((p) => `${p.start.toString('hex')}-${p.end.toString('hex')}`).sort();
  return {
    backupId: manifest.backupId,
    shards,
    rows: manifest.totals.rows,
    bytes: manifest.totals.bytes,
    sourceMapVersion: manifest.mapVersion,
    sourcePartitions: manifest.partitions.length,
    targetMapVersion: target.version,
    targetPartitions: target.partitions.length,
    samePartitioning: sourceBounds.length === targetBounds.length && sourceBounds.every((b, i) => b === targetBounds[i]),
  };
}
