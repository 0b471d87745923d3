import { describe, expect, it } from 'vitest';
import { MovementRunner, endUnrunnable } from '../../coordinator/index.js';
import type { OperationRecord } from '../../store/index.js';

const base: OperationRecord = {
  id: 'op-20261201-190000-abcdef',
  args: { kind: 'split', partition: 1, at: '61' },
  state: 'pending',
  createdAtMs: 1000,
  updatedAtMs: 1000,
  requestedBy: 'test',
  limits: { maxMovements: 2, maxPauseMs: 2000 },
  steps: [],
  pauses: [],
};

// A coordinator started with only the movement runner (CoordinatorOptions.runners), as an older build would be.
const runners = [new MovementRunner()];

describe('endUnrunnable: an operation of a kind no runner of the leading coordinator carries out', () => {
  it('pending with no steps: failed with STORE_OPERATION_REFUSED naming the kinds this coordinator runs', () => {
    const ended = endUnrunnable(base, runners, 5000)!;
    expect(ended).toMatchObject({ state: 'failed', finishedAtMs: 5000, error: 'STORE_OPERATION_REFUSED: the leading coordinator carries out no split operations (it runs move, drain-node, set-replicas, rebalance)' });
  });

  it('cancelling with no steps: cancelled, saying nothing was changed', () => {
    const ended = endUnrunnable({ ...base, state: 'cancelling' }, runners, 5000)!;
    expect(ended.state).toBe('cancelled');
    expect(ended.error).toBeUndefined();
    expect(ended.message).toMatch(/^nothing was changed: /);
  });

  it('one with steps (started by a coordinator that had the runner) is left for a leader that has one', () => {
    const started: OperationRecord = { ...base, state: 'running', steps: [{ description: 'cut partition 1', partition: 1, state: 'running' }] };
    expect(endUnrunnable(started, runners, 5000)).toBeUndefined();
    expect(endUnrunnable({ ...started, state: 'cancelling' }, runners, 5000)).toBeUndefined();
  });
});
