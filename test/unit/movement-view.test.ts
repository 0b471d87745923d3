import { describe, expect, it } from 'vitest';
import { nodeDataShares, operationProgress, type PartitionView } from '../../metrics-server/index.js';
import type { OperationRecord, OperationStep } from '../../store/index.js';

const step = (over: Partial<OperationStep>): OperationStep => ({ description: 'move partition 1', partition: 1, state: 'pending', ...over });
const record = (steps: OperationStep[], state: OperationRecord['state'] = 'running'): OperationRecord => ({
  id: 'op-20261201-180000-abcdef',
  args: { kind: 'drain-node', node: '127.0.0.1:7001' },
  state,
  createdAtMs: 1000,
  updatedAtMs: 2000,
  limits: { maxMovements: 2, maxPauseMs: 2000 },
  steps,
  pauses: [],
});

function partition(id: number, logicalBytes: number | null, chain: Array<{ node: string; state: string; syncBytes?: number }>): PartitionView {
  return {
    id, start: '', end: '', startDisplay: '', endDisplay: '', node: chain[0]!.node, status: 'ok', entries: 0, logicalBytes, diskBytes: 0,
    lastWriteMs: null, sampledAtMs: null, ageMs: null, rates: null,
    chain: chain.map((r) => ({ node: r.node, state: r.state, up: true, lastSeq: 0, lagSequences: 0, unacked: 0, sync: r.syncBytes === undefined ? null : { rows: 0, bytes: r.syncBytes, totalRows: 0 } })),
  };
}

describe('operationProgress', () => {
  it('sums the steps: a done step counts whole, a running one as far as it got; ETA from the rate since the first step started', () => {
    const p = operationProgress(
      record([
        step({ state: 'done', bytesTotal: 1000, bytesDone: 900, rowsTotal: 10, startedAtMs: 10_000 }),
        step({ state: 'running', phase: 'syncing', bytesTotal: 3000, bytesDone: 1000, rowsTotal: 30, rowsDone: 10, startedAtMs: 15_000 }),
        step({ state: 'pending', description: 'move partition 2' }),
      ]),
      20_000,
    );
    expect(p).toMatchObject({ bytesDone: 2000, bytesTotal: 4000, rowsDone: 20, rowsTotal: 40, steps: 3, stepsDone: 1, current: 'move partition 1: syncing' });
    // 2000 bytes in 10 s: 2000 left take 10 s.
    expect(p.etaSeconds).toBe(10);
  });

  it('no sizes yet: totals and ETA are null; a finished operation has no ETA; skipped and failed steps count as finished', () => {
    expect(operationProgress(record([step({ state: 'running', startedAtMs: 0 })]), 5000)).toMatchObject({ bytesTotal: null, rowsTotal: null, etaSeconds: null, bytesDone: 0 });
    const done = operationProgress(record([step({ state: 'done', bytesTotal: 10, startedAtMs: 0 }), step({ state: 'skipped' }), step({ state: 'failed' })], 'completed'), 5000);
    expect(done).toMatchObject({ stepsDone: 3, etaSeconds: null, bytesDone: 10, bytesTotal: 10 });
  });
});

describe('nodeDataShares', () => {
  it('each serving replica counts its partition\'s bytes, a syncing one what it copied (at most the partition\'s), unread partitions count 0', () => {
    const shares = nodeDataShares([
      partition(0, 600, [{ node: 'a:1', state: 'serving' }, { node: 'b:1', state: 'serving' }]),
      partition(1, 400, [{ node: 'b:1', state: 'serving' }, { node: 'c:1', state: 'syncing', syncBytes: 100 }]),
      partition(2, null, [{ node: 'c:1', state: 'serving' }]),
      partition(3, 50, [{ node: 'a:1', state: 'serving' }, { node: 'c:1', state: 'syncing', syncBytes: 999 }]),
    ]);
    expect(shares.map((s) => [s.node, s.bytes, s.replicas])).toEqual([['a:1', 650, 2], ['b:1', 1000, 2], ['c:1', 150, 3]]);
    expect(shares.reduce((s, n) => s + n.share, 0)).toBeCloseTo(1, 12);
    expect(shares[1]!.share).toBeCloseTo(1000 / 1800, 12);
  });

  it('an empty cluster has shares of 0, not NaN', () => {
    expect(nodeDataShares([partition(0, 0, [{ node: 'a:1', state: 'serving' }])])).toEqual([{ node: 'a:1', bytes: 0, share: 0, replicas: 1 }]);
  });
});
