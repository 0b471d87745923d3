import type { Etcd3 } from 'etcd3';
import { displayBytes, operationKeys, splitEtcdKeys, splitValues, type OperationRecord, type OperationStep, type Partition, type SplitPrepareRequest, type SplitPreparedReport } from '../store/index.js';
import type { OperationAdvance, OperationContext, OperationRunner } from './operation-runner.js';
import { pauseAfterCommit, pauseHead, readAllJson, readJson } from './head-pause.js';
import { chainNotWhole, lowestUnusedId, splitCommitted, splitMap, splitProblem, strictlyInside } from './split-plan.js';

type SplitArgs = Extract<OperationRecord['args'], { kind: 'split' }>;

/**
 * Carries out `split` operations (store/README.md "Split and merge"), one step per pass, reading
 * where it is from etcd: the `prepare/P` request it wrote (which names the new partition and the
 * key), the nodes' `prepared/P/NODE` reports, the `pause/P` request and the head's `paused/P/HEAD`
 * answer, and the map (a committed split is in it). So a coordinator killed at any point leaves
 * enough for the next leader to go on.
 */
export class SplitRunner implements OperationRunner {
  readonly kinds = ['split'] as const;
  readonly watchPrefixes = ['prepared/', 'paused/'] as const;
  private readonly keys = { ...splitEtcdKeys(), ...operationKeys() };

  async advance(op: OperationRecord, ctx: OperationContext): Promise<OperationAdvance | undefined> {
    const args = op.args as SplitArgs;
    const P = args.partition;
    const prepare = await readJson(ctx.etcd, this.keys.prepareOf(P), splitValues.prepare);
    const ours = prepare?.value.operation === op.id ? prepare.value : undefined;
    if (ours !== undefined && ours.at !== undefined && splitCommitted(ctx.map, P, Buffer.from(ours.at, 'hex'), ours.newPartition)) return this.finish(ctx, op, ours);
    if (op.state === 'cancelling') {
      await this.clear(ctx.etcd, P, op.id);
      return { record: { ...op, state: 'cancelled', finishedAtMs: ctx.nowMs, message: 'cancelled before the cut: no map change was made', steps: op.steps.map((s) => ({ ...s, state: 'rolled-back', finishedAtMs: ctx.nowMs })) } };
    }
    if (ours === undefined) {
      if (prepare !== undefined) return this.fail(ctx, op, undefined, `partition ${P} is being split by ${prepare.value.operation}: try again once it finished`);
      return this.start(ctx, op, args);
    }
    const p = ctx.map.byId(P);
    if (p === undefined || p.epoch !== ours.epoch) {
      // The chain changed under the split (a node left, a replica was added): start again from the new chain.
      await this.clear(ctx.etcd, P, op.id);
      return { record: this.step(op, ctx, { phase: 'restarting' }, `partition ${P}'s chain changed (epoch ${ours.epoch} → ${p?.epoch ?? 'gone'}) during the split: starting it again`) };
    }
    if (p.chain.some((r) => !ctx.nodes.has(r.node))) return undefined;
    const reports = await readAllJson(ctx.etcd, `${this.keys.prepared}${P}/`, splitValues.prepared);
    const mine = new Map<string, SplitPreparedReport>();
    for (const r of reports.values()) if (r.value.operation === op.id && r.value.epoch === p.epoch) mine.set(r.value.node, r.value);
    if (ours.at === undefined) return this.chooseKey(ctx, op, ours, readNodeOfPartition(p), mine);
    const failed = [...mine.values()].find((r) => r.state === 'failed' && r.at === ours.at);
    if (failed !== undefined) return this.fail(ctx, op, ours, `${failed.node} could not prepare the split: ${failed.error ?? 'no reason given'}`);
    const ready = p.chain.filter((r) => mine.get(r.node)?.state === 'prepared' && mine.get(r.node)?.at === ours.at);
    if (ready.length < p.chain.length) {
      const phase = `preparing (${ready.length}/${p.chain.length} replicas copied)`;
      return op.steps[0]?.phase === phase ? undefined : { record: this.step(op, ctx, { phase }, `copying the rows of [${displayBytes(Buffer.from(ours.at, 'hex'))}, end) into partition ${ours.newPartition} on every replica`) };
    }
    return this.cut(ctx, op, ours, p.node, Math.max(...ready.map((r) => mine.get(r.node)?.rows ?? 0)));
  }

  private async start(ctx: OperationContext, op: OperationRecord, args: SplitArgs): Promise<OperationAdvance | undefined> {
    const at = args.at === undefined ? undefined : Buffer.from(args.at, 'hex');
    if (at === undefined && args.auto !== true) return this.fail(ctx, op, undefined, 'a split needs a key (--at KEY) or --auto');
    // A chain that is mid-move or recovering is waited for, not refused: a split submitted while a
    // drain or move copies a replica of the partition runs once that replica serves.
    const recovering = chainNotWhole(ctx.map, new Set(ctx.nodes.keys()), args.partition);
    if (recovering !== undefined) return op.steps[0]?.phase === 'waiting' ? undefined : { record: this.step(op, ctx, { phase: 'waiting' }, recovering) };
    const problem = splitProblem(ctx.map, new Set(ctx.nodes.keys()), { partition: args.partition, at, newPartition: args.newPartition });
    if (problem !== undefined) return this.fail(ctx, op, undefined, problem);
    const p = ctx.map.byId(args.partition)!;
    const request: SplitPrepareRequest = { operation: op.id, kind: 'split', partition: p.id, epoch: p.epoch, newPartition: args.newPartition ?? lowestUnusedId(ctx.map), ...(args.at === undefined ? {} : { at: args.at }), requestedAtMs: ctx.nowMs };
    const key = this.keys.prepareOf(p.id);
    const res = await ctx.etcd.if(key, 'Create', '==', 0).then(ctx.etcd.put(key).value(JSON.stringify(request))).commit();
    if (!res.succeeded) return { record: op };
    const target = at === undefined ? 'at its median key' : `at "${displayBytes(at)}"`;
    return { record: this.step({ ...op, state: 'running' }, ctx, { phase: at === undefined ? 'choosing the key' : 'preparing', description: `split partition ${p.id} ${target} into ${p.id} and ${request.newPartition}` }, `asked every replica of partition ${p.id} to prepare`) };
  }

  /** `--auto`: the read replica's median key becomes the split key. */
  private async chooseKey(ctx: OperationContext, op: OperationRecord, request: SplitPrepareRequest, tail: string, reports: ReadonlyMap<string, SplitPreparedReport>): Promise<OperationAdvance | undefined> {
    const r = reports.get(tail);
    if (r?.state === 'failed') return this.fail(ctx, op, request, r.error ?? `${tail} found no median key`);
    if (r?.state !== 'key' || r.at === undefined) return undefined;
    const p = ctx.map.byId(request.partition)!;
    const at = Buffer.from(r.at, 'hex');
    if (!strictlyInside(p, at)) return this.fail(ctx, op, request, `the median key "${displayBytes(at)}" is not strictly inside partition ${p.id}: it holds too few distinct keys to split`);
    await ctx.etcd.put(this.keys.prepareOf(p.id)).value(JSON.stringify({ ...request, at: r.at })).exec();
    return { record: this.step(op, ctx, { phase: 'preparing', description: `split partition ${p.id} at its median "${displayBytes(at)}" into ${p.id} and ${request.newPartition}` }, `median key of partition ${p.id} is "${displayBytes(at)}" (from ${tail})`) };
  }

  /** The cut: pause the head, and commit the split map once it answers `paused` (guarded by that answer). */
  private async cut(ctx: OperationContext, op: OperationRecord, request: SplitPrepareRequest, head: string, rows: number): Promise<OperationAdvance | undefined> {
    const P = request.partition;
    const state = await pauseHead(ctx, op, { partition: P, epoch: request.epoch, head, reason: 'split cut', releasedPrefix: 'cut released' });
    switch (state.kind) {
      case 'asked':
        return { record: this.step(op, ctx, { phase: `cutting (attempt ${state.attempt})`, rowsDone: rows, rowsTotal: rows }, `every replica copied ${rows} rows; asked ${head} to hold writes of partition ${P} (at most ${op.limits.maxPauseMs} ms)`) };
      case 'paused': {
        const next = splitMap(ctx.map, P, Buffer.from(request.at!, 'hex'), request.newPartition);
        if (!(await ctx.maps.replace(ctx.map.version, next, state.guard))) return undefined;
        ctx.logger.info({ partition: P, newPartition: request.newPartition, version: next.version, seq: state.answer.seq }, 'split committed');
        return { record: this.step(op, ctx, { phase: 'committed' }, `committed map version ${next.version}: partition ${P} and ${request.newPartition} (the chain was at ${state.answer.stream}:${state.answer.seq})`) };
      }
      case 'released': {
        // The head let the writes go on before a commit: the pause is recorded, the cut tried again after a back-off.
        const pauses = state.pauses;
        if (state.exhausted) return this.fail(ctx, { ...op, pauses }, request, `the cut ran out of time ${state.attempts} times (--max-pause ${op.limits.maxPauseMs} ms; the last: ${state.answer.reason ?? 'no reason given'}); raise --max-pause or split when writes are lighter`);
        return { record: this.step({ ...op, pauses }, ctx, { phase: 'cutting (backing off)' }, `cut attempt ${state.attempts} released after ${state.answer.ms ?? 0} ms (${state.answer.reason ?? ''}); trying again in ${state.backoffMs} ms`), retryAfterMs: state.backoffMs };
      }
      case 'busy':
        return op.steps[0]?.phase === 'cutting (waiting)' ? undefined : { record: this.step(op, ctx, { phase: 'cutting (waiting)' }, `partition ${P}'s head holds writes for ${state.operation}: cutting once that ends`) };
      default:
        return undefined;
    }
  }

  /** After the commit: record the head's measured pause once it released, remove the keys, done. */
  private async finish(ctx: OperationContext, op: OperationRecord, request: SplitPrepareRequest): Promise<OperationAdvance | undefined> {
    const P = request.partition;
    const released = await pauseAfterCommit(ctx.etcd, op, P, request.epoch);
    if (released === 'held') return undefined;
    const pauses = released === undefined ? op.pauses : [...op.pauses, { partition: P, ms: released.ms ?? 0, atMs: released.heldAtMs, reason: `split cut (${released.heldWrites ?? 0} writes held)` }];
    await this.clear(ctx.etcd, P, op.id);
    const measured = released === undefined ? 'the head went before it reported its pause' : `writes paused ${released.ms ?? 0} ms`;
    return {
      record: {
        ...op,
        state: 'completed',
        finishedAtMs: ctx.nowMs,
        pauses,
        message: `split partition ${P} at "${displayBytes(Buffer.from(request.at!, 'hex'))}": partition ${request.newPartition} serves [that key, end); ${measured}`,
        steps: this.steps(op, ctx, { state: 'done', phase: 'done', finishedAtMs: ctx.nowMs }),
      },
    };
  }

  /** Fails the operation; its keys go (`_request`: the split's request when one was written). */
  private async fail(ctx: OperationContext, op: OperationRecord, _request: SplitPrepareRequest | undefined, error: string): Promise<OperationAdvance> {
    if (op.args.kind === 'split') await this.clear(ctx.etcd, op.args.partition, op.id);
    ctx.logger.warn({ error }, 'split failed');
    return { record: { ...op, state: 'failed', error, message: error, finishedAtMs: ctx.nowMs, steps: this.steps(op, ctx, { state: 'failed', error, finishedAtMs: ctx.nowMs }) } };
  }

  /** Removes this operation's keys of partition P (the request last: nodes drop their copies when it goes). */
  private async clear(etcd: Etcd3, P: number, operation: string): Promise<void> {
    const prepare = await readJson(etcd, this.keys.prepareOf(P), splitValues.prepare);
    // Another operation's split of P: its keys are not ours to remove.
    if (prepare !== undefined && prepare.value.operation !== operation) return;
    const pause = await readJson(etcd, this.keys.pauseOf(P), splitValues.pause);
    if (pause?.value.operation === operation) await etcd.delete().key(this.keys.pauseOf(P)).exec();
    await etcd.delete().prefix(`${this.keys.paused}${P}/`).exec();
    await etcd.delete().prefix(`${this.keys.prepared}${P}/`).exec();
    if (prepare !== undefined) await etcd.delete().key(this.keys.prepareOf(P)).exec();
  }

  private step(op: OperationRecord, ctx: OperationContext, change: Partial<OperationStep>, message: string): OperationRecord {
    return { ...op, state: op.state === 'pending' ? 'running' : op.state, message, steps: this.steps(op, ctx, { state: 'running', ...change }) };
  }

  private steps(op: OperationRecord, ctx: OperationContext, change: Partial<OperationStep>): OperationStep[] {
    const P = op.args.kind === 'split' ? op.args.partition : op.args.kind === 'merge' ? op.args.partitions[0] : 0;
    const first: OperationStep = op.steps[0] ?? { description: `split partition ${P}`, partition: P, state: 'pending', startedAtMs: ctx.nowMs };
    return [{ ...first, ...change }, ...op.steps.slice(1)];
  }
}

/** The replica reads go to: the chain's last serving one. */
function readNodeOfPartition(p: Partition): string {
  return [...p.chain].reverse().find((r) => r.state === 'serving')?.node ?? p.node;
}
