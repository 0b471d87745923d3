import { isFinalOperationState, targetReplicas, type EtcdMovementMarks, type OperationKind, type OperationRecord, type OperationStep, type PartitionMap } from '../store/index.js';
import { addSyncingTail, isMovement, movementsInFlight, partitionBytes, pickTarget, planDrain, planRebalance, planSetReplicas, refusal, removeReplica, setMapReplicas, setPartitionReplicas, type ClusterView, type PlannedStep } from './movement-plan.js';
import { MAX_CUT_ATTEMPTS } from './split-plan.js';
import { clearPause, pauseAfterCommit, pauseHead, type HeadPauseTarget } from './head-pause.js';
import type { OperationAdvance, OperationContext, OperationRunner } from './operation-runner.js';

/** A destination whose sync reported `failed` this many times (distinct attempts) fails its step. */
export const MAX_SYNC_FAILURES = 5;

/** A step that asks to be advanced again after a back-off (a released head hand-over). */
interface Backoff {
  retryAfterMs: number;
}

/**
 * Carries out `move`, `drain-node`, `set-replicas` and `rebalance` (README "Live data movement").
 * Every step is add → wait → remove, each sub-step derived from the map so a coordinator killed
 * between writing the map and writing the record finds it done on the next pass:
 * - `adding` (recorded before the map changes, with its destination fixed): `to` is not in the
 *   chain → it is added as a syncing tail (epoch + 1); it is → the step goes on to `syncing`;
 * - `syncing`: waits until the existing sync and promotion made `to` serving (progress from its
 *   `syncs/P/NODE` report); `to` leaving the chain, or its sync failing MAX_SYNC_FAILURES times, fails the step;
 * - `removing`: `from` is in the chain → removed (epoch + 1); a `from` that heads the chain goes
 *   through `handing over` first: the head hand-over pause (head-pause.ts, as a split's cut) —
 *   `pause/P`, the head's `paused` answer, the removal committed guarded by that answer, the
 *   measured pause recorded once the old head released its held writes (they answer STORE_NOT_OWNER
 *   and go to the new head); a released pause is retried after a back-off, MAX_CUT_ATTEMPTS times.
 * A failed or cancelled operation rolls back its running steps: a `to` this operation added is
 * removed unless `from` is gone already (then the step had finished), the rest are `skipped`.
 */
export class MovementRunner implements OperationRunner {
  readonly kinds: readonly OperationKind[] = ['move', 'drain-node', 'set-replicas', 'rebalance'];
  readonly watchPrefixes = ['paused/'] as const;
  /** Failed sync attempts seen per step (`op/partition/node`), by the attempt's start time. */
  private readonly syncFailures = new Map<string, Set<number>>();

  async advance(op: OperationRecord, ctx: OperationContext): Promise<OperationAdvance | undefined> {
    const marks = ctx.marks;
    if (marks === undefined) throw new TypeError('the movement runner needs OperationContext.marks (the coordinator passes them)');
    const [drainMarks, reports, all] = await Promise.all([marks.drainMarks(), ctx.maps.replicationReports(), ctx.operations.list()]);
    const view: ClusterView = { map: ctx.map, live: new Set(ctx.nodes.keys()), draining: new Set(drainMarks.keys()), bytes: partitionBytes(reports) };
    const rec = structuredClone(op);
    const now = ctx.nowMs;

    if (rec.state === 'pending') {
      const why = refusal(rec.args, view);
      if (why !== undefined) {
        rec.state = 'failed';
        rec.error = `STORE_OPERATION_REFUSED: ${why}`;
        rec.message = `refused: ${why}`;
        rec.finishedAtMs = now;
        return { record: rec };
      }
      if (rec.args.kind === 'drain-node') {
        const identity = ctx.nodes.get(rec.args.node)?.identity;
        await marks.markDraining({ node: rec.args.node, operation: rec.id, ...(identity === undefined ? {} : { identity }), markedAtMs: now });
      }
      rec.steps = this.plan(rec, view).map((s) => newStep(rec, s));
      rec.state = 'running';
      rec.message = rec.steps.length === 0 ? 'nothing to move' : `planned ${rec.steps.length} step${rec.steps.length === 1 ? '' : 's'}`;
      return { record: rec };
    }

    if (rec.state === 'cancelling' || rec.error !== undefined) return this.rollBack(rec, ctx, marks);

    for (const step of rec.steps.filter((s) => s.state === 'running')) {
      const map = await this.advanceStep(step, rec, ctx, view, marks);
      if (step.error !== undefined) {
        rec.error = `STORE_MOVE_FAILED: ${step.error}`;
        rec.message = `failed: ${step.error}; rolling back`;
        return { record: rec };
      }
      if (map === 'changed') return { record: withMessage(rec) };
      if (map !== undefined && 'retryAfterMs' in map) return { record: withMessage(rec), retryAfterMs: map.retryAfterMs };
      if (map !== undefined) return { map, record: withMessage(rec) };
    }

    const others = all.operations.map((o) => o.record).filter((o) => o.id !== rec.id && !isFinalOperationState(o.state));
    let movements = movementsInFlight([...others, rec]);
    const planned = new Map<string, number>();
    for (const s of rec.steps) if (isMovement(s) && s.phase === 'adding') planned.set(s.to!, (planned.get(s.to!) ?? 0) + (view.bytes.get(s.partition) ?? 0));
    for (const step of rec.steps.filter((s) => s.state === 'pending')) {
      const p = ctx.map.byId(step.partition);
      if (p === undefined) {
        step.state = 'skipped';
        step.error = `partition ${step.partition} is no longer in the map`;
        continue;
      }
      const adds = !(rec.args.kind === 'set-replicas' && step.from !== undefined);
      if (adds && movements >= rec.limits.maxMovements) break;
      if (step.from !== undefined && !p.chain.some((r) => r.node === step.from)) {
        // The replica left by itself (its node died): nothing to move off it.
        step.state = 'skipped';
        step.error = `${step.from} no longer holds a replica of partition ${step.partition}`;
        continue;
      }
      if (adds) {
        if (rec.args.kind === 'rebalance' && step.to !== undefined && (!view.live.has(step.to) || view.draining.has(step.to))) {
          // Planned when it was eligible; a rebalance does not insist on a node that left or is draining.
          step.state = 'skipped';
          step.error = `${step.to} is no longer a live node that is not draining`;
          continue;
        }
        if (step.to !== undefined && p.chain.some((r) => r.node === step.to)) {
          step.state = 'skipped';
          step.error = `${step.to} holds a replica of partition ${step.partition} already`;
          continue;
        }
        const avoid = new Set(rec.steps.filter((s) => s.partition === step.partition && s.state === 'running' && s.to !== undefined).map((s) => s.to!));
        const to = step.to ?? pickTarget(view, p, planned, avoid);
        if (to === undefined) {
          step.state = 'running';
          step.error = `partition ${step.partition}: no live node outside its chain that is not draining to place a replica on`;
          rec.error = `STORE_MOVE_FAILED: ${step.error}`;
          rec.message = `failed: ${step.error}; rolling back`;
          return { record: rec };
        }
        step.to = to;
        step.description = describe(rec.args.kind, step);
        step.phase = 'adding';
        movements++;
        planned.set(to, (planned.get(to) ?? 0) + (view.bytes.get(step.partition) ?? 0));
      } else {
        step.phase = 'removing';
      }
      step.state = 'running';
      step.startedAtMs = now;
    }

    if (rec.steps.every((s) => s.state !== 'pending' && s.state !== 'running')) {
      if (rec.args.kind === 'drain-node') {
        const node = rec.args.node;
        const left = ctx.map.replicasOf(node).filter((p) => !rec.steps.some((s) => s.partition === p.id && s.state === 'pending'));
        // A replica can stay (a step skipped because the chain changed under it): plan it again, a bounded number of times.
        if (left.length > 0 && rec.steps.length < 4 * Math.max(1, ctx.map.partitions.length)) {
          rec.steps.push(...left.map((p) => newStep(rec, { partition: p.id, from: node })));
          return { record: withMessage(rec) };
        }
        if (left.length > 0) {
          rec.error = `STORE_MOVE_FAILED: ${node} still holds replicas of partitions ${left.map((p) => p.id).join(', ')} after ${rec.steps.length} steps`;
          return { record: rec };
        }
      }
      if (rec.args.kind === 'set-replicas' && rec.args.partitions !== undefined) {
        // Chains that had R already (no step) still take it as their own, one map change per pass.
        const R = rec.args.replicas;
        const unset = rec.args.partitions.map((id) => ctx.map.byId(id)).find((p) => p !== undefined && p.replicas !== R);
        if (unset !== undefined) return { map: setPartitionReplicas(ctx.map, unset.id, R), record: withMessage(rec) };
      }
      rec.state = 'completed';
      rec.finishedAtMs = now;
      rec.message = summary(rec);
      if (rec.args.kind === 'set-replicas' && rec.args.partitions === undefined) {
        const R = rec.args.replicas;
        if (ctx.map.replicas !== R || ctx.map.partitions.some((p) => p.replicas !== undefined)) return { map: setMapReplicas(ctx.map, R), record: rec };
      }
      return { record: rec };
    }
    const next = withMessage(rec);
    return JSON.stringify(next) === JSON.stringify(op) ? undefined : { record: next };
  }

  private plan(rec: OperationRecord, view: ClusterView): PlannedStep[] {
    const args = rec.args;
    switch (args.kind) {
      case 'move':
        return [{ partition: args.partition, from: args.from, to: args.to }];
      case 'drain-node':
        return planDrain(view, args.node);
      case 'set-replicas':
        return planSetReplicas(view, args.replicas, args.partitions);
      case 'rebalance':
        return planRebalance(view);
      default:
        return [];
    }
  }

  /** One sub-step of a running step; the map it needs, if any. Sets `step.error` when the step fails. */
  private async advanceStep(step: OperationStep, rec: OperationRecord, ctx: OperationContext, view: ClusterView, marks: EtcdMovementMarks): Promise<PartitionMap | 'changed' | Backoff | undefined> {
    const p = ctx.map.byId(step.partition);
    const fail = (why: string): undefined => {
      step.error = why;
      step.phase = 'rolling back';
      return undefined;
    };
    if (p === undefined) return fail(`partition ${step.partition} is no longer in the map`);
    const replicaOf = (node: string | undefined) => (node === undefined ? undefined : p.chain.find((r) => r.node === node));
    if (step.phase === 'adding') {
      const to = step.to!;
      if (replicaOf(to) === undefined) {
        if (!ctx.nodes.has(to)) return fail(`partition ${p.id}: destination ${to} is not registered (no live node there)`);
        if (view.draining.has(to)) return fail(`partition ${p.id}: destination ${to} is draining`);
        if (rec.limits.maxBytesPerSecond !== undefined) await marks.setThrottle(p.id, to, { maxBytesPerSecond: rec.limits.maxBytesPerSecond, operation: rec.id });
        step.phase = 'syncing';
        return addSyncingTail(ctx.map, p.id, to);
      }
      step.phase = 'syncing';
    }
    if (step.phase === 'syncing') {
      const to = step.to!;
      const replica = replicaOf(to);
      if (replica === undefined) return fail(`partition ${p.id}: destination ${to} left the chain before its copy finished (its lease ran out: the node stopped or lost etcd)`);
      if (replica.state === 'syncing') {
        const report = ctx.syncs.find((s) => s.partition === p.id && s.node === to);
        const total = view.bytes.get(p.id);
        if (total !== undefined) step.bytesTotal = total;
        if (report !== undefined) {
          step.rowsDone = report.rows;
          step.bytesDone = report.bytes;
          step.rowsTotal = report.totalRows;
          if (report.state === 'failed') {
            const key = `${rec.id}/${p.id}/${to}`;
            const seen = this.syncFailures.get(key) ?? new Set<number>();
            seen.add(report.startedAtMs);
            this.syncFailures.set(key, seen);
            if (seen.size >= MAX_SYNC_FAILURES) return fail(`partition ${p.id}: the sync on destination ${to} failed ${seen.size} times, last: ${report.error ?? 'no error given'}`);
          }
        }
        return undefined;
      }
      this.syncFailures.delete(`${rec.id}/${p.id}/${to}`);
      if (rec.limits.maxBytesPerSecond !== undefined) await marks.clearThrottle(p.id, to);
      if (step.rowsTotal !== undefined) step.rowsDone = step.rowsTotal;
      if (step.bytesTotal !== undefined) step.bytesDone = step.bytesTotal;
      if (step.from === undefined) {
        step.state = 'done';
        step.finishedAtMs = ctx.nowMs;
        step.phase = undefined;
        // set-replicas raising: the chain's own R follows once its new replica serves.
        if (rec.args.kind === 'set-replicas' && p.replicas !== rec.args.replicas && p.chain.length >= rec.args.replicas) return setPartitionReplicas(ctx.map, p.id, rec.args.replicas);
        return undefined;
      }
      step.phase = 'removing';
    }
    if (step.phase === 'handing over') return this.handOver(step, rec, ctx);
    if (step.phase === 'removing') {
      const from = step.from!;
      const R = rec.args.kind === 'set-replicas' ? rec.args.replicas : undefined;
      step.state = 'done';
      step.finishedAtMs = ctx.nowMs;
      step.phase = undefined;
      if (replicaOf(from) !== undefined) {
        if (rec.args.kind === 'rebalance' && p.chain.length - 1 < targetReplicas(ctx.map, p)) {
          // Another replica left while this one copied: removing the source would only make reconcile add one back.
          step.phase = undefined;
          step.description = `${step.description} (kept ${from}: the chain lost another replica meanwhile)`;
          return undefined;
        }
        if (!p.chain.some((r) => r.node !== from && r.state === 'serving')) {
          step.state = 'running';
          step.finishedAtMs = undefined;
          return fail(`partition ${p.id}: ${from} holds its only serving replica, which cannot be removed`);
        }
        if (p.node === from) {
          // The head goes: hand over with a bounded write pause instead of cutting off its writes in flight.
          step.state = 'running';
          step.finishedAtMs = undefined;
          step.phase = 'handing over';
          return this.handOver(step, rec, ctx);
        }
        return removeReplica(ctx.map, p.id, from, R !== undefined && p.replicas !== R ? R : undefined);
      }
      if (R !== undefined && p.replicas !== R) return setPartitionReplicas(ctx.map, p.id, R);
    }
    return undefined;
  }

  /**
   * The removal of a source that heads the chain (README "Live data movement"): the head holds
   * writes of P until every forward is acknowledged and answers `paused`; the removal is committed
   * guarded by that answer (so it never meets a write the head let go on); once the old head
   * installed the map and released its held writes (STORE_NOT_OWNER: the clients go to the new
   * head), the measured pause goes into `pauses` and the step is done.
   */
  private async handOver(step: OperationStep, rec: OperationRecord, ctx: OperationContext): Promise<PartitionMap | 'changed' | Backoff | undefined> {
    const p = ctx.map.byId(step.partition)!;
    const from = step.from!;
    const R = rec.args.kind === 'set-replicas' ? rec.args.replicas : undefined;
    if (!p.chain.some((r) => r.node === from)) {
      // Committed (by this step, or `from` left by itself): wait for the old head's measured release, then done.
      const released = await pauseAfterCommit(ctx.etcd, rec, p.id);
      if (released === 'held' && ctx.nodes.has(from)) return undefined;
      if (released !== undefined && released !== 'held') rec.pauses = [...rec.pauses, { partition: p.id, ms: released.ms ?? 0, atMs: released.heldAtMs, reason: `head hand-over (${released.heldWrites ?? 0} writes held)` }];
      await clearPause(ctx.etcd, p.id, rec.id);
      step.state = 'done';
      step.finishedAtMs = ctx.nowMs;
      step.phase = undefined;
      if (R !== undefined && p.replicas !== R) return setPartitionReplicas(ctx.map, p.id, R);
      return 'changed';
    }
    if (p.node !== from) {
      // The chain changed under the hand-over (its head left or moved): `from` is no longer head, a plain removal follows.
      await clearPause(ctx.etcd, p.id, rec.id);
      step.phase = 'removing';
      return 'changed';
    }
    const target: HeadPauseTarget = { partition: p.id, epoch: p.epoch, head: from, reason: 'head hand-over', releasedPrefix: 'head hand-over released' };
    const state = await pauseHead(ctx, rec, target);
    switch (state.kind) {
      case 'asked':
        step.description = `${describe(rec.args.kind, step)} (head hand-over, attempt ${state.attempt}: ${from} holds writes at most ${rec.limits.maxPauseMs} ms)`;
        return 'changed';
      case 'paused': {
        const next = removeReplica(ctx.map, p.id, from, R !== undefined && p.replicas !== R ? R : undefined);
        if (!(await ctx.maps.replace(ctx.map.version, next, state.guard))) return undefined;
        ctx.logger.info({ partition: p.id, from, version: next.version, seq: state.answer.seq }, 'head hand-over committed');
        step.description = `${describe(rec.args.kind, step)} (head hand-over committed at map version ${next.version})`;
        return 'changed';
      }
      case 'released':
        rec.pauses = state.pauses;
        if (state.exhausted) {
          step.error = `partition ${p.id}: the head hand-over from ${from} ran out of time ${state.attempts} times (--max-pause ${rec.limits.maxPauseMs} ms, at most ${MAX_CUT_ATTEMPTS} attempts; the last: ${state.answer.reason ?? 'no reason given'}); raise --max-pause or move when writes are lighter`;
          step.phase = 'rolling back';
          return undefined;
        }
        step.description = `${describe(rec.args.kind, step)} (head hand-over attempt ${state.attempts} released after ${state.answer.ms ?? 0} ms: ${state.answer.reason ?? 'no reason given'}; trying again in ${state.backoffMs} ms)`;
        return { retryAfterMs: state.backoffMs };
      case 'busy':
        step.description = `${describe(rec.args.kind, step)} (waiting: ${state.operation} holds writes of partition ${p.id})`;
        return 'changed';
      default:
        return undefined;
    }
  }

  /** One rollback sub-step of a cancelled or failed operation; the final record once every running step is rolled back. */
  private async rollBack(rec: OperationRecord, ctx: OperationContext, marks: EtcdMovementMarks): Promise<OperationAdvance> {
    for (const step of rec.steps.filter((s) => s.state === 'running')) {
      const p = ctx.map.byId(step.partition);
      if (step.to !== undefined && rec.limits.maxBytesPerSecond !== undefined) await marks.clearThrottle(step.partition, step.to);
      const undone: OperationStep['state'] = step.error !== undefined ? 'failed' : 'rolled-back';
      // A hand-over's pause request goes first: the head lets its held writes go on.
      if (step.phase === 'handing over') await clearPause(ctx.etcd, step.partition, rec.id);
      step.finishedAtMs = ctx.nowMs;
      step.phase = undefined;
      const inChain = (node: string | undefined) => node !== undefined && p !== undefined && p.chain.some((r) => r.node === node);
      if (p === undefined) {
        step.state = undone;
        continue;
      }
      // `from` gone already (removed by this step, or its node died): the step is as good as finished.
      if (step.from !== undefined && !inChain(step.from) && (step.to === undefined || inChain(step.to))) {
        step.state = step.error !== undefined ? 'failed' : 'done';
        continue;
      }
      if (step.to === undefined || !inChain(step.to)) {
        step.state = step.to === undefined && step.error === undefined ? 'skipped' : undone;
        continue;
      }
      step.state = undone;
      if (!p.chain.some((r) => r.node !== step.to && r.state === 'serving')) continue;
      return { map: removeReplica(ctx.map, p.id, step.to), record: rec };
    }
    for (const step of rec.steps) if (step.state === 'pending') step.state = 'skipped';
    rec.state = rec.state === 'cancelling' ? 'cancelled' : 'failed';
    rec.finishedAtMs = ctx.nowMs;
    rec.message = `${rec.state}: ${summary(rec)}`;
    return { record: rec };
  }
}

function newStep(rec: OperationRecord, s: PlannedStep): OperationStep {
  return { description: describe(rec.args.kind, s), partition: s.partition, ...(s.from === undefined ? {} : { from: s.from }), ...(s.to === undefined ? {} : { to: s.to }), state: 'pending' };
}

function describe(kind: OperationKind, s: PlannedStep): string {
  if (s.from !== undefined && s.to !== undefined) return `move partition ${s.partition} from ${s.from} to ${s.to}`;
  if (s.from !== undefined) return kind === 'set-replicas' ? `remove the replica of partition ${s.partition} on ${s.from}` : `move partition ${s.partition} off ${s.from}`;
  return s.to === undefined ? `add a replica of partition ${s.partition}` : `add a replica of partition ${s.partition} on ${s.to}`;
}

function summary(rec: OperationRecord): string {
  const count = (state: OperationStep['state']): number => rec.steps.filter((s) => s.state === state).length;
  return `${count('done')}/${rec.steps.length} steps done${count('skipped') > 0 ? `, ${count('skipped')} skipped` : ''}${count('rolled-back') > 0 ? `, ${count('rolled-back')} rolled back` : ''}${count('failed') > 0 ? `, ${count('failed')} failed` : ''}`;
}

/** The record's message: steps done and what the running ones are doing. */
function withMessage(rec: OperationRecord): OperationRecord {
  const running = rec.steps.filter((s) => s.state === 'running').map((s) => {
    const progress = s.phase === 'syncing' && s.rowsTotal !== undefined ? ` ${s.rowsDone ?? 0}/${s.rowsTotal} rows` : '';
    return `partition ${s.partition}${s.to === undefined ? '' : ` → ${s.to}`} ${s.phase ?? ''}${progress}`.trim();
  });
  rec.message = `${summary(rec)}${running.length === 0 ? '' : `; ${running.join(', ')}`}`;
  return rec;
}
