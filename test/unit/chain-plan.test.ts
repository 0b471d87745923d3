import { describe, expect, it } from 'vitest';
import { initialMap, promote, reconcile, resync } from '../../coordinator/index.js';
import { PartitionMap, StoreError, type Replica } from '../../store/index.js';

const A = '127.0.0.1:7001';
const B = '127.0.0.1:7002';
const C = '127.0.0.1:7003';
const D = '127.0.0.1:7004';

const chains = (map: PartitionMap): string[][] => map.partitions.map((p) => p.chain.map((r) => `${r.node.slice(-1)}${r.state === 'syncing' ? '*' : ''}`));

function mapOf(replicas: number, ...chainsByPartition: Replica[][]): PartitionMap {
  const whole = PartitionMap.evenlySplit(1, [A], chainsByPartition.length);
  return PartitionMap.create(7, whole.partitions.map((p, i) => ({ id: p.id, start: p.start, end: p.end, chain: chainsByPartition[i]!, epoch: 3 })), { replicas });
}
const s = (node: string): Replica => ({ node, state: 'serving' });
const y = (node: string): Replica => ({ node, state: 'syncing' });

describe('initialMap', () => {
  it('puts each chain on R distinct nodes, all serving at epoch 1, with heads spread evenly', () => {
    const map = initialMap([C, A, B], 2, { partitions: 6 });
    expect(map.version).toBe(1);
    expect(map.replicas).toBe(2);
    expect(chains(map)).toEqual([['1', '2'], ['2', '3'], ['3', '1'], ['1', '2'], ['2', '3'], ['3', '1']]);
    expect(map.partitions.every((p) => p.epoch === 1 && p.node === p.chain[0]!.node)).toBe(true);
  });

  it('spreads heads within one partition of each other when the counts do not divide', () => {
    const map = initialMap([A, B, C, D], 3, { partitions: 6 });
    const heads = [A, B, C, D].map((n) => map.partitionsOf(n).length);
    expect(Math.max(...heads) - Math.min(...heads)).toBeLessThanOrEqual(1);
    for (const p of map.partitions) expect(new Set(p.chain.map((r) => r.node)).size).toBe(3);
  });

  it('cuts at split keys when given', () => {
    const map = initialMap([A, B], 1, { splitKeys: [Buffer.from('m')] });
    expect(map.partitions.map((p) => [p.start.toString(), p.end.toString(), p.node])).toEqual([['', 'm', A], ['m', '', B]]);
  });

  it('refuses more replicas than nodes with STORE_CLUSTER_NODES_MISSING', () => {
    expect(() => initialMap([A, B], 3, { partitions: 2 })).toThrow(StoreError);
    try {
      initialMap([A, B], 3, { partitions: 2 });
    } catch (err) {
      expect((err as StoreError).code).toBe('STORE_CLUSTER_NODES_MISSING');
      expect((err as Error).message).toBe(`3 replicas need 3 distinct nodes, but 2 are registered (${A}, ${B})`);
    }
  });
});

describe('reconcile', () => {
  it('changes nothing when every replica is live and every chain is full', () => {
    expect(reconcile(mapOf(2, [s(A), s(B)], [s(B), s(A)]), new Set([A, B]))).toBeUndefined();
  });

  it('removes a dead node from every chain, promoting its successor to head, and bumps only the touched epochs and the version once', () => {
    const before = mapOf(2, [s(A), s(B)], [s(B), s(C)], [s(C), s(A)]);
    const plan = reconcile(before, new Set([B, C]))!;
    expect(plan.map.version).toBe(8);
    // A's partitions lose it; the chain short of replicas gets the live node it lacks as a syncing tail.
    expect(chains(plan.map)).toEqual([['2', '3*'], ['2', '3'], ['3', '2*']]);
    expect(plan.map.partitions.map((p) => p.epoch)).toEqual([4, 3, 4]);
    expect(plan.map.byId(0)!.node).toBe(B);
    expect(plan.changes).toEqual([
      { partition: 0, removed: [A], added: [C], epoch: 4 },
      { partition: 2, removed: [A], added: [B], epoch: 4 },
    ]);
  });

  it('keeps the last serving replica of a chain even when its node is gone (the only copy), and removes dead syncing ones', () => {
    const plan = reconcile(mapOf(3, [s(A), y(B)], [s(A), s(C)]), new Set([C]))!;
    expect(chains(plan.map)).toEqual([['1', '3*'], ['3']]);
    expect(plan.map.partitions.map((p) => p.epoch)).toEqual([4, 4]);
  });

  it('adds a new or returning node as a syncing tail to chains short of replicas, the least-loaded nodes first', () => {
    const plan = reconcile(mapOf(2, [s(A)], [s(A)], [s(B), s(A)]), new Set([A, B, C]))!;
    // C holds nothing and B one: partition 0 gets C; then B and C hold one each, and the tie goes by address (B).
    expect(chains(plan.map)).toEqual([['1', '3*'], ['1', '2*'], ['2', '1']]);
    expect(plan.map.partitions.map((p) => p.epoch)).toEqual([4, 4, 3]);
  });

  it('never adds a node twice to a chain and leaves a chain short when no other node is live', () => {
    expect(reconcile(mapOf(3, [s(A), y(B)]), new Set([A, B]))).toBeUndefined();
  });

  it('the result of a pass needs no further pass (a second reconcile is a no-op)', () => {
    const live = new Set([B, C, D]);
    const plan = reconcile(mapOf(3, [s(A), s(B), s(C)], [s(D), s(A)], [s(A)]), live)!;
    expect(reconcile(plan.map, live)).toBeUndefined();
  });
});

describe('promote', () => {
  it('makes a syncing replica serving when its copy was reported at the current epoch, before the syncing ones; epoch + 1 per partition, version + 1', () => {
    const before = mapOf(3, [s(A), y(B), y(C)], [s(B), y(A)], [s(C), y(D)]);
    const plan = promote(before, [
      { partition: 0, node: C, epoch: 3 },
      { partition: 1, node: A, epoch: 2 },
      { partition: 2, node: A, epoch: 3 },
    ])!;
    expect(plan.map.version).toBe(8);
    // Partition 1's report is for an older epoch, partition 2's for a node not syncing there: both ignored.
    expect(chains(plan.map)).toEqual([['1', '3', '2*'], ['2', '1*'], ['3', '4*']]);
    expect(plan.map.partitions.map((p) => p.epoch)).toEqual([4, 3, 3]);
    expect(plan.promoted).toEqual([{ partition: 0, node: C, epoch: 4 }]);
  });

  it('changes nothing without an applicable report, or for a replica already serving', () => {
    expect(promote(mapOf(2, [s(A), s(B)]), [{ partition: 0, node: B, epoch: 3 }])).toBeUndefined();
    expect(promote(mapOf(2, [s(A), y(B)]), [])).toBeUndefined();
  });
});

describe('resync (cluster repair)', () => {
  it('sends a serving replica back to syncing at the tail, its successor heading when it was head; epoch and version + 1', () => {
    const map = resync(mapOf(3, [s(A), s(B), y(C)], [s(B), s(C)]), 0, A);
    expect(chains(map)).toEqual([['2', '3*', '1*'], ['2', '3']]);
    expect(map.version).toBe(8);
    expect(map.partitions.map((p) => p.epoch)).toEqual([4, 3]);
    expect(map.byId(0)!.node).toBe(B);
  });

  it('refuses the only serving replica, a replica syncing already, a node without a replica and an unknown partition', () => {
    const map = mapOf(3, [s(A), y(B)]);
    const codeOf = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (err) {
        return err instanceof StoreError ? `${err.code}: ${err.message}` : String(err);
      }
      return undefined;
    };
    expect(codeOf(() => resync(map, 0, A))).toMatch(/^STORE_REPAIR_REFUSED: 127\.0\.0\.1:7001 holds the only serving replica of partition 0/);
    expect(codeOf(() => resync(map, 0, B))).toMatch(/^STORE_REPAIR_REFUSED: .* is syncing already/);
    expect(codeOf(() => resync(map, 0, C))).toMatch(/^STORE_REPAIR_REFUSED: partition 0 has no replica on 127\.0\.0\.1:7003/);
    expect(codeOf(() => resync(map, 5, A))).toMatch(/^STORE_REPAIR_REFUSED: the map \(version 7\) has no partition 5/);
  });
});
