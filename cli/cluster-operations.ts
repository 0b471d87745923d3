import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Watcher } from 'etcd3';
import { createLogUpdate } from 'log-update';
import { parseDurationMs } from '../common/index.js';
import { OperationAdmin, OperationClient, StoreError, checkOperationLimits, connectEtcd, isFinalOperationState, newOperationId, parseEtcdUrl, type OperationRecord, type OperationsApi } from '../store/index.js';
import { CliUsageError } from './cli-env.js';
import { EXIT } from './cli-io.js';
import type { CliContext } from './cli-context.js';
import { etcdConnectionOf, type EtcdFlags } from './etcd-options.js';
import { operationDetail, operationJson, operationLine, operationProgressEvent, operationSummary, operationsTable } from './operation-view.js';

/** How a command reaches operations: `--etcd` (its own etcd client) or `--seeds` (a node's operation RPCs). */
export interface OperationsFlags extends EtcdFlags {
  seeds?: string;
  /** With --seeds: how often a waiting command asks the node again. */
  pollInterval: string;
}

/** Flags of every command that submits an operation. */
export interface SubmitFlags extends OperationsFlags {
  wait: boolean;
  json?: boolean;
  maxBytesPerSecond?: string;
  maxMovements: string;
  maxPause: string;
}

/** An open way to operations, and how to wait for the next change. */
interface OperationsSession {
  api: OperationsApi;
  /** Resolves on the next change of any record (etcd: the watch, or WATCH_FALLBACK_MS at the latest; seeds: after the poll interval). */
  changed(signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** With --etcd a missed watch event still shows within this long. */
const WATCH_FALLBACK_MS = 5000;
/** Off a terminal: a progress line at least this often, and on every change of state or step. */
const PROGRESS_EVERY_MS = 1000;

/** Who submits, for the record: "cli HOST:PID". */
function requestedBy(): string {
  // The record keeps printable ASCII only; a host name beyond it is shown with '?'.
  return `cli ${hostname().replace(/[^\x20-\x7e]/g, '?')}:${process.pid}`.slice(0, 200);
}

/** Opens the way the flags name: --etcd wins; otherwise --seeds (or SHARDPIPE_SEEDS). */
async function openOperations(ctx: CliContext, flags: OperationsFlags): Promise<OperationsSession> {
  if (flags.etcd !== undefined) {
    const display = parseEtcdUrl(flags.etcd).display;
    const etcd = connectEtcd(await etcdConnectionOf(flags.etcd, flags));
    const admin = new OperationAdmin(etcd, display);
    let watcher: Watcher | undefined;
    let wake: (() => void) | undefined;
    let pending = false;
    return {
      api: admin,
      changed: async (signal) => {
        if (watcher === undefined) {
          // Started before the first wait, from the revision read now: no change after it is missed.
          const { revision } = await admin.operations.list();
          watcher = await admin.operations.watch(revision, () => (wake ? wake() : (pending = true)), ctx.logger);
        }
        if (pending) {
          pending = false;
          return;
        }
        await new Promise<void>((resolve, reject) => {
          const done = (): void => {
            clearTimeout(timer);
            signal.removeEventListener('abort', onAbort);
            wake = undefined;
            resolve();
          };
          const onAbort = (): void => {
            clearTimeout(timer);
            wake = undefined;
            reject(signal.reason);
          };
          const timer = setTimeout(done, WATCH_FALLBACK_MS);
          wake = done;
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
        });
      },
      close: async () => {
        await watcher?.cancel().catch((err: unknown) => ctx.logger.debug({ err }, 'cancelling the operations watch failed'));
        etcd.close();
      },
    };
  }
  if (flags.etcdCa !== undefined || flags.etcdCert !== undefined) throw new CliUsageError('--etcd-ca/--etcd-cert/--etcd-key need --etcd');
  const pollMs = parseDurationMs(flags.pollInterval, { minMs: 50, maxMs: 60_000, name: '--poll-interval' });
  const client = new OperationClient({ seeds: ctx.seeds(flags.seeds), credentials: ctx.storeCredentials() });
  return {
    api: client,
    changed: (signal) => sleep(pollMs, undefined, { signal }),
    close: async () => client.close(),
  };
}

async function withOperations<T>(ctx: CliContext, flags: OperationsFlags, fn: (session: OperationsSession) => Promise<T>): Promise<T> {
  const session = await openOperations(ctx, flags);
  try {
    return await fn(session);
  } finally {
    await session.close();
  }
}

/**
 * The limits of the flags, checked here as well as where the record is made: over RPC a 0 means
 * "the default", so `--max-movements 0` must be refused before it is sent.
 */
function limitsOf(flags: SubmitFlags): { maxBytesPerSecond?: number; maxMovements: number; maxPauseMs: number } {
  const maxMovements = Number(flags.maxMovements);
  if (!Number.isSafeInteger(maxMovements)) throw new CliUsageError(`--max-movements must be a whole number, got "${flags.maxMovements}"`);
  const limits = {
    ...(flags.maxBytesPerSecond === undefined ? {} : { maxBytesPerSecond: parseByteRate(flags.maxBytesPerSecond) }),
    maxMovements,
    maxPauseMs: parseDurationMs(flags.maxPause, { name: '--max-pause' }),
  };
  try {
    checkOperationLimits(limits);
  } catch (err) {
    throw asUsage(err);
  }
  return limits;
}

const BYTE_UNITS: Readonly<Record<string, number>> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };

/** "50MB", "10MiB", "2000000" → bytes/s. */
export function parseByteRate(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*(?:\/s)?\s*$/i.exec(text);
  const unit = m ? BYTE_UNITS[(m[2] ?? '').toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new CliUsageError(`--max-bytes-per-second must be a rate like 50MB, 10MiB or 2000000 (bytes per second), got "${text}"`);
  const value = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(value) || value < 1) throw new CliUsageError(`--max-bytes-per-second must be at least 1 byte/s, got "${text}"`);
  return value;
}

/** Errors that mean "the arguments are wrong" exit as usage errors (64), with their code. */
function asUsage(err: unknown): unknown {
  if (err instanceof StoreError && err.code === 'STORE_OPERATION_INVALID') return new CliUsageError(`${err.message} [${err.code}]`);
  return err;
}

/**
 * Submits an operation and (unless --no-wait) waits for it with progress; exits 0 only when it
 * completed. `args` is the record's argument object; everything in it is checked where the record
 * is made (here with --etcd, on the node with --seeds).
 */
export async function submitOperation(ctx: CliContext, flags: SubmitFlags, args: Record<string, unknown>): Promise<void> {
  const limits = limitsOf(flags);
  await withOperations(ctx, flags, async (session) => {
    let record: OperationRecord;
    try {
      record = await session.api.submit({ args, limits, requestedBy: requestedBy(), id: newOperationId() });
    } catch (err) {
      throw asUsage(err);
    }
    if (!flags.wait) {
      ctx.print(flags.json ? JSON.stringify(operationJson(record)) : record.id);
      return;
    }
    ctx.logger.info({ operation: record.id, kind: record.args.kind }, `submitted: ${operationSummary(record.args)}`);
    const final = await waitForOperation(ctx, session, record);
    if (final.state !== 'completed') throw operationFailed(final);
    ctx.print(flags.json ? JSON.stringify(operationJson(final)) : `${final.id} completed: ${operationSummary(final.args)}${final.finishedAtMs ? ` (${((final.finishedAtMs - final.createdAtMs) / 1000).toFixed(1)} s)` : ''}`);
  });
}

function operationFailed(record: OperationRecord): StoreError {
  const step = record.steps.find((s) => s.state === 'failed');
  const why = record.error ?? step?.error ?? record.message ?? 'no reason recorded';
  return new StoreError('STORE_OPERATION_FAILED', `operation ${record.id} (${operationSummary(record.args)}) ${record.state}: ${why}${step ? ` (step: ${step.description})` : ''}`, { context: { operation: record.id, state: record.state } });
}

/**
 * Follows the record until it is final, showing progress on stderr: one line redrawn in place on a
 * terminal, JSON progress lines otherwise. Ctrl-C stops the waiting only: the operation goes on,
 * and the command says how to watch or cancel it (then exits as interrupted, 64).
 */
async function waitForOperation(ctx: CliContext, session: OperationsSession, first: OperationRecord): Promise<OperationRecord> {
  const signal = ctx.lifecycle.start();
  const tty = process.stderr.isTTY === true;
  const draw = tty ? createLogUpdate(terminal() as unknown as NodeJS.WritableStream, { defaultWidth: 100 }) : undefined;
  let lastKey = '';
  let lastAtMs = 0;
  const show = (record: OperationRecord): void => {
    const now = Date.now();
    if (draw !== undefined) {
      const line = operationLine(record, now);
      const columns = terminal().columns;
      draw(line.length <= columns ? line : `${line.slice(0, columns - 1)}…`);
      return;
    }
    const event = operationProgressEvent(record, now);
    const key = `${record.state}/${String(event.step)}/${String(event.phase)}`;
    if (key === lastKey && now - lastAtMs < PROGRESS_EVERY_MS) return;
    lastKey = key;
    lastAtMs = now;
    process.stderr.write(`${JSON.stringify(event)}\n`);
  };
  let record = first;
  try {
    show(record);
    while (!isFinalOperationState(record.state)) {
      await session.changed(signal);
      record = await session.api.get(record.id);
      show(record);
    }
    return record;
  } catch (err) {
    draw?.done();
    // Interrupted, or etcd / the node stopped answering: the operation is the coordinator's either way.
    process.stderr.write(
      `shardpipe: stopped waiting; operation ${record.id} goes on (${record.state} when last seen). Watch it: shardpipe cluster operations ${record.id}; cancel it: shardpipe cluster cancel ${record.id}\n`,
    );
    throw err;
  } finally {
    draw?.done();
  }
}

/**
 * stderr as log-update draws on it. A terminal that reports 0 columns (a pty nobody sized, as
 * script(1) makes) would get nothing drawn at all: it counts as 100 columns, 24 rows.
 */
function terminal(): { readonly isTTY: true; readonly columns: number; readonly rows: number; write: (text: string) => boolean } {
  return {
    isTTY: true,
    // Read at every drawing: a resized terminal is followed.
    get columns() {
      return process.stderr.columns || 100;
    },
    get rows() {
      return process.stderr.rows || 24;
    },
    write: (text) => process.stderr.write(text),
  };
}

/** Flags of `cluster operations`. */
export interface ListFlags extends OperationsFlags {
  json?: boolean;
  all?: boolean;
}

/** `cluster operations [OP]`: the running and recent ones (every one with --all), or one in detail. */
export async function listOperations(ctx: CliContext, id: string | undefined, flags: ListFlags): Promise<void> {
  await withOperations(ctx, flags, async ({ api }) => {
    if (id !== undefined) {
      const record = await notFoundExits(() => api.get(id));
      if (record === undefined) return;
      ctx.print(flags.json ? JSON.stringify(operationJson(record)) : operationDetail(record));
      return;
    }
    const records = await api.list({ all: flags.all ?? false });
    if (flags.json) ctx.print(JSON.stringify({ operations: records.map((r) => operationJson(r)) }));
    else if (records.length === 0) ctx.print(flags.all ? 'no operations' : 'no operations running or recently finished (--all lists every one)');
    else ctx.print(operationsTable(records));
  });
}

/** Flags of `cluster cancel`. */
export interface CancelFlags extends OperationsFlags {
  wait: boolean;
  json?: boolean;
}

/** `cluster cancel OP`: `cancelling` by compare-and-swap, then (unless --no-wait) waits for `cancelled`. */
export async function cancelOperation(ctx: CliContext, id: string, flags: CancelFlags): Promise<void> {
  await withOperations(ctx, flags, async (session) => {
    const record = await notFoundExits(() => session.api.cancel(id, requestedBy()));
    if (record === undefined) return;
    if (!flags.wait) {
      ctx.print(flags.json ? JSON.stringify(operationJson(record)) : `${record.id} ${record.state}`);
      return;
    }
    const final = await waitForOperation(ctx, session, record);
    if (final.state === 'completed') throw new StoreError('STORE_OPERATION_FINISHED', `operation ${final.id} completed before the coordinator acted on the cancel: ${operationSummary(final.args)} stays done`, { context: { operation: final.id } });
    if (final.state === 'failed') throw operationFailed(final);
    // The runner's message says "cancelled: …" itself.
    ctx.print(flags.json ? JSON.stringify(operationJson(final)) : `${final.id} cancelled: ${final.message?.replace(/^cancelled: /, '') ?? operationSummary(final.args)}`);
  });
}

/** Runs `fn`; STORE_OPERATION_NOT_FOUND prints its message and sets exit code 3 (not found), as `kv get` does; a malformed id is a usage error. */
async function notFoundExits<T>(fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof StoreError) || err.code !== 'STORE_OPERATION_NOT_FOUND') throw asUsage(err);
    process.stderr.write(`shardpipe: ${err.message} [${err.code}]\n`);
    process.exitCode = EXIT.notFound;
    return undefined;
  }
}
