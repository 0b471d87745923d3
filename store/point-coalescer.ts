import { Metadata, status } from '@grpc/grpc-js';
import type { CallLimits } from './call-limits.js';
import { MAX_MULTI_OPS, MULTI_MAX_BYTES } from './field-limits.js';
import { storeErrorOf } from './grpc-errors.js';
import type {
  DeleteRequest,
  DeleteResponse,
  GetRequest,
  GetResponse,
  MultiOp,
  MultiRequest,
  MultiResponse,
  MultiResult,
  PutRequest,
  PutResponse,
} from './proto/gen/shardpipe/store/v1/store.js';
import { StoreError } from './store-errors.js';

/** The point operations with their request and response messages. */
export interface PointMethods {
  get: [GetRequest, GetResponse];
  put: [PutRequest, PutResponse];
  delete: [DeleteRequest, DeleteResponse];
}
export type PointKind = keyof PointMethods;

/**
 * The two calls the coalescer makes on one node's channel. `traceparent` is the W3C trace context
 * of the op's caller (tracing on); a Multi gets each op's, in op order (undefined when none has one).
 */
export interface PointTransport {
  readonly address: string;
  plain<K extends PointKind>(kind: K, request: PointMethods[K][0], limits: CallLimits, traceparent?: string): Promise<PointMethods[K][1]>;
  multi(request: MultiRequest, limits: CallLimits, traceparents?: ReadonlyArray<string | undefined>): Promise<MultiResponse>;
  /**
   * The same request as the next message of the node's MultiStream (store/multi-stream-channel.ts),
   * `writes` when it holds a put or delete. Absent: every op goes as a plain call or a Multi.
   */
  stream?(request: MultiRequest, limits: CallLimits, writes: boolean): Promise<MultiResponse>;
}

interface Pending {
  kind: PointKind;
  request: PointMethods[PointKind][0];
  limits: CallLimits;
  traceparent: string | undefined;
  bytes: number;
  settled: boolean;
  resolve: (response: PointMethods[PointKind][1]) => void;
  reject: (error: unknown) => void;
  onAbort: (() => void) | undefined;
}

/** Options of a PointCoalescer. */
export interface PointCoalescerOptions {
  /** Point RPCs (plain or Multi) in flight on the channel before requests wait to be merged. Default 2. */
  maxInFlight?: number;
  /**
   * Hold every request until the end of the event loop's current I/O phase (setImmediate), so the
   * requests that arrive in the same socket reads go together: for a server fronting many callers
   * (the gateway), whose requests come in over several reads rather than in one turn. A lone request
   * still goes as its plain call, one loop turn later. Default false: a request that finds fewer
   * than `maxInFlight` calls in flight and none waiting goes at once.
   */
  gatherIo?: boolean;
}

/**
 * Merges concurrent point requests to one node into Multi calls, as Redis pipelining or a
 * DataLoader does. With a stream transport (untraced ops), every batch, a lone op included, goes
 * as a message of the node's MultiStream instead of a call of its own: a message costs both sides
 * a fraction of a unary call (no HTTP/2 stream, headers or status per batch); a node that answers
 * UNIMPLEMENTED for MultiStream gets calls from then on. Batching is the same either way. A
 * request that finds fewer than `maxInFlight` point calls in flight and none waiting goes at
 * once (without a stream as its plain Get/Put/Delete), so a lone caller pays nothing extra; the
 * others wait for a call to finish and go together as one Multi (at most MAX_MULTI_OPS ops and
 * MULTI_MAX_BYTES key + value bytes; a larger op goes alone). With other calls in flight a Multi
 * takes an even share of the ops pending on the channel (theirs and the waiting), the rest going
 * with the next free slot, so concurrent callers settle into calls of equal size instead of one
 * call per op beside one carrying all the others. Every request gets the answer of its own slot,
 * as its plain call would answer it. A node that answers UNIMPLEMENTED for Multi (it predates it)
 * gets plain calls from then on.
 */
export class PointCoalescer {
  private readonly maxInFlight: number;
  private readonly gatherIo: boolean;
  private inFlight = 0;
  /** Ops carried by the calls in flight. */
  private inFlightOps = 0;
  private waiting: Pending[] = [];
  private waitingBytes = 0;
  private multiSupported = true;
  private streamSupported: boolean;
  private flushScheduled = false;
  private readonly flushNow = (): void => {
    this.flushScheduled = false;
    this.flush(true);
  };
  private readonly plainDone = (): void => this.callDone(1, false);

  /**
   * A call finished. What waits goes out once the callers just answered have sent their next
   * requests (process.nextTick runs after the promise continuations of this turn): sending at
   * once would split the batch, the earliest of them going alone.
   */
  private callDone(ops: number, wasMulti: boolean): void {
    this.inFlight--;
    this.inFlightOps -= ops;
    if (!this.flushScheduled && this.inFlight < this.maxInFlight && (wasMulti || this.waiting.length > 0)) {
      this.flushScheduled = true;
      process.nextTick(this.flushNow);
    }
  }

  constructor(
    private readonly transport: PointTransport,
    options: PointCoalescerOptions = {},
  ) {
    const maxInFlight = options.maxInFlight ?? 2;
    if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 64) throw new RangeError(`pointCallsInFlight must be 1–64, got ${maxInFlight}`);
    this.maxInFlight = maxInFlight;
    this.gatherIo = options.gatherIo ?? false;
    this.streamSupported = transport.stream !== undefined;
  }

  /** Whether Multi is still used (false once the node answered UNIMPLEMENTED). */
  get usesMulti(): boolean {
    return this.multiSupported;
  }

  /** Sends one op; `traceparent` (the caller's span, tracing on) goes with its call, plain or Multi. */
  call<K extends PointKind>(kind: K, request: PointMethods[K][0], limits: CallLimits, traceparent?: string): Promise<PointMethods[K][1]> {
    const bytes = opBytes(kind, request);
    const goesNow = !this.gatherIo && this.inFlight < this.maxInFlight && this.waiting.length === 0 && !this.flushScheduled;
    const streamed = this.streamSupported && traceparent === undefined && bytes < MULTI_MAX_BYTES;
    if (!streamed && (!this.multiSupported || bytes >= MULTI_MAX_BYTES || goesNow)) return this.plain(kind, request, limits, traceparent);
    if (limits.signal?.aborted) return Promise.reject(cancelled(kind, this.transport.address, limits.signal));
    return new Promise((resolve, reject) => {
      const pending: Pending = { kind, request, limits, traceparent, bytes, settled: false, resolve: resolve as Pending['resolve'], reject, onAbort: undefined };
      const signal = limits.signal;
      if (signal !== undefined) {
        // Aborted while waiting: it leaves the batch. Aborted in flight: its outcome is unknown, as for a cancelled plain call.
        pending.onAbort = () => settle(pending, undefined, cancelled(kind, this.transport.address, signal));
        signal.addEventListener('abort', pending.onAbort, { once: true });
      }
      if (streamed && goesNow) {
        this.send([pending]);
        return;
      }
      if (this.waitingBytes + bytes > MULTI_MAX_BYTES) this.flush();
      this.waiting.push(pending);
      this.waitingBytes += bytes;
      if (this.waiting.length >= MAX_MULTI_OPS) this.flush();
      else if (this.gatherIo && !this.flushScheduled && this.inFlight < this.maxInFlight) {
        // With calls in flight at the limit, the next one to finish sends what waits (callDone).
        this.flushScheduled = true;
        setImmediate(this.flushNow);
      }
    });
  }

  private plain<K extends PointKind>(kind: K, request: PointMethods[K][0], limits: CallLimits, traceparent: string | undefined): Promise<PointMethods[K][1]> {
    this.inFlight++;
    this.inFlightOps++;
    const call = this.transport.plain(kind, request, limits, traceparent);
    // Registered before the caller's own continuation, so a caller that sends again at once finds the slot free.
    call.then(this.plainDone, this.plainDone);
    return call;
  }

  /**
   * Sends what is waiting: one op as its plain call, more as one Multi. `share`: only an even
   * share with the calls in flight (a flush because the batch is full sends all of it).
   */
  private flush(share = false): void {
    let batch = this.waiting.filter((p) => !p.settled);
    this.waiting = [];
    this.waitingBytes = 0;
    if (batch.length === 0) return;
    if (share && this.inFlight > 0 && this.inFlight < this.maxInFlight && this.multiSupported) {
      // An even share with the calls in flight; the rest waits for the next call to finish.
      const even = Math.ceil((batch.length + this.inFlightOps) / (this.inFlight + 1));
      if (even < batch.length) {
        this.waiting = batch.slice(even);
        for (const p of this.waiting) this.waitingBytes += p.bytes;
        batch = batch.slice(0, even);
      }
    }
    this.send(batch);
  }

  /**
   * Sends a batch: over the node's MultiStream when it has one (untraced ops), else one op as its
   * plain call and more as one Multi.
   */
  private send(batch: Pending[]): void {
    // Tracing is on or off for the whole process: the first op says whether the ops carry trace context.
    const streamed = this.streamSupported && batch[0]!.traceparent === undefined;
    if (!streamed && (batch.length === 1 || !this.multiSupported)) {
      for (const p of batch) this.sendPlain(p);
      return;
    }
    let deadline = Infinity;
    for (const p of batch) deadline = Math.min(deadline, p.limits.deadline);
    const ops = batch.length;
    this.inFlight++;
    this.inFlightOps += ops;
    const request: MultiRequest = { ops: batch.map(toOp) };
    let call: Promise<MultiResponse>;
    if (streamed) {
      let writes = false;
      for (const p of batch) if (p.kind !== 'get') writes = true;
      call = this.transport.stream!(request, { deadline }, writes);
    } else {
      const traceparents = batch[0]!.traceparent === undefined ? undefined : batch.map((p) => p.traceparent);
      call = this.transport.multi(request, { deadline }, traceparents);
    }
    call.then(
      (response) => {
        this.callDone(ops, ops > 1);
        if (response.results.length !== batch.length) {
          const error = new StoreError('STORE_INTERNAL', `store node ${this.transport.address} answered a Multi of ${batch.length} ops with ${response.results.length} results`);
          for (const p of batch) settle(p, undefined, error);
          return;
        }
        batch.forEach((p, i) => answer(p, response.results[i]!, this.transport.address));
      },
      (error: unknown) => {
        this.callDone(ops, ops > 1);
        if (isUnimplemented(error)) {
          // A node older than MultiStream (then calls from now on, starting with these), or older than Multi (plain calls).
          if (streamed) this.streamSupported = false;
          else this.multiSupported = false;
          const left = batch.filter((p) => !p.settled);
          if (left.length > 0) this.send(left);
          return;
        }
        if (error instanceof StoreError && error.code === 'STORE_BATCH_TOO_LARGE') {
          // Over the node's receive limit (a node run with a tiny --max-batch-bytes): each op alone fits.
          for (const p of batch) if (!p.settled) this.sendPlain(p);
          return;
        }
        for (const p of batch) settle(p, undefined, error);
      },
    );
  }

  private sendPlain(p: Pending): void {
    if (p.settled) return;
    this.plain(p.kind, p.request as never, p.limits, p.traceparent).then(
      (response) => settle(p, response, undefined),
      (error: unknown) => settle(p, undefined, error),
    );
  }
}

function settle(p: Pending, response: PointMethods[PointKind][1] | undefined, error: unknown): void {
  if (p.settled) return;
  p.settled = true;
  if (p.onAbort !== undefined) p.limits.signal?.removeEventListener('abort', p.onAbort);
  if (error !== undefined) p.reject(error);
  else p.resolve(response!);
}

/** One slot's answer, as the plain call would have given it. */
function answer(p: Pending, result: MultiResult, node: string): void {
  if (result.code !== status.OK) {
    const error = storeErrorOf(result.code, result.errorCode, result.message, {
      cause: slotStatus(result),
      context: { node, method: p.kind },
      mapVersion: result.mapVersion,
      currentEtag: result.currentEtag,
      retryAfterMs: result.retryAfterMs,
    });
    settle(p, undefined, error);
    return;
  }
  const response = result[p.kind];
  if (response === undefined) settle(p, undefined, new StoreError('STORE_INTERNAL', `store node ${node} answered a ${p.kind} op of a Multi without a ${p.kind} result`));
  else settle(p, response, undefined);
}

/**
 * A failed slot's status as grpc-js gives a failed call's (an Error with `code`, `details` and
 * `metadata`), the cause of its StoreError: an op answered in a slot fails as its plain call would.
 */
function slotStatus(result: MultiResult): Error & { code: number; details: string; metadata: Metadata } {
  return Object.assign(new Error(`${result.code} ${status[result.code] ?? 'UNKNOWN'}: ${result.message}`), { code: result.code, details: result.message, metadata: new Metadata() });
}

function toOp(p: Pending): MultiOp {
  switch (p.kind) {
    case 'get':
      return { get: p.request as GetRequest };
    case 'put':
      return { put: p.request as PutRequest };
    case 'delete':
      return { delete: p.request as DeleteRequest };
  }
}

function opBytes(kind: PointKind, request: PointMethods[PointKind][0]): number {
  return request.key.length + (kind === 'put' ? (request as PutRequest).value.length : 0);
}

function cancelled(kind: PointKind, node: string, signal: AbortSignal): StoreError {
  return new StoreError('STORE_CANCELLED', `${kind} to ${node} cancelled`, { cause: signal.reason });
}

function isUnimplemented(error: unknown): boolean {
  return error instanceof StoreError && (error.cause as { code?: unknown } | undefined)?.code === status.UNIMPLEMENTED;
}
