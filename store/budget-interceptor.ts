import { ServerInterceptingCall, status as grpcStatus, type ServerInterceptingCallInterface, type ServerInterceptor } from '@grpc/grpc-js';
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
  /** Called for every refused call (metrics). */
  onRefused?: (method: string) => void;
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
 * Bounds the request bytes a node holds at once, counting each request twice (REQUEST_COPIES_HELD).
 * Room for the largest request of the method is taken before the request is read — grpc-js keeps the HTTP/2 stream paused until then, so an
 * unadmitted call buffers at most one flow-control window — and shrunk to the request's real size
 * once it is decoded; it is given back when the call ends. A call that finds no room within the
 * budget's wait (or its own deadline) ends with RESOURCE_EXHAUSTED / STORE_OVERLOADED and a retry hint.
 */
export function createBudgetInterceptor(options: BudgetInterceptorOptions): ServerInterceptor {
  const { budget, servicePrefix } = options;
  return (descriptor, call) => {
    if (!descriptor.path.startsWith(servicePrefix)) return new ServerInterceptingCall(call);
    const method = descriptor.path.slice(descriptor.path.lastIndexOf('/') + 1);
    return new BudgetedCall(call, budget, method, options);
  };
}

class BudgetedCall extends ServerInterceptingCall {
  private lease: BudgetLease | undefined;
  private firstReadStarted = false;
  private ended = false;
  // Created only when a call has to wait for room: most never do.
  private waiting: AbortController | undefined;

  constructor(
    private readonly inner: ServerInterceptingCallInterface,
    private readonly budget: InflightBudget,
    private readonly method: string,
    private readonly options: BudgetInterceptorOptions,
  ) {
    super(inner, {
      start: (next) =>
        next({
          onReceiveMessage: (message, pass) => {
            this.lease?.shrink(REQUEST_COPIES_HELD * requestBytes(message));
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
    const reserve = REQUEST_COPIES_HELD * this.options.reserveBytes(this.method);
    // A method that reserves nothing bypasses the queue (chain forwards: see store-server.ts).
    if (reserve === 0) {
      super.startRead();
      return;
    }
    // The common case, room at once: admitted synchronously, without a timer, signal or promise.
    const now = this.ended ? undefined : this.budget.tryAcquire(reserve);
    if (now !== undefined) {
      this.lease = now;
      super.startRead();
      return;
    }
    const deadline = this.inner.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    const waitMs = Math.min(this.budget.maxWaitMs, Number.isFinite(deadlineMs) ? deadlineMs - Date.now() - DEADLINE_MARGIN_MS : Infinity);
    this.waiting = new AbortController();
    this.budget.acquire(reserve, { waitMs, signal: this.waiting.signal }).then((lease) => {
      if (this.ended) {
        lease?.release();
        return;
      }
      if (lease === undefined) {
        this.refuse(reserve);
        return;
      }
      this.lease = lease;
      super.startRead();
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
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.waiting?.abort();
    this.lease?.release();
  }
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
