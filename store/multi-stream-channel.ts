import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { CallLimits } from './call-limits.js';
import { fromGrpcError } from './grpc-errors.js';
import type { MultiRequest, MultiResponse } from './proto/gen/shardpipe/store/v1/store.js';
import { StoreError } from './store-errors.js';

/** A stream that carried nothing for this long (checked every as long) is ended, so an idle client lets its process exit. */
const IDLE_MS = 250;

interface Sent {
  resolve: (response: MultiResponse) => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
  settled: boolean;
}

/**
 * The client's side of one MultiStream call to a node (see store/multi-stream.ts): opened when
 * first needed, each request written as the next message and each answer handed to the request
 * at its place, as the node answers in order. A request not answered by its deadline ends the
 * stream: it fails with STORE_DEADLINE_EXCEEDED and so does every request behind it (their
 * outcome is unknown, as a timed-out call's; the next request opens a new stream). A broken
 * stream fails what it carried with its status, as a call would (STORE_UNAVAILABLE for a node
 * that went away, UNIMPLEMENTED for a node that predates MultiStream).
 */
export class MultiStreamChannel {
  private call: ClientDuplexStream<MultiRequest, MultiResponse> | undefined;
  private sent: Sent[] = [];
  private used = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly address: string,
    private readonly open: () => ClientDuplexStream<MultiRequest, MultiResponse>,
  ) {}

  /** Sends `request` as the stream's next message; resolves with its answer. */
  send(request: MultiRequest, limits: CallLimits): Promise<MultiResponse> {
    if (this.closed) return Promise.reject(new StoreError('STORE_CLOSED', 'the store client is closed'));
    const call = this.call ?? this.start();
    this.used = true;
    return new Promise((resolve, reject) => {
      const entry: Sent = { resolve, reject, settled: false, timer: setTimeout(() => this.expired(call), Math.max(0, limits.deadline - Date.now())) };
      this.sent.push(entry);
      call.write(request);
    });
  }

  /** Fails what is in flight (STORE_CLOSED) and ends the stream. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const call = this.call;
    if (call !== undefined) this.broken(call, new StoreError('STORE_CLOSED', 'the store client is closed'));
    call?.cancel();
  }

  private start(): ClientDuplexStream<MultiRequest, MultiResponse> {
    const call = this.open();
    this.call = call;
    call.on('data', (response: MultiResponse) => {
      if (call !== this.call) return;
      const entry = this.sent.shift();
      if (entry === undefined) {
        this.broken(call, new StoreError('STORE_INTERNAL', `store node ${this.address} sent a MultiStream answer to no request`));
        call.cancel();
        return;
      }
      clearTimeout(entry.timer);
      if (!entry.settled) {
        entry.settled = true;
        entry.resolve(response);
      }
    });
    call.on('error', (err: unknown) => this.broken(call, fromGrpcError(err, { node: this.address, method: 'multiStream' })));
    call.on('end', () => this.broken(call, new StoreError('STORE_UNAVAILABLE', `store node ${this.address} ended the MultiStream before answering every request: send them again`)));
    this.idleTimer = setInterval(() => {
      if (this.sent.length === 0 && !this.used && call === this.call) {
        this.stop(call);
        call.end();
      }
      this.used = false;
    }, IDLE_MS).unref();
    return call;
  }

  /** The oldest request's deadline passed: the stream is given up (its answers, if they come, would be late for everything behind it too). */
  private expired(call: ClientDuplexStream<MultiRequest, MultiResponse>): void {
    if (call !== this.call) return;
    this.broken(call, new StoreError('STORE_DEADLINE_EXCEEDED', `store node ${this.address} did not answer a MultiStream request within its deadline`, { context: { node: this.address, method: 'multiStream' } }));
    call.cancel();
  }

  /** Fails every request `call` carries with `error`; the next send opens a new stream. */
  private broken(call: ClientDuplexStream<MultiRequest, MultiResponse>, error: StoreError): void {
    if (call !== this.call) return;
    this.stop(call);
    const sent = this.sent;
    this.sent = [];
    for (const entry of sent) {
      clearTimeout(entry.timer);
      if (entry.settled) continue;
      entry.settled = true;
      entry.reject(error);
    }
  }

  private stop(call: ClientDuplexStream<MultiRequest, MultiResponse>): void {
    if (call !== this.call) return;
    this.call = undefined;
    clearInterval(this.idleTimer);
    this.idleTimer = undefined;
  }
}
