import { describe, expect, it } from 'vitest';
import { StoreError, checkOperation, checkOperationId, checkOperationLimits, checkedOperationArgs, PartitionMap, type OperationArgs, type OperationRecord } from '../../store/index.js';
import { operationLine, operationProgress, operationProgressEvent } from '../../cli/operation-view.js';
import { parseByteRate } from '../../cli/cluster-operations.js';

const A = '127.0.0.1:7001';
const B = '127.0.0.1:7002';
const C = '127.0.0.1:7003';
const D = '127.0.0.1:7004';
const b = (s: string): Buffer => Buffer.from(s, 'utf8');

// Partitions 0 [-∞, g), 1 [g, p), 2 [p, +∞) on chains of two over A, B, C.
const map = PartitionMap.create(
  5,
  [
    { id: 0, start: Buffer.alloc(0), end: b('g'), chain: [{ node: A, state: 'serving' }, { node: B, state: 'serving' }] },
    { id: 1, start: b('g'), end: b('p'), chain: [{ node: B, state: 'serving' }, { node: C, state: 'serving' }] },
    { id: 2, start: b('p'), end: Buffer.alloc(0), chain: [{ node: C, state: 'serving' }, { node: A, state: 'serving' }] },
  ],
  { replicas: 2 },
);
const ctx = { map, nodes: new Set([A, B, C, D]), draining: new Set<string>() };

function refusal(args: OperationArgs, context = ctx): StoreError {
  try {
    checkOperation(args, context);
  } catch (err) {
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_OPERATION_INVALID');
    return err as StoreError;
  }
  throw new Error(`${JSON.stringify(args)} was accepted`);
}

describe('checkOperation refuses arguments that do not fit the cluster, naming what is wrong', () => {
  it('move: the partition, the source, the destination', () => {
    expect(refusal({ kind: 'move', partition: 9, from: A, to: D }).message).toBe('partition 9 does not exist: map version 5 has partitions 0, 1, 2');
    expect(refusal({ kind: 'move', partition: 1, from: A, to: D }).message).toMatch(/^--from 127\.0\.0\.1:7001 holds no replica of partition 1 \(chain: 127\.0\.0\.1:7002 serving → 127\.0\.0\.1:7003 serving\)/);
    expect(refusal({ kind: 'move', partition: 1, from: B, to: C }).message).toMatch(/^--to 127\.0\.0\.1:7003 holds a replica of partition 1 already/);
    expect(refusal({ kind: 'move', partition: 1, from: B, to: '127.0.0.1:7999' }).message).toMatch(/^--to 127\.0\.0\.1:7999 is not a registered node \(registered: 127\.0\.0\.1:7001, 127\.0\.0\.1:7002, 127\.0\.0\.1:7003, 127\.0\.0\.1:7004\)/);
    expect(refusal({ kind: 'move', partition: 1, from: B, to: B }).message).toMatch(/both 127\.0\.0\.1:7002/);
    expect(refusal({ kind: 'move', partition: 1, from: B, to: D }, { ...ctx, draining: new Set([D]) }).message).toMatch(/--to 127\.0\.0\.1:7004 is being drained/);
    expect(() => checkOperation({ kind: 'move', partition: 1, from: B, to: D }, ctx)).not.toThrow();
  });

  it('split: the key strictly inside the range, one of key and auto', () => {
    const hex = (s: string): string => b(s).toString('hex');
    expect(refusal({ kind: 'split', partition: 1, at: hex('g') }).message).toMatch(/^split key g is not strictly inside partition 1's range \[g, p\)/);
    expect(refusal({ kind: 'split', partition: 1, at: hex('p') }).message).toMatch(/not strictly inside/);
    expect(refusal({ kind: 'split', partition: 1, at: hex('a') }).message).toMatch(/not strictly inside/);
    expect(refusal({ kind: 'split', partition: 1 }).message).toMatch(/either a key .* or --auto/);
    expect(refusal({ kind: 'split', partition: 1, at: hex('h'), auto: true }).message).toMatch(/not both/);
    expect(refusal({ kind: 'split', partition: 1, at: hex('h'), newPartition: 2 }).message).toBe('the new partition\'s id 2 is taken');
    expect(() => checkOperation({ kind: 'split', partition: 1, at: hex('h') }, ctx)).not.toThrow();
    expect(() => checkOperation({ kind: 'split', partition: 2, at: hex('zzz') }, ctx)).not.toThrow();
    expect(() => checkOperation({ kind: 'split', partition: 0, auto: true }, ctx)).not.toThrow();
  });

  it('merge: neighbours only, two distinct existing partitions', () => {
    expect(refusal({ kind: 'merge', partitions: [0, 2] }).message).toBe('partitions 0 and 2 are not neighbours: 0 is [-∞, g), 2 is [p, +∞); only adjacent ranges merge');
    expect(refusal({ kind: 'merge', partitions: [1, 1] }).message).toBe('cannot merge partition 1 with itself');
    expect(refusal({ kind: 'merge', partitions: [1, 7] }).message).toMatch(/^partition 7 does not exist/);
    expect(() => checkOperation({ kind: 'merge', partitions: [2, 1] }, ctx)).not.toThrow();
  });

  it('set-replicas: R within the live nodes, partitions that exist, none twice', () => {
    expect(refusal({ kind: 'set-replicas', replicas: 5 }).message).toMatch(/^R 5 needs 5 live nodes for distinct replicas, but 4 are registered and not draining/);
    expect(refusal({ kind: 'set-replicas', replicas: 4 }, { ...ctx, draining: new Set([D]) }).message).toMatch(/^R 4 needs 4 live nodes .* but 3 are/);
    expect(refusal({ kind: 'set-replicas', replicas: 2, partitions: [1, 4] }).message).toMatch(/^partition 4 does not exist/);
    expect(refusal({ kind: 'set-replicas', replicas: 2, partitions: [1, 1] }).message).toBe('--partitions names partition 1 twice');
    expect(() => checkOperation({ kind: 'set-replicas', replicas: 3, partitions: [0, 2] }, ctx)).not.toThrow();
  });

  it('drain-node: a known node, and enough live nodes left for the chains', () => {
    expect(refusal({ kind: 'drain-node', node: '127.0.0.1:7999' }).message).toMatch(/^127\.0\.0\.1:7999 is neither registered nor in any chain/);
    const three = { ...ctx, nodes: new Set([A, B]) };
    expect(refusal({ kind: 'drain-node', node: A }, three).message).toMatch(/^draining 127\.0\.0\.1:7001 would leave 1 live node \(127\.0\.0\.1:7002\) for chains of 2 replicas/);
    expect(() => checkOperation({ kind: 'drain-node', node: A }, ctx)).not.toThrow();
    // A registered node that holds nothing can be marked (it then shows as drained).
    expect(() => checkOperation({ kind: 'drain-node', node: D }, ctx)).not.toThrow();
  });

  it('checks the argument shape, ids and limits from outside, naming the field', () => {
    const bad = (value: unknown): string => {
      try {
        checkedOperationArgs(value);
      } catch (err) {
        expect((err as StoreError).code).toBe('STORE_OPERATION_INVALID');
        return (err as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad({ kind: 'move', partition: -1, from: A, to: D })).toMatch(/partition: /);
    expect(bad({ kind: 'move', partition: 1, from: 'nohost', to: D })).toMatch(/from: node must be HOST:PORT/);
    expect(bad({ kind: 'set-replicas', replicas: 17 })).toMatch(/replicas: /);
    expect(bad({ kind: 'split', partition: 1, at: 'xyz' })).toMatch(/at: a key must be hex bytes/);
    expect(bad({ kind: 'explode' })).toMatch(/^invalid operation arguments: kind: /);
    expect(() => checkOperationId('op-20261201-180512-3fa9c1')).not.toThrow();
    expect(() => checkOperationId('../../map')).toThrow(/is not an operation id/);
    expect(() => checkOperationId(`op-${'a'.repeat(80)}`)).toThrow(/is not an operation id/);
    expect(() => checkOperationLimits({ maxMovements: 0 })).toThrow('maxMovements must be 1–64, got 0');
    expect(() => checkOperationLimits({ maxPauseMs: 600_001 })).toThrow('maxPauseMs must be 1–600000, got 600001');
    expect(() => checkOperationLimits({ maxBytesPerSecond: 0.5 })).toThrow(/maxBytesPerSecond must be 1–/);
  });

  it('parses --max-bytes-per-second rates', () => {
    expect(parseByteRate('50MB')).toBe(50_000_000);
    expect(parseByteRate('10MiB')).toBe(10 * 1024 * 1024);
    expect(parseByteRate('2000000')).toBe(2_000_000);
    expect(parseByteRate('1.5kb/s')).toBe(1500);
    expect(() => parseByteRate('fast')).toThrow(/must be a rate like 50MB/);
    expect(() => parseByteRate('0')).toThrow(/at least 1 byte\/s/);
  });
});

describe('operation progress', () => {
  const now = 1_000_000;
  const record: OperationRecord = {
    id: 'op-20261201-180512-3fa9c1',
    args: { kind: 'drain-node', node: A },
    state: 'running',
    createdAtMs: now - 60_000,
    updatedAtMs: now,
    limits: { maxMovements: 2, maxPauseMs: 2000 },
    steps: [
      { description: 'move partition 0 from A to D', partition: 0, state: 'done', bytesDone: 4000, bytesTotal: 4000, rowsDone: 40, rowsTotal: 40 },
      { description: 'move partition 2 from A to D', partition: 2, state: 'running', phase: 'syncing', bytesDone: 2000, bytesTotal: 10_000, rowsDone: 20, rowsTotal: 100, startedAtMs: now - 2000 },
      { description: 'move partition 3 from A to B', partition: 3, state: 'pending' },
    ],
    pauses: [{ partition: 0, ms: 12, atMs: now - 30_000, reason: 'head hand-over' }, { partition: 2, ms: 40, atMs: now - 1000, reason: 'head hand-over' }],
  };

  it('sums bytes and rows, rates the running step, and counts pauses', () => {
    expect(operationProgress(record, now)).toEqual({
      stepsDone: 1,
      steps: 3,
      current: { index: 2, description: 'move partition 2 from A to D', phase: 'syncing' },
      bytesDone: 6000,
      bytesTotal: 14_000,
      rowsDone: 60,
      rowsTotal: 140,
      bytesPerSecond: 1000,
      etaSeconds: 8,
      pauses: 2,
      maxPauseMs: 40,
    });
    expect(operationLine(record, now)).toBe('op-20261201-180512-3fa9c1 running  step 2/3 syncing  6 kB/14 kB  60/140 rows  1 kB/s  ETA 8s  pauses 2 (max 40 ms)  move partition 2 from A to D');
    expect(operationProgressEvent(record, now)).toMatchObject({ event: 'operation-progress', operation: record.id, kind: 'drain-node', state: 'running', step: 2, steps: 3, phase: 'syncing', bytesDone: 6000, bytesTotal: 14_000, bytesPerSecond: 1000, etaSeconds: 8 });
  });

  it('has no rate or ETA before anything runs', () => {
    const pending = { ...record, state: 'pending' as const, steps: [], pauses: [] };
    expect(operationProgress(pending, now)).toMatchObject({ steps: 0, bytesPerSecond: 0, etaSeconds: undefined, pauses: 0 });
    expect(operationLine({ ...pending, message: 'submitted against map version 5' }, now)).toBe('op-20261201-180512-3fa9c1 pending  submitted against map version 5');
  });
});
