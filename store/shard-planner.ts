import { StoreError } from './store-errors.js';

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

/**
 * Splits a range into `parts` pieces (2 to MAX_SPLIT_PARTS): returns up to `parts - 1` keys inside
 * it. The range is a partition, or a piece of one (`start`/`end` narrowed) when it is split in stages.
 */
export type SplitKeysFn = (partition: PartitionSize, parts: number) => Promise<Buffer[]>;

/** Most pieces one SplitKeys call may ask for (the nodes' limit); larger partitions are split in stages. */
export const MAX_SPLIT_PARTS = 1000;

/**
 * Most shards one plan may have, by default: each is a job and a file. 100,000 shards at the
 * default 1,000,000 rows each is 10^11 rows; beyond it the target must grow.
 */
export const DEFAULT_MAX_PLAN_SHARDS = 100_000;

/** Options of `planShards`. */
export interface PlanShardsOptions {
  /** Refuse (STORE_PLAN_TOO_LARGE) a target that would make more shards than this. Default DEFAULT_MAX_PLAN_SHARDS. */
  maxShards?: number;
  signal?: AbortSignal;
}

/**
 * Cuts the keyspace into contiguous shards of about the target size each, covering it exactly
 * once. Partitions larger than the target are cut at split keys (computed by their node; in stages
 * of at most MAX_SPLIT_PARTS pieces per call, so any partition size works); neighbouring small
 * partitions are grouped while the group stays near the target. Sizes are the partitions'
 * approximate figures, shared evenly among a partition's pieces.
 *
 * Throws StoreError STORE_PLAN_TOO_LARGE, naming the smallest target that fits, when the target
 * would make more than `maxShards` shards — before asking any node.
 */
export async function planShards(partitions: readonly PartitionSize[], target: ShardTarget, splitKeys: SplitKeysFn, options: PlanShardsOptions = {}): Promise<ShardRange[]> {
  const byRows = 'targetRows' in target;
  const goal = byRows ? target.targetRows : target.targetBytes;
  if (!Number.isSafeInteger(goal) || goal < 1) throw new RangeError(`a shard target must be a whole number ≥ 1, got ${goal}`);
  const maxShards = options.maxShards ?? DEFAULT_MAX_PLAN_SHARDS;
  if (!Number.isSafeInteger(maxShards) || maxShards < 1) throw new RangeError(`maxShards must be a whole number ≥ 1, got ${maxShards}`);
  const sorted = [...partitions].sort((a, b) => Buffer.compare(a.start, b.start));
  checkCoverage(sorted);
  const sizeOf = (p: { rows: number; bytes: number }): number => (byRows ? p.rows : p.bytes);
  const partsOf = (size: number, g: number): number => Math.max(1, Math.round(size / g));
  // Small partitions are grouped, so this bounds the plan from above.
  const estimate = (g: number): number => sorted.reduce((n, p) => n + partsOf(sizeOf(p), g), 0);
  if (estimate(goal) > maxShards) {
    const unit = byRows ? 'rows' : 'bytes';
    let fits = Math.max(goal + 1, Math.ceil(sorted.reduce((n, p) => n + sizeOf(p), 0) / maxShards));
    while (estimate(fits) > maxShards) fits = Math.ceil(fits * 1.1);
    throw new StoreError(
      'STORE_PLAN_TOO_LARGE',
      `a shard target of ${goal} ${unit} would cut the store (${sorted.reduce((n, p) => n + sizeOf(p), 0)} ${unit} in ${sorted.length} partitions) into about ${estimate(goal)} shards, more than the ${maxShards} a plan may have: use a target of at least ${fits} ${unit}`,
      { context: { target: goal, shards: estimate(goal), maxShards, smallestTarget: fits } },
    );
  }

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
    const parts = partsOf(size, goal);
    if (parts >= 2) {
      flush();
      const keys = await splitInStages(partition, partition.start, partition.end, parts, splitKeys, options.signal);
      const bounds = [partition.start, ...keys, partition.end];
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

/**
 * Up to `parts - 1` sorted keys strictly inside `[start, end)` (a piece of `partition`), cutting it
 * into pieces of about equal size. More than MAX_SPLIT_PARTS parts: cut into at most that many
 * pieces first, then each piece again, sharing the parts evenly among the pieces.
 */
async function splitInStages(partition: PartitionSize, start: Buffer, end: Buffer, parts: number, splitKeys: SplitKeysFn, signal?: AbortSignal): Promise<Buffer[]> {
  signal?.throwIfAborted();
  const asked = parts > MAX_SPLIT_PARTS ? Math.min(MAX_SPLIT_PARTS, Math.ceil(parts / MAX_SPLIT_PARTS)) : parts;
  const keys = increasingInside(start, end, await splitKeys({ ...partition, start, end }, asked));
  if (asked === parts) return keys;
  const bounds = [start, ...keys, end];
  const pieces = bounds.length - 1;
  const out: Buffer[] = [];
  for (let i = 0; i < pieces; i++) {
    if (i > 0) out.push(bounds[i]!);
    const partsHere = Math.round((parts * (i + 1)) / pieces) - Math.round((parts * i) / pieces);
    if (partsHere >= 2) out.push(...(await splitInStages(partition, bounds[i]!, bounds[i + 1]!, partsHere, splitKeys, signal)));
  }
  return out;
}

/**
 * Why `shards` is not a plan as `planShards` makes them — indexes 0, 1, …; contiguous from the
 * start of the keyspace to its end; no empty shard — or undefined when it is one. For plans that
 * come from elsewhere (a metrics server's answer).
 */
export function planCoverageProblem(shards: readonly ShardRange[]): string | undefined {
  if (shards.length === 0) return 'has no shards';
  for (let i = 0; i < shards.length; i++) {
    const s = shards[i]!;
    if (s.index !== i) return `lists shard ${s.index} at position ${i}`;
    if (i === 0 ? s.start.length !== 0 : !s.start.equals(shards[i - 1]!.end)) return `has a gap or overlap before shard ${i}`;
    if (s.end.length > 0 && Buffer.compare(s.start, s.end) >= 0) return `has an empty shard ${i}`;
    // An open end followed by more shards would make them overlap it (their start "" equals its end "").
    if (s.end.length === 0 && i < shards.length - 1) return `has shard ${i} reaching the end of the keyspace before the last shard`;
  }
  if (shards.at(-1)!.end.length !== 0) return 'does not reach the end of the keyspace';
  return undefined;
}

/** The keys strictly inside `[start, end)` (`end` empty = open), each above the one before. */
function increasingInside(start: Buffer, end: Buffer, keys: readonly Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const k of keys) {
    const after = out.length > 0 ? out[out.length - 1]! : start;
    if (Buffer.compare(k, after) > 0 && (end.length === 0 || Buffer.compare(k, end) < 0)) out.push(k);
  }
  return out;
}

function checkCoverage(sorted: readonly PartitionSize[]): void {
  if (sorted.length === 0) throw new RangeError('planShards needs the partitions of a map, got none');
  if (sorted[0]!.start.length !== 0) throw new RangeError('the partitions do not start at the beginning of the keyspace');
  for (let i = 1; i < sorted.length; i++) {
    if (!sorted[i - 1]!.end.equals(sorted[i]!.start)) throw new RangeError(`partitions ${sorted[i - 1]!.id} and ${sorted[i]!.id} are not contiguous`);
  }
  if (sorted[sorted.length - 1]!.end.length !== 0) throw new RangeError('the partitions do not reach the end of the keyspace');
}
