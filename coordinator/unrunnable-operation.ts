import type { OperationRecord } from '../store/index.js';
import type { OperationRunner } from './operation-runner.js';

/**
 * What the leading coordinator does with an operation whose kind none of its runners carries out.
 * One that nothing was done for yet (no steps) is ended, so that its command and a `cluster cancel`
 * do not wait forever: pending → `failed` (STORE_OPERATION_REFUSED, naming the kinds this
 * coordinator runs), cancelling → `cancelled`. One with steps was started by a coordinator that
 * had such a runner: it is left as it is (undefined) for a leader that has one.
 */
export function endUnrunnable(op: OperationRecord, runners: readonly OperationRunner[], nowMs: number): OperationRecord | undefined {
  if (op.steps.length > 0) return undefined;
  const kinds = [...new Set(runners.flatMap((r) => r.kinds))].join(', ');
  const why = `the leading coordinator carries out no ${op.args.kind} operations (it runs ${kinds})`;
  if (op.state === 'pending') return { ...op, state: 'failed', error: `STORE_OPERATION_REFUSED: ${why}`, message: `refused: ${why}`, updatedAtMs: nowMs, finishedAtMs: nowMs };
  if (op.state === 'cancelling') return { ...op, state: 'cancelled', message: `nothing was changed: ${why}`, updatedAtMs: nowMs, finishedAtMs: nowMs };
  return undefined;
}
