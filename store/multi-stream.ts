import type { ServerDuplexStream } from '@grpc/grpc-js';
import type { BudgetLease, InflightBudget } from './inflight-budget.js';
import { toGrpcStatus } from './grpc-errors.js';
import type { MultiRequest, MultiResponse } from './proto/gen/shardpipe/store/v1/store.js';
import { StoreError } from './store-errors.js';

/** Options of the node's MultiStream calls. */
export interface MultiStreamsOptions {
  /** The node's in-flight budget: each request holds its bytes (twice, as a call's) until it is answered. Default: none. */
  budget?: InflightBudget;
}

/** How one stream's requests are answered (store-service.ts: as Multi answers them). */
export interface MultiStreamHandler {
  /** The request's answer; throws only for a request that cannot be answered slot by slot (the stream then ends with the error). */
  answer(request: MultiRequest): MultiResponse | Promise<MultiResponse>;
  /** The answer of a request whose every slot fails with `error` (the node has no room for it, or is stopping). */
  failAll(request: MultiRequest, error: unknown): MultiResponse;
}

/**
 * Requests a stream may have unanswered before the node stops reading it (HTTP/2 flow control
 * then holds the client back): a client keeps a few batches in flight, not hundreds.
 */
const MAX_UNANSWERED = 64;
/** Copies of a request held while it is answered (the received message and its decoded fields), as the budget interceptor counts a call. */
const COPIES_HELD = 2;
/** What a request holds besides its keys and values, per op. */
const OP_OVERHEAD_BYTES = 32;

/**
 * The node's side of MultiStream: every open stream, each answering its requests in the order
 * they came (a later request answered first waits for the ones before it), each request's bytes
 * held in the node's in-flight budget until it is answered. `endAll` (a node stopping) answers
 * what each stream has received and ends it, so a graceful stop does not wait for clients to
 * hang up.
 */
export class MultiStreams {
  private readonly open = new Set<ServedStream>();
  private ending = false;

  constructor(private readonly options: MultiStreamsOptions = {}) {}

  /** Serves one MultiStream call until the client half-closes it, it is cancelled or `endAll`. */
  serve(call: ServerDuplexStream<MultiRequest, MultiResponse>, handler: MultiStreamHandler): void {
    const served = new ServedStream(call, handler, this.options, () => this.open.delete(served));
    this.open.add(served);
    if (this.ending) served.end();
  }

  /** Ends every stream once what it has received is answered; streams opened later end at once. Idempotent. */
  endAll(): void {
    this.ending = true;
    for (const s of this.open) s.end();
  }
}

interface Entry {
  response: MultiResponse | undefined;
  lease: BudgetLease | undefined;
  /** The stream ends with this error once the answers before it are written. */
  fatal?: unknown;
}

/** The answer of an entry whose stream is gone: never written, it only lets the entries behind it go. */
const DROPPED: MultiResponse = { results: [] };

class ServedStream {
  private readonly entries: Entry[] = [];
  /** Reading is paused: too many requests unanswered, or the client is not reading the answers. */
  private paused = false;
  private writeBlocked = false;
  private ending = false;
  /** A request ended the stream: nothing after it runs. */
  private failed = false;
  private closed = false;

  constructor(
    private readonly call: ServerDuplexStream<MultiRequest, MultiResponse>,
    private readonly handler: MultiStreamHandler,
    private readonly options: MultiStreamsOptions,
    private readonly onClosed: () => void,
  ) {
    call.on('data', (request: MultiRequest) => this.receive(request));
    call.on('end', () => this.end());
    call.on('drain', () => {
      this.writeBlocked = false;
      this.flush();
    });
    call.on('cancelled', () => this.close());
    call.on('error', () => this.close());
    call.on('close', () => this.close());
  }

  /** Stops running requests; ends the call once every request received is answered. */
  end(): void {
    if (this.ending) return;
    this.ending = true;
    this.flush();
  }

  private receive(request: MultiRequest): void {
    const entry: Entry = { response: undefined, lease: undefined };
    this.entries.push(entry);
    if (this.closed || this.failed) return this.settle(entry, DROPPED);
    if (this.ending) {
      // Received after the node began to stop: not run, so the client may send it elsewhere.
      return this.settle(entry, this.handler.failAll(request, new StoreError('STORE_UNAVAILABLE', 'the store node is stopping: send the request again')));
    }
    if (this.entries.length >= MAX_UNANSWERED) this.pause();
    const budget = this.options.budget;
    if (budget === undefined) return this.run(entry, request, undefined);
    const bytes = COPIES_HELD * requestBytes(request);
    const lease = budget.tryAcquire(bytes);
    if (lease !== undefined) return this.run(entry, request, lease);
    budget.acquire(bytes).then(
      (waited) => (waited === undefined ? this.settle(entry, this.handler.failAll(request, overloaded(budget.maxWaitMs))) : this.run(entry, request, waited)),
      (err: unknown) => this.settle(entry, this.handler.failAll(request, err)),
    );
  }

  private run(entry: Entry, request: MultiRequest, lease: BudgetLease | undefined): void {
    entry.lease = lease;
    if (this.closed) return this.settle(entry, DROPPED);
    let answer: MultiResponse | Promise<MultiResponse>;
    try {
      answer = this.handler.answer(request);
    } catch (err) {
      // Not decodable, or a shape that is the caller's contract (op count, kinds per op): the stream
      // ends with the error, as Multi's call does; everything about one op is answered in its slot.
      return this.fail(entry, err);
    }
    if (answer instanceof Promise) {
      answer.then(
        (response) => this.settle(entry, response),
        (err: unknown) => this.settle(entry, this.handler.failAll(request, err)),
      );
    } else this.settle(entry, answer);
  }

  private settle(entry: Entry, response: MultiResponse): void {
    entry.response = response;
    this.flush();
  }

  /** Writes the answers that are next in order, resumes reading when there is room again, and ends an ending stream once nothing waits. */
  private flush(): void {
    while (this.entries.length > 0 && this.entries[0]!.response !== undefined) {
      const entry = this.entries.shift()!;
      entry.lease?.release();
      if (this.closed) continue;
      if (entry.fatal !== undefined) {
        this.call.emit('error', toGrpcStatus(entry.fatal));
        this.close();
        continue;
      }
      if (!this.call.write(entry.response!)) {
        // The client does not read its answers as fast as they come: read no more requests until it does.
        this.writeBlocked = true;
        this.pause();
      }
    }
    if (this.closed) return;
    if (this.paused && !this.writeBlocked && this.entries.length < MAX_UNANSWERED / 2) {
      this.paused = false;
      this.call.resume();
    }
    if (this.ending && this.entries.length === 0) {
      this.call.end();
      this.close();
    }
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.call.pause();
  }

  /** `entry` ends the stream with `err`, after the answers before it. */
  private fail(entry: Entry, err: unknown): void {
    this.failed = true;
    entry.fatal = err;
    this.settle(entry, DROPPED);
  }

  /** The call is over (ended, cancelled or broken): answers still to come are dropped, and their leases given back as they settle. */
  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClosed();
  }
}

/** Key and value bytes of a request's ops, plus a little per op: what it holds of the budget (once). */
function requestBytes(request: MultiRequest): number {
  let bytes = 0;
  for (const op of request.ops ?? []) {
    const point = op.get ?? op.put ?? op.delete;
    bytes += OP_OVERHEAD_BYTES + (point?.key?.length ?? 0) + (op.put?.value?.length ?? 0);
  }
  return bytes;
}

function overloaded(waitMs: number): StoreError {
  return new StoreError('STORE_OVERLOADED', `the store node has no room for more requests in flight (waited ${waitMs} ms): retry later`, { retryAfterMs: Math.max(50, waitMs) });
}
