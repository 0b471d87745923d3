import { partitionContains, type PartitionMap } from '../store/index.js';
import { coversKeyspace, intersectRanges, normalizeRanges, type KeyRange } from './restore-selection.js';
import type { ShardSpec } from './shard-file.js';

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

/** One shard of the plan and the target partitions its restored range falls into. */
export interface PlannedShard {
  index: number;
  file: string;
  start: string;
  end: string;
  rows: number;
  bytes: number;
  /** The parts of the shard's range that are restored (the whole range unless a selection cuts it). */
  pieces: KeyRange[];
  /** Ids of the target cluster's partitions that overlap the restored pieces, in key order. */
  targetPartitions: number[];
}

/** What a restore will do, computed before anything is written. */
export interface RestorePlan {
  backupId: string;
  /** The key ranges restored (normalized); undefined = everything (a full restore). */
  selection: KeyRange[] | undefined;
  /** The shards read: all of them for a full restore, those meeting the selection otherwise. */
  shards: PlannedShard[];
  /** Rows and bytes of the shard files read (a partial restore reads whole files, writes only the selection). */
  rows: number;
  bytes: number;
  /** Shards of the backup left out because their range misses the selection. */
  shardsSkipped: number;
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
 * at the target's boundaries — and the plan shows how they fall. With a `selection` (key ranges,
 * any order) only shards meeting it are planned, each with the pieces of its range inside it; a
 * selection covering the whole keyspace is a full restore.
 */
export function planRestore(manifest: PlanManifest, target: PartitionMap, selection?: readonly KeyRange[]): RestorePlan {
  const ranges = selection === undefined ? undefined : normalizeRanges(selection);
  const partial = ranges !== undefined && !coversKeyspace(ranges) ? ranges : undefined;
  const shards: PlannedShard[] = [];
  for (const shard of manifest.shards) {
    const whole = { start: shard.start, end: shard.end };
    const pieces = partial === undefined ? [whole] : intersectRanges(whole, partial);
    if (pieces.length === 0) continue;
    const overlapping = target.partitions.filter((p) => pieces.some((piece) => overlaps(p, piece)));
    shards.push({ index: shard.index, file: shard.file, start: shard.start, end: shard.end, rows: shard.rows, bytes: shard.bytes, pieces, targetPartitions: overlapping.map((p) => p.id) });
  }
  const sourceBounds = manifest.partitions.map((p) => `${p.start}-${p.end}`).sort();
  const targetBounds = target.partitions.map((p) => `${p.start.toString('hex')}-${p.end.toString('hex')}`).sort();
  return {
    backupId: manifest.backupId,
    selection: partial,
    shards,
    rows: partial === undefined ? manifest.totals.rows : shards.reduce((n, s) => n + s.rows, 0),
    bytes: partial === undefined ? manifest.totals.bytes : shards.reduce((n, s) => n + s.bytes, 0),
    shardsSkipped: manifest.shards.length - shards.length,
    sourceMapVersion: manifest.mapVersion,
    sourcePartitions: manifest.partitions.length,
    targetMapVersion: target.version,
    targetPartitions: target.partitions.length,
    samePartitioning: sourceBounds.length === targetBounds.length && sourceBounds.every((b, i) => b === targetBounds[i]),
  };
}

/** Whether a partition and a hex range share a key. */
function overlaps(partition: { start: Buffer; end: Buffer }, range: KeyRange): boolean {
  const start = Buffer.from(range.start, 'hex');
  const end = Buffer.from(range.end, 'hex');
  return partitionContains(partition, start) || (Buffer.compare(partition.start, start) > 0 && (end.length === 0 || Buffer.compare(partition.start, end) < 0));
}
