import { ServerInterceptingCall, status as grpcStatus, type ServerInterceptingCallInterface, type ServerInterceptor } from '@grpc/grpc-js';
import { constants as http2Constants, type ServerHttp2Stream } from 'node:http2';
import type { Logger } from '../common/index.js';
import { toGrpcStatus } from './grpc-errors.js';
import type { BudgetLease, InflightBudget } from './inflight-budget.js';
import { StoreError } from './store-errors.js';

/** What the budget interceptor needs to know about the service it guards. */
export interface BudgetInterceptorOptions {
  budget: InflightBudget;
  /** Only calls whose path starts with this are budgeted (grpc.health.v1 must answer when overloaded). */
  servicePrefix: string;
  /** Bytes to reserve before a call's request is read: its largest possible size (charged REQUEST_COPIES_HELD times). */
  reserveBytes: (method: string) => number;
  /**
   * Methods admitted by their message's length prefix (the first 5 bytes of the first DATA frame)
   * rather than at `reserveBytes` up front: requests whose size varies widely (BulkInsert, Multi, Put, Patch).
   */
  sizedMethods?: ReadonlySet<string>;
  /**
   * The node's HTTP/2 stream window (SETTINGS_INITIAL_WINDOW_SIZE): what a stream that is not read
   * keeps receiving. A waiting call holds that much of the budget (up to its request's size).
   */
  streamWindowBytes: number;
  /** Called for every refused call (metrics). */
  onRefused?: (method: string) => void;
  /** Told once when grpc-js no longer shows the HTTP/2 stream of a call (refusals then cannot reset it). */
  logger?: Logger;
}

/** Spare time kept for the refusal to reach a caller before its own deadline. */
const DEADLINE_MARGIN_MS = 50;
const MIN_RETRY_AFTER_MS = 50;
const MAX_RETRY_AFTER_MS = 5000;
/** What a request holds besides its byte fields (message framing, numbers), per field. */
const FIELD_OVERHEAD_BYTES = 16;
/**
 * Copies of a request a node holds while handling it: the received message and its decoded
 * fields (the generated decoder copies byte fields). A call is charged this many times its bytes.
 */
export const REQUEST_COPIES_HELD = 2;

/**
 * Bounds the request bytes a node holds at once. A call is admitted before its body is read:
 * a sized method (BulkInsert, Multi, Put, Patch) by the length its first DATA frame announces, any other at
 * the largest request of its method, each counted REQUEST_COPIES_HELD times; the lease shrinks to
 * the decoded request's real size (once for a packed BulkInsert, whose rows are views of the
 * received message) and is given back when the call ends. A call without room waits, holding the
 * bytes its unread stream may receive meanwhile (the node's stream window, up to the request) —
 * with a wide window few can wait. One that finds no room to wait, or none within the budget's wait
 * (or its own deadline), ends with RESOURCE_EXHAUSTED / STORE_OVERLOADED and a retry hint, and its
 * stream is reset (RST_STREAM NO_ERROR after the status, RFC 9113 §8.1) so the rest of its body is
 * never sent, let alone buffered.
 */
export function createBudgetInterceptor(options: BudgetInterceptorOptions): ServerInterceptor {
  const { budget, servicePrefix } = options;
  let warned = false;
  const streamOf = (call: ServerInterceptingCallInterface): ServerHttp2Stream | undefined => {
    const stream = http2StreamOf(call);
    if (stream === undefined && !warned) {
      warned = true;
      options.logger?.warn('grpc-js server calls no longer show their HTTP/2 stream: refused calls are not reset and BulkInsert/Multi are admitted at their largest size');
    }
    return stream;
  };
  return (descriptor, call) => {
    if (!descriptor.path.startsWith(servicePrefix)) return new ServerInterceptingCall(call);
    const method = descriptor.path.slice(descriptor.path.lastIndexOf('/') + 1);
    return new BudgetedCall(call, budget, method, options, streamOf(call));
  };
}

/** What of grpc-js 1.14's server calls this reaches into: each interceptor's next call, the base call's stream. */
interface CallInternals {
  nextCall?: unknown;
  stream?: unknown;
}

/**
 * The HTTP/2 stream under a grpc-js server call (grpc-js keeps it on the base call, under the
 * interceptors' `nextCall` chain; no public API shows it). Undefined when that shape is gone —
 * test/integration/store-inflight-budget.test.ts fails then.
 */
export function http2StreamOf(call: unknown): ServerHttp2Stream | undefined {
  let at = call as CallInternals | undefined;
  for (let depth = 0; depth < 16 && at !== null && typeof at === 'object'; depth++) {
    const stream = at.stream as Partial<ServerHttp2Stream> | undefined;
    if (stream !== null && typeof stream === 'object' && typeof stream.close === 'function' && typeof stream.pause === 'function' && typeof stream.prependListener === 'function') return stream as ServerHttp2Stream;
    at = at.nextCall as CallInternals | undefined;
  }
  return undefined;
}

/** A gRPC message's frame header: compressed flag (1 byte) and length (4 bytes, big-endian). */
const GRPC_FRAME_HEADER_BYTES = 5;

class BudgetedCall extends ServerInterceptingCall {
  private lease: BudgetLease | undefined;
  /** Admitted (with a lease, or a method the budget lets through); until then a message is held. */
  private admitted = false;
  private firstReadStarted = false;
  private ended = false;
  // Created only when a call has to wait for room: most never do.
  private waiting: AbortController | undefined;
  /** A sized call's message that arrived before its lease did (all of it came in the first frames). */
  private held: { message: unknown; pass: (message: unknown) => void } | undefined;
  private header: Buffer | undefined;
  private readonly onFrame = (chunk: Buffer): void => this.readHeader(chunk);

  constructor(
    private readonly inner: ServerInterceptingCallInterface,
    private readonly budget: InflightBudget,
    private readonly method: string,
    private readonly options: BudgetInterceptorOptions,
    private readonly stream: ServerHttp2Stream | undefined,
  ) {
    super(inner, {
      start: (next) =>
        next({
          onReceiveMessage: (message, pass) => {
            if (!this.admitted && !this.ended) {
              this.held = { message, pass };
              return;
            }
            this.lease?.shrink(copiesHeld(this.method, message) * requestBytes(message));
            pass(message);
          },
          onCancel: () => this.end(),
        }),
      sendStatus: (status, pass) => {
        this.end();
        pass(status);
      },
    });
  }

  override startRead(): void {
    // Only the first read (the request message) waits for room; later ones (half-close) pass.
    if (this.firstReadStarted) {
      super.startRead();
      return;
    }
    this.firstReadStarted = true;
    const largest = this.options.reserveBytes(this.method);
    // A method that reserves nothing bypasses the queue (chain forwards: see store-server.ts).
    if (largest === 0) {
      this.admitted = true;
      super.startRead();
      return;
    }
    if (this.stream !== undefined && this.options.sizedMethods?.has(this.method) === true) {
      // Read on to the length prefix; readHeader runs before grpc-js sees each frame.
      this.stream.prependListener('data', this.onFrame);
      super.startRead();
      return;
    }
    this.admit(copiesReserved(this.method) * largest, largest, () => super.startRead());
  }

  private readHeader(chunk: Buffer): void {
    const have = this.header === undefined ? chunk : Buffer.concat([this.header, chunk]);
    if (have.length < GRPC_FRAME_HEADER_BYTES) {
      this.header = have;
      return;
    }
    this.stream!.removeListener('data', this.onFrame);
    this.header = undefined;
    const largest = this.options.reserveBytes(this.method);
    const compressed = (have[0]! & 1) === 1;
    // A compressed message may inflate to the receive limit; a longer one grpc-js refuses itself.
    const size = compressed ? largest : Math.min(largest, have.readUInt32BE(1) + GRPC_FRAME_HEADER_BYTES);
    const stream = this.stream!;
    this.admit(copiesReserved(this.method) * size, size, () => {
      if (this.held !== undefined) {
        const { message, pass } = this.held;
        this.held = undefined;
        this.lease!.shrink(copiesHeld(this.method, message) * requestBytes(message));
        pass(message);
      }
      if (stream.isPaused()) stream.resume();
    }, () => stream.pause());
  }

  /**
   * Takes `reserve` bytes and runs `admitted`; without room at once, runs `onWait` and waits,
   * holding what the unread stream may buffer of its `requestSize` bytes meanwhile; else refuses.
   */
  private admit(reserve: number, requestSize: number, admitted: () => void, onWait?: () => void): void {
    // The common case, room at once: admitted synchronously, without a timer, signal or promise.
    const now = this.ended ? undefined : this.budget.tryAcquire(reserve);
    if (now !== undefined) {
      this.lease = now;
      this.admitted = true;
      admitted();
      return;
    }
    if (this.ended) return;
    const deadline = this.inner.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    const waitMs = Math.min(this.budget.maxWaitMs, Number.isFinite(deadlineMs) ? deadlineMs - Date.now() - DEADLINE_MARGIN_MS : Infinity);
    onWait?.();
    this.waiting = new AbortController();
    const holdBytes = Math.min(this.options.streamWindowBytes, requestSize);
    this.budget.acquire(reserve, { waitMs, signal: this.waiting.signal, holdBytes }).then((lease) => {
      if (this.ended) {
        lease?.release();
        return;
      }
      if (lease === undefined) {
        this.refuse(reserve);
        return;
      }
      this.lease = lease;
      this.admitted = true;
      admitted();
    }, (err: unknown) => this.sendStatus(statusOf(err)));
  }

  private refuse(reserve: number): void {
    this.options.onRefused?.(this.method);
    const budget = this.budget;
    // Roughly how long the queue ahead takes to clear, if requests drain at about one budget per second.
    const backlog = (budget.usedBytes + budget.waitingBytes) / budget.limitBytes;
    const retryAfterMs = Math.round(Math.min(MAX_RETRY_AFTER_MS, Math.max(MIN_RETRY_AFTER_MS, backlog * 500)));
    const error = new StoreError(
      'STORE_OVERLOADED',
      `node is over its in-flight request budget (${budget.usedBytes} of ${budget.limitBytes} bytes held, ${budget.waitingBytes} waiting; this ${this.method} needs up to ${reserve}): retry after ${retryAfterMs} ms`,
      { retryAfterMs },
    );
    this.sendStatus(statusOf(error));
    // The status is out (the reset follows it); the rest of the body must not be sent to us.
    const stream = this.stream;
    if (stream !== undefined && !stream.destroyed && !stream.closed) stream.close(http2Constants.NGHTTP2_NO_ERROR);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.waiting?.abort();
    this.lease?.release();
    this.held = undefined;
    if (this.header !== undefined || this.stream?.listeners('data').includes(this.onFrame)) this.stream?.removeListener('data', this.onFrame);
  }
}

/**
 * Times its size a BulkInsert holds at its peak on the node, measured (one 15 MiB call into an idle
 * node, VmHWM, test/integration/store-inflight-budget.test.ts): the received DATA frames and the
 * message grpc-js joins them into, then the decoded copies (per-row form: the rows' bytes and the
 * encoded records), the write group's layout and LevelDB's copy in its batch. Per-row form +91 MiB
 * (~6×), packed +75 MiB (~5×); of that the frames are garbage once joined and one write buffer's
 * worth is the memtable, bounded per partition, so a call is charged for what it keeps while it
 * runs: 4× per row, 3× packed (whose rows are views of the message, not copies).
 */
export const BULK_ROWS_COPIES_HELD = 4;
export const BULK_PACKED_COPIES_HELD = 3;

/** Copies of its size a call is charged before its form is known (sized methods: at its length prefix). */
function copiesReserved(method: string): number {
  return method === 'BulkInsert' ? BULK_ROWS_COPIES_HELD : REQUEST_COPIES_HELD;
}

/** Copies of its size a decoded request is charged (see BULK_ROWS_COPIES_HELD). */
export function copiesHeld(method: string, message: unknown): number {
  if (method !== 'BulkInsert') return REQUEST_COPIES_HELD;
  const packed = message !== null && typeof message === 'object' && (message as { packed?: unknown }).packed !== undefined;
  return packed ? BULK_PACKED_COPIES_HELD : BULK_ROWS_COPIES_HELD;
}

type PartialStatusObject = Parameters<ServerInterceptingCallInterface['sendStatus']>[0];

function statusOf(err: unknown): PartialStatusObject {
  const status = toGrpcStatus(err);
  return { code: status.code ?? grpcStatus.INTERNAL, details: status.details ?? '', metadata: status.metadata ?? null };
}

/**
 * The bytes a decoded request holds: its byte and string fields, two levels into nested messages
 * (BulkInsertRequest.rows[i].value, MultiRequest.ops[i].put.value).
 */
export function requestBytes(message: unknown): number {
  if (message === null || typeof message !== 'object') return FIELD_OVERHEAD_BYTES;
  let bytes = 0;
  for (const value of Object.values(message as Record<string, unknown>)) bytes += fieldBytes(value, 2);
  return bytes;
}

function fieldBytes(value: unknown, depth: number): number {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return value.byteLength + FIELD_OVERHEAD_BYTES;
  if (typeof value === 'string') return value.length + FIELD_OVERHEAD_BYTES;
  if (Array.isArray(value)) return value.reduce((sum: number, v) => sum + fieldBytes(v, depth), FIELD_OVERHEAD_BYTES);
  if (value !== null && typeof value === 'object' && depth > 0) {
    let sum = FIELD_OVERHEAD_BYTES;
    for (const v of Object.values(value as Record<string, unknown>)) sum += fieldBytes(v, depth - 1);
    return sum;
  }
  return FIELD_OVERHEAD_BYTES;
}
