import { describe, expect, it } from 'vitest';
import { planShards, type PartitionSize, type ShardRange } from '../../store/index.js';

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
