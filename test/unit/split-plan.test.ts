import { describe, expect, it } from 'vitest';
import { chainNotWhole, cutBackoffMs, lowestUnusedId, mergeMap, mergePlan, splitCommitted, splitMap, splitProblem } from '../../coordinator/index.js';
import { PartitionMap, type Replica } from '../../store/index.js';

const A = '127.0.0.1:7001';
const B = '127.0.0.1:7002';
const C = '127.0.0.1:7003';
const s = (node: string): Replica => ({ node, state: 'serving' });
const y = (node: string): Replica => ({ node, state: 'syncing' });
const hex = (h: string): Buffer => Buffer.from(h, 'hex');

/** Two partitions [, 80) and [80, ) with ids 0 and 3 (id 1 and 2 unused), chains as given, epoch 4, version 9. */
function mapOf(chain0: Replica[], chain1: Replica[] = [s(B), s(C), s(A)]): PartitionMap {
  return PartitionMap.create(
    9,
    [
      { id: 0, start: Buffer.alloc(0), end: hex('80'), chain: chain0, epoch: 4 },
      { id: 3, start: hex('80'), end: Buffer.alloc(0), chain: chain1, epoch: 4 },
    ],
    { replicas: 3 },
  );
}
const live = new Set([A, B, C]);

describe('split planning', () => {
  it('takes the lowest unused id', () => {
    expect(lowestUnusedId(mapOf([s(A), s(B), s(C)]))).toBe(1);
  });

  it('splits into [start, K) under epoch + 1 and a new partition [K, end) on the same chain; version + 1', () => {
    const map = mapOf([s(A), s(B), s(C)]);
    const next = splitMap(map, 0, hex('40'), 1);
    expect(next.version).toBe(10);
    const p = next.byId(0)!;
    const q = next.byId(1)!;
    expect([p.start.toString('hex'), p.end.toString('hex'), p.epoch]).toEqual(['', '40', 5]);
    expect([q.start.toString('hex'), q.end.toString('hex'), q.epoch]).toEqual(['40', '80', 5]);
    expect(q.chain).toEqual(p.chain);
    expect(next.byId(3)!.epoch).toBe(4);
    expect(next.lookup(hex('4000')).id).toBe(1);
    expect(next.lookup(hex('3fff')).id).toBe(0);
    expect(splitCommitted(next, 0, hex('40'), 1)).toBe(true);
    expect(splitCommitted(map, 0, hex('40'), 1)).toBe(false);
    // The last partition (unbounded end) splits too.
    const last = splitMap(map, 3, hex('c0'), 2);
    expect(last.byId(2)!.end.length).toBe(0);
    expect(last.byId(3)!.end.toString('hex')).toBe('c0');
  });

  it('refuses a key at or outside the bounds, a missing partition, a used id, a syncing replica, a node not live', () => {
    const map = mapOf([s(A), s(B), s(C)]);
    expect(splitProblem(map, live, { partition: 0, at: hex('40') })).toBeUndefined();
    expect(splitProblem(map, live, { partition: 0, at: hex('80') })).toMatch(/not strictly inside partition 0/);
    expect(splitProblem(map, live, { partition: 0, at: hex('90') })).toMatch(/not strictly inside/);
    expect(splitProblem(map, live, { partition: 3, at: hex('80') })).toMatch(/not strictly inside partition 3/);
    expect(splitProblem(map, live, { partition: 3, at: hex('7f') })).toMatch(/not strictly inside/);
    expect(splitProblem(map, live, { partition: 7, at: hex('40') })).toMatch(/partition 7 is not in the map/);
    expect(splitProblem(map, live, { partition: 0, at: hex('40'), newPartition: 3 })).toMatch(/partition id 3 is in use.*lowest unused id \(1\)/);
    expect(splitProblem(mapOf([s(A), s(B), y(C)]), live, { partition: 0, at: hex('40') })).toMatch(/syncing replica \(127.0.0.1:7003\)/);
    expect(splitProblem(map, new Set([A, B]), { partition: 0, at: hex('40') })).toMatch(/not live \(127.0.0.1:7003\)/);
    expect(() => splitMap(map, 0, hex('80'), 1)).toThrow(RangeError);
  });

  it('both halves of a split, and a merge, keep the partition\'s own replication factor (set-replicas --partitions)', () => {
    const map = PartitionMap.create(
      9,
      [
        { id: 0, start: Buffer.alloc(0), end: hex('80'), chain: [s(A), s(B)], epoch: 4, replicas: 2 },
        { id: 3, start: hex('80'), end: Buffer.alloc(0), chain: [s(B), s(C), s(A)], epoch: 4 },
      ],
      { replicas: 3 },
    );
    const split = splitMap(map, 0, hex('40'), 1);
    expect([split.byId(0)!.replicas, split.byId(1)!.replicas, split.byId(3)!.replicas]).toEqual([2, 2, undefined]);
    expect(mergeMap(split, 0, 1).byId(0)!.replicas).toBe(2);
    expect(splitMap(map, 3, hex('c0'), 1).byId(1)!.replicas).toBeUndefined();
  });

  it('backs off 200 ms doubling to 5 s between cuts', () => {
    expect([1, 2, 3, 4, 5, 6, 10].map(cutBackoffMs)).toEqual([200, 400, 800, 1600, 3200, 5000, 5000]);
  });
  it('a running split waits for a chain that is recovering (syncing replica, node not live) instead of failing', () => {
    expect(chainNotWhole(mapOf([s(A), s(B), s(C)]), live, 0)).toBeUndefined();
    expect(chainNotWhole(mapOf([s(A), s(B), y(C)]), live, 0)).toMatch(/waiting for the chain of partition 0 to recover \(127.0.0.1:7003/);
    expect(chainNotWhole(mapOf([s(A), s(B), s(C)]), new Set([A, C]), 0)).toMatch(/127.0.0.1:7002/);
  });

  it('merges neighbours on the same chain, in either order; refuses others naming what to do', () => {
    const split = splitMap(mapOf([s(A), s(B), s(C)]), 0, hex('40'), 1);
    const plan = mergePlan(split, live, [1, 0]);
    expect('problem' in plan ? plan.problem : [plan.lower.id, plan.upper.id]).toEqual([0, 1]);
    const merged = mergeMap(split, 0, 1);
    expect(merged.version).toBe(split.version + 1);
    expect(merged.partitions.map((p) => [p.id, p.start.toString('hex'), p.end.toString('hex'), p.epoch])).toEqual([
      [0, '', '80', 6],
      [3, '80', '', 4],
    ]);
    expect(mergePlan(split, live, [0, 3])).toEqual({ problem: expect.stringMatching(/not neighbours/) });
    expect(mergePlan(mapOf([s(A), s(B), s(C)]), live, [0, 3])).toEqual({ problem: expect.stringMatching(/different chains .*move replicas first/) });
    expect(mergePlan(split, live, [0, 0])).toEqual({ problem: expect.stringMatching(/two different partitions/) });
    expect(mergePlan(split, live, [0, 7])).toEqual({ problem: expect.stringMatching(/partition 7 is not in the map/) });
    expect(mergePlan(split, new Set([A, B]), [0, 1])).toEqual({ problem: expect.stringMatching(/not live/) });
  });
});
