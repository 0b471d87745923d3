/** A partition with its size, as the planner sees it. `end` empty = the end of the keyspace. */
export interface PartitionSize {
  id: number;
  start: Buffer;
  end: Buffer;
  node: string;
  /** Approximate entries. */
  rows: number;
  /** Approximate bytes (keys and records). */
  bytes: number;
}

/**
 * A contiguous key range of a plan, `[start, end)` with `end` empty = the end of the keyspace.
 * It lies in one partition (a piece of a large one) or spans several small neighbours.
 */
export interface ShardRange {
  index: number;
  start: Buffer;
  end: Buffer;
  /** Ids of the partitions the range touches, in key order. */
  partitions: number[];
  approxRows: number;
  approxBytes: number;
}

/** The size each shard should have: entries or bytes. */
export type ShardTarget = { targetRows: number } | { targetBytes: number };

/** Splits one partition's range into `parts` pieces: returns up to `parts - 1` keys inside it. */
export type SplitKeysFn = (partition: PartitionSize, parts: number) => Promise<Buffer[]>;

/**
 * Cuts the keyspace into contiguous shards of about the target size each, covering it exactly
 * once. Partitions larger than the target are cut at split keys (computed by their node);
 * neighbouring small partitions are grouped while the group stays near the target. Sizes are the
 * partitions' approximate figures, shared evenly among a partition's pieces.
 */
export async function planShards(
  partitions: readonly PartitionSize[],
  target: ShardTarget,
  splitKeys: SplitKeysFn,
  options: { signal?: AbortSignal } = {},
): Promise<ShardRange[]> {
  const byRows = 'targetRows' in target;
  const goal = byRows ? target.targetRows : target.targetBytes;
  if (!Number.isSafeInteger(goal) || goal < 1) throw new RangeError(`a shard target must be a whole number ≥ 1, got ${goal}`);
  const sorted = [...partitions].sort((a, b) => Buffer.compare(a.start, b.start));
  checkCoverage(sorted);
  const sizeOf = (p: { rows: number; bytes: number }): number => (byRows ? p.rows : p.bytes);

  const shards: ShardRange[] = [];
  let group: PartitionSize[] = [];
  const flush = (): void => {
    if (group.length === 0) return;
    shards.push({
      index: shards.length,
      start: group[0]!.start,
      end: group[group.length - 1]!.end,
      partitions: group.map((p) => p.id),
      approxRows: group.reduce((s, p) => s + p.rows, 0),
      approxBytes: group.reduce((s, p) => s + p.bytes, 0),
    });
    group = [];
  };

  for (const partition of sorted) {
    options.signal?.throwIfAborted();
    const size = sizeOf(partition);
    const parts = Math.max(1, Math.round(size / goal));
    if (parts >= 2) {
      flush();
      const keys = await splitKeys(partition, parts);
      const bounds = [partition.start, ...keys.filter((k) => inside(partition, k)), partition.end];
      const pieces = bounds.length - 1;
      for (let i = 0; i < pieces; i++) {
        shards.push({
          index: shards.length,
          start: bounds[i]!,
          end: bounds[i + 1]!,
          partitions: [partition.id],
          approxRows: Math.round(partition.rows / pieces),
          approxBytes: Math.round(partition.bytes / pieces),
        });
      }
      continue;
    }
    // Grow the group while it gets closer to the goal; start a new one when adding overshoots more.
    const groupSize = group.reduce((s, p) => s + sizeOf(p), 0);
    if (group.length > 0 && Math.abs(groupSize + size - goal) > Math.abs(groupSize - goal)) flush();
    group.push(partition);
  }
  flush();
  return shards;
}

function inside(partition: PartitionSize, key: Buffer): boolean {
  return Buffer.compare(key, partition.start) > 0 && (partition.end.length === 0 || Buffer.compare(key, partition.end) < 0);
}

function checkCoverage(sorted: readonly PartitionSize[]): void {
  if (sorted.length === 0) throw new RangeError('planShards needs the partitions of a map, got none');
  if (sorted[0]!.start.length !== 0) throw new RangeError('the partitions do not start at the beginning of the keyspace');
  for (let i = 1; i < sorted.length; i++) {
    if (!sorted[i - 1]!.end.equals(sorted[i]!.start)) throw new RangeError(`partitions ${sorted[i - 1]!.id} and ${sorted[i]!.id} are not contiguous`);
  }
  if (sorted[sorted.length - 1]!.end.length !== 0) throw new RangeError('the partitions do not reach the end of the keyspace');
}
