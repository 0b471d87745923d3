import type { Etcd3 } from 'etcd3';
import { operationKeys, splitEtcdKeys, splitValues, type MergePrepareRequest, type OperationRecord, type OperationStep, type PausedReport } from '../store/index.js';
import type { OperationAdvance, OperationContext, OperationRunner } from './operation-runner.js';
import { MAX_CUT_ATTEMPTS, chainNotWhole, cutBackoffMs, mergeMap, mergePlan } from './split-plan.js';
import { readAllJson, readJson } from './head-pause.js';

type MergeArgs = Extract<OperationRecord['args'], { kind: 'merge' }>;

/**
 * Carries out `merge` operations (store/README.md "Split and merge"): the reverse of a split. Every
 * replica copies the upper partition's rows into the lower one's LevelDB and tracks the upper's
 * writes (`merge/P`); then both heads (the same node) hold writes, and the map that gives the lower
 * partition both ranges (the upper one gone) is committed guarded by both heads' `paused` answers.
 */
export class MergeRunner implements OperationRunner {
  readonly kinds = ['merge'] as const;
  readonly watchPrefixes = ['prepared/', 'paused/'] as const;
  private readonly keys = { ...splitEtcdKeys(), ...operationKeys() };

  async advance(op: OperationRecord, ctx: OperationContext): Promise<OperationAdvance | undefined> {
    const args = op.args as MergeArgs;
    let ours: MergePrepareRequest | undefined;
    let other: MergePrepareRequest | undefined;
    for (const id of args.partitions) {
      const r = await readJson(ctx.etcd, this.keys.mergeOf(id), splitValues.merge);
      if (r?.value.operation === op.id) ours = r.value;
      else if (r !== undefined) other = r.value;
    }
    if (ours !== undefined && ctx.map.byId(ours.other) === undefined && ctx.map.byId(ours.partition) !== undefined) return this.finish(ctx, op, ours);
    if (op.state === 'cancelling') {
      if (ours !== undefined) await this.clear(ctx.etcd, ours);
      return { record: { ...op, state: 'cancelled', finishedAtMs: ctx.nowMs, message: 'cancelled before the cut: no map change was made', steps: this.steps(op, ctx, { state: 'rolled-back', finishedAtMs: ctx.nowMs }) } };
    }
    if (ours === undefined) {
      if (other !== undefined) return this.fail(ctx, op, undefined, `partition ${other.partition} is being merged by ${other.operation}: try again once it finished`);
      const recovering = args.partitions.map((id) => chainNotWhole(ctx.map, new Set(ctx.nodes.keys()), id)).find((x) => x !== undefined);
      if (recovering !== undefined) return op.steps[0]?.phase === 'waiting' ? undefined : { record: this.step(op, ctx, { phase: 'waiting' }, recovering) };
      const plan = mergePlan(ctx.map, new Set(ctx.nodes.keys()), args.partitions);
      if ('problem' in plan) return this.fail(ctx, op, undefined, plan.problem);
      const split = await readJson(ctx.etcd, this.keys.prepareOf(plan.lower.id), splitValues.prepare);
      if (split !== undefined) return this.fail(ctx, op, undefined, `partition ${plan.lower.id} is being split by ${split.value.operation}: try again once it finished`);
      const request: MergePrepareRequest = { operation: op.id, partition: plan.lower.id, epoch: plan.lower.epoch, other: plan.upper.id, otherEpoch: plan.upper.epoch, requestedAtMs: ctx.nowMs };
      const key = this.keys.mergeOf(plan.lower.id);
      const res = await ctx.etcd.if(key, 'Create', '==', 0).then(ctx.etcd.put(key).value(JSON.stringify(request))).commit();
      if (!res.succeeded) return { record: op };
      return { record: this.step({ ...op, state: 'running' }, ctx, { phase: 'preparing', description: `merge partition ${plan.upper.id} into ${plan.lower.id}` }, `asked every replica to copy partition ${plan.upper.id} into ${plan.lower.id}`) };
    }
    const p = ctx.map.byId(ours.partition);
    const q = ctx.map.byId(ours.other);
    if (p === undefined || q === undefined || p.epoch !== ours.epoch || q.epoch !== ours.otherEpoch) {
      await this.clear(ctx.etcd, ours);
      return { record: this.step(op, ctx, { phase: 'restarting' }, `the chains of partitions ${ours.partition} and ${ours.other} changed during the merge: starting it again`) };
    }
    if (p.chain.some((r) => !ctx.nodes.has(r.node))) return undefined;
    const reports = await readAllJson(ctx.etcd, `${this.keys.prepared}${p.id}/`, splitValues.prepared);
    const mine = [...reports.values()].map((r) => r.value).filter((r) => r.operation === op.id && r.epoch === p.epoch);
    const failed = mine.find((r) => r.state === 'failed');
    if (failed !== undefined) return this.fail(ctx, op, ours, `${failed.node} could not prepare the merge: ${failed.error ?? 'no reason given'}`);
    const ready = p.chain.filter((r) => mine.some((m) => m.node === r.node && m.state === 'prepared'));
    if (ready.length < p.chain.length) {
      const phase = `preparing (${ready.length}/${p.chain.length} replicas copied)`;
      return op.steps[0]?.phase === phase ? undefined : { record: this.step(op, ctx, { phase }, `copying partition ${q.id} into ${p.id} on every replica`) };
    }
    return this.cut(ctx, op, ours, p.node);
  }

  /** Pause both partitions at their (common) head; commit once both answered `paused`, guarded by both answers. */
  private async cut(ctx: OperationContext, op: OperationRecord, request: MergePrepareRequest, head: string): Promise<OperationAdvance | undefined> {
    const parts = [
      { id: request.partition, epoch: request.epoch },
      { id: request.other, epoch: request.otherEpoch },
    ];
    const attempts = op.pauses.filter((x) => x.reason.startsWith('cut released')).length;
    let asked = false;
    const answers: Array<{ value: PausedReport; modRevision: string } | undefined> = [];
    for (const part of parts) {
      const pause = await readJson(ctx.etcd, this.keys.pauseOf(part.id), splitValues.pause);
      if (pause === undefined || pause.value.operation !== op.id || pause.value.epoch !== part.epoch) {
        await ctx.etcd.delete().key(this.keys.pausedOf(part.id, head)).exec();
        await ctx.etcd.put(this.keys.pauseOf(part.id)).value(JSON.stringify({ operation: op.id, epoch: part.epoch, reason: 'merge cut', maxPauseMs: op.limits.maxPauseMs, requestedAtMs: ctx.nowMs })).exec();
        asked = true;
      }
      const paused = await readJson(ctx.etcd, this.keys.pausedOf(part.id, head), splitValues.paused);
      answers.push(paused?.value.operation === op.id && paused.value.epoch === part.epoch ? paused : undefined);
    }
    if (asked) return { record: this.step(op, ctx, { phase: `cutting (attempt ${attempts + 1})` }, `every replica copied; asked ${head} to hold writes of partitions ${request.partition} and ${request.other} (at most ${op.limits.maxPauseMs} ms)`) };
    const released = answers.find((a) => a?.value.state === 'released');
    if (released !== undefined) {
      const pauses = [...op.pauses, ...answers.flatMap((a, i) => (a === undefined ? [] : [{ partition: parts[i]!.id, ms: a.value.ms ?? Math.max(0, ctx.nowMs - a.value.heldAtMs), atMs: a.value.heldAtMs, reason: `cut released: ${released.value.reason ?? 'no reason given'}` }]))];
      for (const part of parts) {
        await ctx.etcd.delete().key(this.keys.pauseOf(part.id)).exec();
        await ctx.etcd.delete().key(this.keys.pausedOf(part.id, head)).exec();
      }
      if (attempts + 1 >= MAX_CUT_ATTEMPTS) return this.fail(ctx, { ...op, pauses }, request, `the cut ran out of time ${attempts + 1} times (--max-pause ${op.limits.maxPauseMs} ms; the last: ${released.value.reason ?? 'no reason given'}); raise --max-pause or merge when writes are lighter`);
      const backoffMs = cutBackoffMs(attempts + 1);
      return { record: this.step({ ...op, pauses }, ctx, { phase: 'cutting (backing off)' }, `cut attempt ${attempts + 1} released (${released.value.reason ?? ''}); trying again in ${backoffMs} ms`), retryAfterMs: backoffMs };
    }
    if (!answers.every((a) => a?.value.state === 'paused' && a.value.mapVersion === ctx.map.version)) return undefined;
    const next = mergeMap(ctx.map, request.partition, request.other);
    const guards = answers.map((a, i) => ({ key: this.keys.pausedOf(parts[i]!.id, head), modRevision: a!.modRevision }));
    if (!(await ctx.maps.replace(ctx.map.version, next, guards))) return undefined;
    ctx.logger.info({ partition: request.partition, merged: request.other, version: next.version }, 'merge committed');
    return { record: this.step(op, ctx, { phase: 'committed' }, `committed map version ${next.version}: partition ${request.partition} holds ${request.other}'s range`) };
  }

  private async finish(ctx: OperationContext, op: OperationRecord, request: MergePrepareRequest): Promise<OperationAdvance | undefined> {
    const answers: PausedReport[] = [];
    for (const [id, epoch] of [[request.partition, request.epoch], [request.other, request.otherEpoch]] as const) {
      const reports = await readAllJson(ctx.etcd, `${this.keys.paused}${id}/`, splitValues.paused);
      answers.push(...[...reports.values()].map((r) => r.value).filter((r) => r.operation === op.id && r.epoch === epoch));
    }
    if (answers.some((a) => a.state === 'paused')) return undefined;
    const released = answers.filter((a) => a.state === 'released');
    const ms = Math.max(0, ...released.map((a) => a.ms ?? 0));
    const pauses = released.length === 0 ? op.pauses : [...op.pauses, { partition: request.partition, ms, atMs: Math.min(...released.map((a) => a.heldAtMs)), reason: `merge cut (${released.reduce((n, a) => n + (a.heldWrites ?? 0), 0)} writes held)` }];
    await this.clear(ctx.etcd, request);
    return {
      record: {
        ...op,
        state: 'completed',
        finishedAtMs: ctx.nowMs,
        pauses,
        message: `merged partition ${request.other} into ${request.partition}; ${released.length === 0 ? 'the head went before it reported its pause' : `writes paused ${ms} ms`}; partition ${request.other}'s folders stay on disk for GC`,
        steps: this.steps(op, ctx, { state: 'done', phase: 'done', finishedAtMs: ctx.nowMs }),
      },
    };
  }

  private async fail(ctx: OperationContext, op: OperationRecord, request: MergePrepareRequest | undefined, error: string): Promise<OperationAdvance> {
    if (request !== undefined) await this.clear(ctx.etcd, request);
    ctx.logger.warn({ error }, 'merge failed');
    return { record: { ...op, state: 'failed', error, message: error, finishedAtMs: ctx.nowMs, steps: this.steps(op, ctx, { state: 'failed', error, finishedAtMs: ctx.nowMs }) } };
  }

  /** Removes this merge's keys (the request last: nodes drop their copies when it goes). */
  private async clear(etcd: Etcd3, request: MergePrepareRequest): Promise<void> {
    for (const id of [request.partition, request.other]) {
      const pause = await readJson(etcd, this.keys.pauseOf(id), splitValues.pause);
      if (pause?.value.operation === request.operation) await etcd.delete().key(this.keys.pauseOf(id)).exec();
      await etcd.delete().prefix(`${this.keys.paused}${id}/`).exec();
    }
    await etcd.delete().prefix(`${this.keys.prepared}${request.partition}/`).exec();
    await etcd.delete().key(this.keys.mergeOf(request.partition)).exec();
  }

  private step(op: OperationRecord, ctx: OperationContext, change: Partial<OperationStep>, message: string): OperationRecord {
    return { ...op, state: op.state === 'pending' ? 'running' : op.state, message, steps: this.steps(op, ctx, { state: 'running', ...change }) };
  }

  private steps(op: OperationRecord, ctx: OperationContext, change: Partial<OperationStep>): OperationStep[] {
    const [a] = (op.args as MergeArgs).partitions;
    const first: OperationStep = op.steps[0] ?? { description: `merge partitions ${(op.args as MergeArgs).partitions.join(' and ')}`, partition: a, state: 'pending', startedAtMs: ctx.nowMs };
    return [{ ...first, ...change }, ...op.steps.slice(1)];
  }
}
