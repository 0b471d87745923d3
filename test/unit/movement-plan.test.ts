import { describe, expect, it } from 'vitest';
import { addSyncingTail, fairShare, movementsInFlight, nodeLoads, partitionBytes, pickReplicaToRemove, pickTarget, planDrain, planRebalance, planSetReplicas, reconcile, refusal, removeReplica, setMapReplicas, setPartitionReplicas, type ClusterView } from '../../coordinator/index.js';
import { PartitionMap, targetReplicas, type OperationRecord, type Replica } from '../../store/index.js';

const A = '127.0.0.1:7001';
const B = '127.0.0.1:7002';
const C = '127.0.0.1:7003';
const D = '127.0.0.1:7004';

const s = (node: string): Replica => ({ node, state: 'serving' });
const y = (node: string): Replica => ({ node, state: 'syncing' });
const chains = (map: PartitionMap): string[][] => map.partitions.map((p) => p.chain.map((r) => `${r.node.slice(-1)}${r.state === 'syncing' ? '*' : ''}`));

function mapOf(replicas: number, ...chainsByPartition: Replica[][]): PartitionMap {
  const whole = PartitionMap.evenlySplit(1, [A], chainsByPartition.length);
  return PartitionMap.create(7, whole.partitions.map((p, i) => ({ id: p.id, start: p.start, end: p.end, chain: chainsByPartition[i]!, epoch: 3 })), { replicas });
}

function view(map: PartitionMap, bytes: number[], live = [A, B, C, D], draining: string[] = []): ClusterView {
  return { map, live: new Set(live), draining: new Set(draining), bytes: new Map(bytes.map((b, i) => [i, b])) };
}

function record(steps: OperationRecord['steps']): OperationRecord {
  return { id: 'op-1', args: { kind: 'rebalance' }, state: 'running', createdAtMs: 0, updatedAtMs: 0, limits: { maxMovements: 2, maxPauseMs: 2000 }, steps, pauses: [] };
}

describe('fair share and loads', () => {
  it('counts every replica a node holds at its partition\'s bytes, and judges balance within 20 % of total ÷ nodes', () => {
    const map = mapOf(2, [s(A), s(B)], [s(B), s(C)], [s(C), s(A)]);
    const loads = nodeLoads(view(map, [100, 200, 300]));
    expect(Object.fromEntries(loads)).toEqual({ [A]: 400, [B]: 300, [C]: 500, [D]: 0 });
    expect(fairShare(loads)).toEqual({ fair: 300, balanced: false });
    expect(fairShare(new Map([[A, 110], [B, 90], [C, 100]])).balanced).toBe(true);
    expect(fairShare(new Map([[A, 121], [B, 90], [C, 89]])).balanced).toBe(false);
    expect(fairShare(new Map([[A, 0], [B, 0]]))).toEqual({ fair: 0, balanced: true });
  });

  it('takes a partition\'s size from the largest report of its replicas (a syncing one reports less)', () => {
    const base = { epoch: 1, lagSequences: 0, forwardRetries: 0, updatedAtMs: 0 };
    expect(Object.fromEntries(partitionBytes([{ ...base, partition: 0, node: A, bytes: 50 }, { ...base, partition: 0, node: B, bytes: 80 }, { ...base, partition: 1, node: A }]))).toEqual({ 0: 80 });
  });
});

describe('planRebalance', () => {
  it('moves replicas from the most to the least loaded node until every node is within 20 % of the fair share', () => {
    // Three nodes hold six equal partitions at R=2; D joins empty.
    const map = mapOf(2, [s(A), s(B)], [s(B), s(C)], [s(C), s(A)], [s(A), s(B)], [s(B), s(C)], [s(C), s(A)]);
    const v = view(map, [100, 100, 100, 100, 100, 100]);
    const moves = planRebalance(v);
    expect(moves.every((m) => m.to === D)).toBe(true);
    const loads = nodeLoads(v);
    for (const m of moves) {
      loads.set(m.from!, loads.get(m.from!)! - 100);
      loads.set(m.to!, loads.get(m.to!)! + 100);
    }
    expect(fairShare(loads).balanced).toBe(true);
    expect(moves.length).toBe(3);
    // One move per partition, and a replica only goes where its chain has none.
    expect(new Set(moves.map((m) => m.partition)).size).toBe(moves.length);
    for (const m of moves) expect(map.byId(m.partition)!.chain.some((r) => r.node === m.to)).toBe(false);
  });

  it('prefers a non-head replica on a tie, and never moves a replica bigger than the gap (that would only swap the imbalance)', () => {
    const map = mapOf(1, [s(A)], [s(A)]);
    expect(planRebalance(view(map, [100, 100], [A, B]))).toEqual([{ partition: 0, from: A, to: B }]);
    const one = mapOf(1, [s(A)]);
    expect(planRebalance(view(one, [100], [A, B]))).toEqual([]);
    const chained = mapOf(2, [s(A), s(B)], [s(B), s(A)]);
    // A and B each hold both partitions: a move to C takes the replica that is not the head.
    const moves = planRebalance(view(chained, [100, 100], [A, B, C]));
    expect(moves.length).toBeGreaterThan(0);
    expect(moves.every((m) => chained.byId(m.partition)!.node !== m.from)).toBe(true);
  });

  it('leaves draining nodes out (neither source of balance nor destination) and chains that are syncing or short', () => {
    const map = mapOf(2, [s(A), y(B)], [s(A), s(B)], [s(A)]);
    const moves = planRebalance(view(map, [100, 100, 100], [A, B, C, D], [D]));
    expect(moves.every((m) => m.to !== D && m.partition === 1)).toBe(true);
  });
});

describe('destinations and removals', () => {
  it('picks the least-loaded eligible node outside the chain, skipping draining and avoided nodes', () => {
    const map = mapOf(2, [s(A), s(B)], [s(C), s(A)]);
    const v = view(map, [100, 50], [A, B, C, D], [D]);
    expect(pickTarget(v, map.byId(0)!)).toBe(C);
    expect(pickTarget(v, map.byId(0)!, new Map(), new Set([C]))).toBeUndefined();
    expect(pickTarget(view(map, [100, 50]), map.byId(0)!)).toBe(D);
    // Bytes already on their way to D count against it.
    expect(pickTarget(view(map, [100, 50]), map.byId(0)!, new Map([[D, 500]]))).toBe(C);
  });

  it('lowering R removes a syncing replica first, else the most loaded serving one, never the head or the last serving one', () => {
    const map = mapOf(3, [s(A), s(B), s(C)], [s(C), s(D)], [s(C), s(A), y(B)], [s(D)]);
    const v = view(map, [100, 500, 100, 100]);
    expect(pickReplicaToRemove(v, map.byId(0)!)).toBe(C);
    expect(pickReplicaToRemove(v, map.byId(2)!)).toBe(B);
    expect(pickReplicaToRemove(v, map.byId(3)!)).toBeUndefined();
    expect(planSetReplicas(v, 1, [0])).toEqual([{ partition: 0, from: C }, { partition: 0, from: B }]);
    expect(planSetReplicas(v, 3)).toEqual([{ partition: 1 }, { partition: 3 }, { partition: 3 }]);
  });

  it('drains with one move off the node per replica it holds', () => {
    const map = mapOf(2, [s(A), s(B)], [s(B), s(C)], [s(C), s(A)]);
    expect(planDrain(view(map, [1, 1, 1]), A)).toEqual([{ partition: 0, from: A }, { partition: 2, from: A }]);
  });
});

describe('refusals', () => {
  const map = mapOf(2, [s(A), s(B)], [s(B), s(C)]);
  const v = view(map, [1, 1], [A, B, C, D], [D]);
  it('refuses a move of a missing partition, from a node outside the chain, to a node in it, unregistered or draining', () => {
    expect(refusal({ kind: 'move', partition: 9, from: A, to: C }, v)).toMatch(/no partition 9/);
    expect(refusal({ kind: 'move', partition: 0, from: C, to: D }, v)).toMatch(/has no replica on 127.0.0.1:7003/);
    expect(refusal({ kind: 'move', partition: 0, from: A, to: B }, v)).toMatch(/has a replica on 127.0.0.1:7002 already/);
    expect(refusal({ kind: 'move', partition: 0, from: A, to: '127.0.0.1:7999' }, v)).toMatch(/not registered/);
    expect(refusal({ kind: 'move', partition: 0, from: A, to: D }, v)).toMatch(/draining/);
    expect(refusal({ kind: 'move', partition: 0, from: A, to: A }, v)).toMatch(/same node/);
    expect(refusal({ kind: 'move', partition: 0, from: A, to: C }, v)).toBeUndefined();
  });

  it('refuses R above the live non-draining nodes, unknown partitions, and a drain with nowhere to go', () => {
    expect(refusal({ kind: 'set-replicas', replicas: 4 }, v)).toMatch(/4 replicas need 4 live nodes that are not draining, and there are 3/);
    expect(refusal({ kind: 'set-replicas', replicas: 3 }, v)).toBeUndefined();
    expect(refusal({ kind: 'set-replicas', replicas: 2, partitions: [5] }, v)).toMatch(/no partition 5/);
    expect(refusal({ kind: 'drain-node', node: A }, view(map, [1, 1], [A, B, C]))).toBeUndefined();
    expect(refusal({ kind: 'drain-node', node: A }, view(map, [1, 1], [A, B]))).toMatch(/needs a live node outside the chain of partition 0/);
  });
});

describe('map changes of a movement', () => {
  const map = mapOf(2, [s(A), s(B)], [s(B), s(C)]);
  it('adds a syncing tail and removes a replica (its successor heads), each epoch + 1 and version + 1', () => {
    const added = addSyncingTail(map, 0, C);
    expect(chains(added)).toEqual([['1', '2', '3*'], ['2', '3']]);
    expect([added.version, added.byId(0)!.epoch, added.byId(1)!.epoch]).toEqual([8, 4, 3]);
    const removed = removeReplica(added, 0, A);
    expect(chains(removed)).toEqual([['2', '3*'], ['2', '3']]);
    expect(removed.byId(0)!.node).toBe(B);
    expect(() => removeReplica(mapOf(1, [s(A), y(B)]), 0, A)).toThrow(/last serving replica/);
  });

  it('keeps a partition\'s own R through JSON and every later change; reconcile fills a chain up to it and never onto a draining node', () => {
    const own = setPartitionReplicas(map, 1, 3);
    expect(own.byId(1)!.epoch).toBe(3);
    const back = PartitionMap.fromJson(JSON.parse(JSON.stringify(own.toJson())));
    expect(back.equals(own)).toBe(true);
    expect(targetReplicas(back, back.byId(1)!)).toBe(3);
    expect(targetReplicas(back, back.byId(0)!)).toBe(2);
    expect(addSyncingTail(back, 0, C).byId(1)!.replicas).toBe(3);
    expect(chains(reconcile(back, new Set([A, B, C, D]), new Set([A]))!.map)).toEqual([['1', '2'], ['2', '3', '4*']]);
    expect(reconcile(back, new Set([A, B, C, D]), new Set([A, D]))).toBeUndefined();
    const flat = setMapReplicas(own, 3);
    expect(flat.replicas).toBe(3);
    expect(flat.partitions.every((p) => p.replicas === undefined)).toBe(true);
    expect(() => PartitionMap.fromJson({ ...own.toJson(), partitions: own.toJson().partitions.map((p) => ({ ...p, replicas: 0 })) })).toThrow(/replicas/);
  });
});

describe('movement limits', () => {
  it('counts running steps whose destination is still being added or syncing, across operations', () => {
    const step = { description: '', partition: 0, to: C };
    const a = record([{ ...step, state: 'running', phase: 'syncing' }, { ...step, state: 'running', phase: 'removing' }, { ...step, state: 'pending' }]);
    const b = record([{ ...step, state: 'running', phase: 'adding' }, { ...step, state: 'done' }, { description: '', partition: 1, from: A, state: 'running', phase: 'removing' }]);
    expect(movementsInFlight([a, b])).toBe(2);
  });
});
