import { describe, expect, it } from 'vitest';
import { MAX_SPLIT_PARTS, StoreError, planCoverageProblem, planShards, type PartitionSize, type ShardRange } from '../../store/index.js';

const b = (hex: string) => Buffer.from(hex, 'hex');

/** Partitions over one-byte boundaries with the given row counts (100 bytes per row). */
function partitions(rows: number[]): PartitionSize[] {
  const cuts = rows.map((_, i) => (i === 0 ? '' : Math.floor((256 * i) / rows.length).toString(16).padStart(2, '0')));
  return rows.map((n, i) => ({ id: i, start: b(cuts[i]!), end: i + 1 < rows.length ? b(cuts[i + 1]!) : b(''), node: `n${i % 3}`, rows: n, bytes: n * 100 }));
}

/** Split keys evenly spaced in key space after the partition's first byte, as a node would for uniform data. */
async function evenSplit(p: PartitionSize, parts: number): Promise<Buffer[]> {
  const lo = p.start.length === 0 ? 0 : p.start[0]! * 256;
  const hi = p.end.length === 0 ? 65536 : p.end[0]! * 256;
  return Array.from({ length: parts - 1 }, (_, i) => {
    const v = Math.floor(lo + ((hi - lo) * (i + 1)) / parts);
    return Buffer.from([v >> 8, v & 0xff]);
  });
}

function expectExactCover(shards: ShardRange[]): void {
  expect(shards[0]!.start.length).toBe(0);
  expect(shards[shards.length - 1]!.end.length).toBe(0);
  for (let i = 1; i < shards.length; i++) {
    expect(shards[i]!.start.equals(shards[i - 1]!.end), `shard ${i} starts where ${i - 1} ends`).toBe(true);
    expect(Buffer.compare(shards[i]!.start, shards[i - 1]!.start)).toBeGreaterThan(0);
  }
  shards.forEach((s, i) => expect(s.index).toBe(i));
}

describe('planShards', () => {
  it('cuts a skewed cluster (one partition holds most rows) into shards near the target', async () => {
    const parts = partitions([1_000, 2_000, 950_000, 3_000, 500, 43_500]);
    const shards = await planShards(parts, { targetRows: 100_000 }, evenSplit);
    expectExactCover(shards);
    const total = shards.reduce((s, x) => s + x.approxRows, 0);
    expect(Math.abs(total - 1_000_000)).toBeLessThanOrEqual(shards.length);
    const big = shards.filter((s) => s.partitions.length === 1 && s.partitions[0] === 2);
    expect(big.length).toBe(10);
    for (const s of big) expect(Math.abs(s.approxRows - 100_000) / 100_000).toBeLessThanOrEqual(0.25);
  });

  it('groups neighbouring small partitions instead of making a shard per partition', async () => {
    const shards = await planShards(partitions(Array(16).fill(10_000)), { targetRows: 40_000 }, evenSplit);
    expectExactCover(shards);
    expect(shards.length).toBe(4);
    for (const s of shards) expect(s.approxRows).toBe(40_000);
  });

  it('plans by bytes as well as by rows', async () => {
    const shards = await planShards(partitions([50_000, 50_000]), { targetBytes: 1_000_000 }, evenSplit);
    expectExactCover(shards);
    expect(shards.length).toBe(10);
  });

  it('an empty cluster is one shard over the whole keyspace', async () => {
    const shards = await planShards(partitions([0, 0, 0]), { targetRows: 1000 }, evenSplit);
    expectExactCover(shards);
    expect(shards).toHaveLength(1);
    expect(shards[0]!.partitions).toEqual([0, 1, 2]);
  });

  it('refuses partitions that do not cover the keyspace, and nonsense targets', async () => {
    const parts = partitions([10, 10, 10]);
    await expect(planShards([parts[0]!, parts[2]!], { targetRows: 10 }, evenSplit)).rejects.toThrow(/not contiguous/);
    await expect(planShards(parts, { targetRows: 0 }, evenSplit)).rejects.toThrow(/whole number ≥ 1/);
  });
});

/** 4-byte big-endian key of a number. */
const key32 = (n: number): Buffer => {
  const k = Buffer.alloc(4);
  k.writeUInt32BE(n);
  return k;
};
const num32 = (k: Buffer, open: number): number => (k.length === 0 ? open : k.readUInt32BE(0));

/**
 * A node's SplitKeys over data spread evenly on 4-byte keys: refuses more than MAX_SPLIT_PARTS parts,
 * as the node does ("parts must be 2–1000"), and records what it was asked.
 */
function evenSplit32(calls: Array<{ start: Buffer; end: Buffer; parts: number }>) {
  return async (p: PartitionSize, parts: number): Promise<Buffer[]> => {
    calls.push({ start: p.start, end: p.end, parts });
    if (parts < 2 || parts > MAX_SPLIT_PARTS) throw new StoreError('STORE_INVALID_ARGUMENT', `parts must be 2–${MAX_SPLIT_PARTS}, got ${parts}`);
    const lo = num32(p.start, 0);
    const hi = num32(p.end, 2 ** 32);
    return Array.from({ length: parts - 1 }, (_, i) => key32(Math.floor(lo + ((hi - lo) * (i + 1)) / parts)));
  };
}

describe('planShards on partitions that need more than 1000 pieces', () => {
  const one = (rows: number): PartitionSize[] => [{ id: 0, start: Buffer.alloc(0), end: Buffer.alloc(0), node: 'n0', rows, bytes: rows * 100 }];

  it('splits in stages (no call asks for more than 1000 parts) and still tiles the keyspace into shards near the target', async () => {
    const calls: Array<{ start: Buffer; end: Buffer; parts: number }> = [];
    // 5,000 pieces: 5 first, then 1,000 in each.
    const shards = await planShards(one(5_000_000), { targetRows: 1000 }, evenSplit32(calls));
    expectExactCover(shards);
    expect(shards.length).toBe(5000);
    expect(Math.max(...calls.map((c) => c.parts))).toBeLessThanOrEqual(MAX_SPLIT_PARTS);
    expect(calls.length).toBe(6);
    // Evenly spread data: every shard spans about 1/5000 of the key space.
    const widths = shards.map((s) => num32(s.end, 2 ** 32) - num32(s.start, 0));
    for (const w of widths) expect(Math.abs(w - 2 ** 32 / 5000) / (2 ** 32 / 5000)).toBeLessThan(0.01);
  });

  it('three stages for over a million pieces; pieces of a piece stay inside it', async () => {
    const calls: Array<{ start: Buffer; end: Buffer; parts: number }> = [];
    const shards = await planShards(one(2_500_000), { targetRows: 2 }, evenSplit32(calls), { maxShards: 2_000_000 });
    expect(shards.length).toBe(1_250_000);
    // expectExactCover without an expect per shard (1.25M of them).
    const gaps = shards.filter((s, i) => s.index !== i || (i === 0 ? s.start.length !== 0 : !s.start.equals(shards[i - 1]!.end) || Buffer.compare(s.start, shards[i - 1]!.start) <= 0));
    expect(gaps).toEqual([]);
    expect(shards.at(-1)!.end.length).toBe(0);
    expect(calls.some((c) => c.parts === 2)).toBe(true);
    expect(Math.max(...calls.map((c) => c.parts))).toBeLessThanOrEqual(MAX_SPLIT_PARTS);
  });

  it('a target that would make more shards than a plan may have is refused before any node is asked, naming a target that fits', async () => {
    const calls: Array<{ start: Buffer; end: Buffer; parts: number }> = [];
    const err = await planShards(one(224_000), { targetRows: 10 }, evenSplit32(calls), { maxShards: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_PLAN_TOO_LARGE');
    expect((err as StoreError).retryable).toBe(false);
    expect(calls).toHaveLength(0);
    const fits = (err as StoreError).context.smallestTarget as number;
    expect((err as StoreError).message).toContain(`at least ${fits} rows`);
    expect(fits).toBeGreaterThanOrEqual(224);
    const shards = await planShards(one(224_000), { targetRows: fits }, evenSplit32(calls), { maxShards: 1000 });
    expectExactCover(shards);
    expect(shards.length).toBeLessThanOrEqual(1000);
  });
});

describe('planCoverageProblem (the check backup applies to plans from a metrics server)', () => {
  it('accepts what planShards makes and names each way a plan can fail to tile the keyspace', async () => {
    const shards = await planShards(partitions([1_000, 2_000, 950_000, 3_000, 500, 43_500]), { targetRows: 100_000 }, evenSplit);
    expect(planCoverageProblem(shards)).toBeUndefined();
    const at = (i: number, change: Partial<ShardRange>) => shards.map((s, j) => (j === i ? { ...s, ...change } : s));
    expect(planCoverageProblem([])).toBe('has no shards');
    expect(planCoverageProblem(at(1, { index: 7 }))).toBe('lists shard 7 at position 1');
    expect(planCoverageProblem(at(0, { start: b('01') }))).toBe('has a gap or overlap before shard 0');
    expect(planCoverageProblem(at(2, { start: b('ff') }))).toBe('has a gap or overlap before shard 2');
    expect(planCoverageProblem(at(0, { end: b('') }))).toBe('has shard 0 reaching the end of the keyspace before the last shard');
    // Two shards over the whole keyspace each: every start equals the end before it, yet they overlap.
    expect(planCoverageProblem([{ ...shards[0]!, end: b('') }, { ...shards[1]!, start: b(''), end: b('') }])).toBe('has shard 0 reaching the end of the keyspace before the last shard');
    expect(planCoverageProblem(shards.slice(0, -1))).toBe('does not reach the end of the keyspace');
    const one = [{ index: 0, start: b(''), end: b('80'), partitions: [0], approxRows: 1, approxBytes: 1 }, { index: 1, start: b('80'), end: b('80'), partitions: [0], approxRows: 1, approxBytes: 1 }];
    expect(planCoverageProblem(one)).toBe('has an empty shard 1');
  });
});
