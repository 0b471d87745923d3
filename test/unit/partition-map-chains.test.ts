import { describe, expect, it } from 'vitest';
import { PartitionMap, StoreError, type PartitionSpec } from '../../store/index.js';

const A = '127.0.0.1:7001';
const B = '127.0.0.1:7002';
const whole = { id: 0, start: Buffer.alloc(0), end: Buffer.alloc(0) };

function invalid(spec: PartitionSpec, replicas = 2): string {
  try {
    PartitionMap.create(1, [spec], { replicas });
  } catch (err) {
    expect((err as StoreError).code).toBe('STORE_INVALID_MAP');
    return (err as Error).message;
  }
  throw new Error('accepted');
}

describe('PartitionMap chains', () => {
  it('a static map (no chains) is a chain of one serving replica at epoch 1, and writes the file form it always had', () => {
    const json = { version: 3, partitions: [{ id: 0, start: '', end: '6d', node: A }, { id: 1, start: '6d', end: '', node: B }] };
    const map = PartitionMap.fromJson(json);
    expect(map.replicas).toBe(1);
    expect(map.partitions.map((p) => [p.chain, p.epoch])).toEqual([[[{ node: A, state: 'serving' }], 1], [[{ node: B, state: 'serving' }], 1]]);
    expect(map.toJson()).toEqual(json);
    expect(PartitionMap.fromProto(map.toProto()).equals(map)).toBe(true);
  });

  it('chains, epochs and the replication factor round-trip through JSON and the proto; equals compares them', () => {
    const map = PartitionMap.create(5, [{ ...whole, chain: [{ node: A, state: 'serving' }, { node: B, state: 'syncing' }], epoch: 9 }], { replicas: 2 });
    expect(map.partitions[0]!.node).toBe(A);
    expect(PartitionMap.fromJson(map.toJson()).equals(map)).toBe(true);
    expect(PartitionMap.fromProto(map.toProto()).equals(map)).toBe(true);
    const otherEpoch = PartitionMap.create(5, [{ ...whole, chain: map.partitions[0]!.chain, epoch: 10 }], { replicas: 2 });
    expect(otherEpoch.equals(map)).toBe(false);
    const otherState = PartitionMap.create(5, [{ ...whole, chain: [{ node: A, state: 'serving' }, { node: B, state: 'serving' }], epoch: 9 }], { replicas: 2 });
    expect(otherState.equals(map)).toBe(false);
    expect(map.replicasOf(B).map((p) => p.id)).toEqual([0]);
    expect(map.partitionsOf(B)).toEqual([]);
    expect(map.replicaNodes()).toEqual([A, B]);
  });

  it('refuses chains that break the invariants, naming the partition', () => {
    expect(invalid({ ...whole, chain: [] })).toBe('invalid partition map: partition 0: a chain needs at least one replica');
    expect(invalid({ ...whole, chain: [{ node: A, state: 'serving' }, { node: A, state: 'syncing' }] })).toBe(`invalid partition map: partition 0: node ${A} is in its chain twice`);
    expect(invalid({ ...whole, chain: [{ node: A, state: 'syncing' }] })).toBe(`invalid partition map: partition 0: the head ${A} must be serving, is syncing`);
    expect(invalid({ ...whole, chain: [{ node: A, state: 'serving' }, { node: B, state: 'syncing' }, { node: '127.0.0.1:7003', state: 'serving' }] }, 3)).toBe(
      'invalid partition map: partition 0: serving replica 127.0.0.1:7003 comes after a syncing one (syncing replicas are the tail)',
    );
    expect(invalid({ ...whole, node: B, chain: [{ node: A, state: 'serving' }] })).toBe(`invalid partition map: partition 0: node "${B}" is not the head of its chain ("${A}")`);
    expect(invalid({ ...whole, chain: [{ node: A, state: 'serving' }], epoch: 0 })).toBe('invalid partition map: partition 0: epoch must be a whole number of 1 or more, got 0');
    expect(invalid({ ...whole, node: A }, 17)).toBe('invalid partition map: replicas must be 1–16, got 17');
  });

  it('refuses a replica state the proto does not define', () => {
    const proto = PartitionMap.create(1, [{ ...whole, node: A }]).toProto();
    proto.partitions[0]!.chain = [{ node: A, state: 3 }];
    expect(() => PartitionMap.fromProto(proto)).toThrow(`invalid partition map: replica ${A}: state must be 0–2 (1 serving, 2 syncing), got 3`);
  });
});
