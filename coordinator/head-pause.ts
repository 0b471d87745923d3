import type { Etcd3 } from 'etcd3';
import { operationKeys, splitValues, type OperationPause, type OperationRecord, type PausedReport } from '../store/index.js';
import type { OperationContext } from './operation-runner.js';
import { MAX_CUT_ATTEMPTS, cutBackoffMs } from './split-plan.js';

/** The head a runner pauses before a map change: partition P at `epoch`, headed by `head`. */
export interface HeadPauseTarget {
  partition: number;
  epoch: number;
  head: string;
  /** The pause request's reason ("split cut", "head hand-over"); released attempts are recorded as `RELEASED-PREFIX: why`. */
  reason: string;
  /** How a released attempt's pause is named in `op.pauses` (its prefix counts the attempts). */
  releasedPrefix: string;
}

/** Where one pass finds the pause of a head (`pause/P` → `paused/P/HEAD`). */
export type HeadPauseState =
  /** The request was (re)written this pass: `attempt` is its number (1-based). */
  | { kind: 'asked'; attempt: number }
  /** Asked; no `paused` answer at this map version yet. */
  | { kind: 'waiting' }
  /** Another operation's pause of P is in place: wait for it to end. */
  | { kind: 'busy'; operation: string }
  /** The head holds the writes and every replica acknowledged them: commit guarded by `guard`. */
  | { kind: 'paused'; answer: PausedReport; guard: { key: string; modRevision: string } }
  /** The head let the writes go on before a commit (it ran out of --max-pause): recorded in `pauses`, keys removed; ask again after `backoffMs`. */
  | { kind: 'released'; answer: PausedReport; pauses: OperationPause[]; attempts: number; exhausted: boolean; backoffMs: number };

/**
 * One pass of pausing a head before a map change (store/README.md "Split and merge", the cut;
 * README "Live data movement", the head hand-over): writes `pause/P` unless this operation's request
 * at this epoch is there, reads the head's `paused/P/HEAD` answer, and on a release records the
 * attempt in `pauses`, removes the keys and answers the back-off (cutBackoffMs) the caller returns
 * as its `retryAfterMs` — after MAX_CUT_ATTEMPTS released attempts `exhausted` is set and the caller fails.
 */
export async function pauseHead(ctx: OperationContext, op: OperationRecord, target: HeadPauseTarget): Promise<HeadPauseState> {
  const keys = operationKeys();
  const { partition: P, head } = target;
  const pauseKey = keys.pauseOf(P);
  const pause = await readJson(ctx.etcd, pauseKey, splitValues.pause);
  const paused = await readJson(ctx.etcd, keys.pausedOf(P, head), splitValues.paused);
  const attempts = releasedAttempts(op, target);
  if (pause !== undefined && pause.value.operation !== op.id) return { kind: 'busy', operation: pause.value.operation };
  if (pause === undefined || pause.value.epoch !== target.epoch) {
    if (paused !== undefined) await ctx.etcd.delete().key(keys.pausedOf(P, head)).exec();
    await ctx.etcd.put(pauseKey).value(JSON.stringify({ operation: op.id, epoch: target.epoch, reason: target.reason, maxPauseMs: op.limits.maxPauseMs, requestedAtMs: ctx.nowMs })).exec();
    return { kind: 'asked', attempt: attempts + 1 };
  }
  const answer = paused?.value;
  if (answer === undefined || answer.operation !== op.id || answer.epoch !== target.epoch) return { kind: 'waiting' };
  if (answer.state === 'paused' && answer.mapVersion === ctx.map.version) return { kind: 'paused', answer, guard: { key: keys.pausedOf(P, head), modRevision: paused!.modRevision } };
  if (answer.state !== 'released') return { kind: 'waiting' };
  const pauses = [...op.pauses, { partition: P, ms: answer.ms ?? 0, atMs: answer.heldAtMs, reason: `${target.releasedPrefix}: ${answer.reason ?? 'no reason given'}` }];
  await ctx.etcd.delete().key(pauseKey).exec();
  await ctx.etcd.delete().key(keys.pausedOf(P, head)).exec();
  const exhausted = attempts + 1 >= MAX_CUT_ATTEMPTS;
  return { kind: 'released', answer, pauses, attempts: attempts + 1, exhausted, backoffMs: exhausted ? 0 : cutBackoffMs(attempts + 1) };
}

/** Released attempts of `target`'s pause this operation recorded (per partition: a drain pauses several heads). */
export function releasedAttempts(op: OperationRecord, target: Pick<HeadPauseTarget, 'partition' | 'releasedPrefix'>): number {
  return op.pauses.filter((x) => x.partition === target.partition && x.reason.startsWith(target.releasedPrefix)).length;
}

/**
 * After the guarded commit: `held` while a head still reports `paused` (it has not installed the
 * map yet); else the head's `released` answer of this operation (at `epoch`, when given; undefined
 * when the head went before it reported one).
 */
export async function pauseAfterCommit(etcd: Etcd3, op: OperationRecord, partition: number, epoch?: number): Promise<'held' | PausedReport | undefined> {
  const keys = operationKeys();
  const reports = await readAllJson(etcd, `${keys.paused}${partition}/`, splitValues.paused);
  const answers = [...reports.values()].map((r) => r.value).filter((r) => r.operation === op.id && (epoch === undefined || r.epoch === epoch));
  if (answers.some((a) => a.state === 'paused')) return 'held';
  return answers.find((a) => a.state === 'released');
}

/** Removes operation `operation`'s pause of P: its request (only if it is this operation's) and every answer. */
export async function clearPause(etcd: Etcd3, partition: number, operation: string): Promise<void> {
  const keys = operationKeys();
  const pause = await readJson(etcd, keys.pauseOf(partition), splitValues.pause);
  if (pause !== undefined && pause.value.operation !== operation) return;
  if (pause !== undefined) await etcd.delete().key(keys.pauseOf(partition)).exec();
  await etcd.delete().prefix(`${keys.paused}${partition}/`).exec();
}

export async function readJson<T>(etcd: Etcd3, key: string, parse: (v: Buffer) => T | undefined): Promise<{ value: T; modRevision: string } | undefined> {
  const res = await etcd.get(key).exec();
  const kv = res.kvs[0];
  const value = kv === undefined ? undefined : parse(kv.value);
  return value === undefined ? undefined : { value, modRevision: kv!.mod_revision };
}

export async function readAllJson<T>(etcd: Etcd3, prefix: string, parse: (v: Buffer) => T | undefined): Promise<Map<string, { value: T; modRevision: string }>> {
  const res = await etcd.getAll().prefix(prefix).exec();
  const out = new Map<string, { value: T; modRevision: string }>();
  for (const kv of res.kvs) {
    const value = parse(kv.value);
    if (value !== undefined) out.set(kv.key.toString(), { value, modRevision: kv.mod_revision });
  }
  return out;
}
