import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Logger } from '../common/index.js';
import type { PackedRows } from './packed-rows.js';
import type { Partition } from './partition-map.js';
import type { BulkAssignment, PartitionStore } from './partition-store.js';
import type { StoredRecord } from './record.js';
import { PackedRowsBuilder } from './packed-rows.js';
import { StoreError } from './store-errors.js';

/**
 * What a head applied, shipped down its chain as values (never as the command): a bulk batch's
 * accepted prefix exactly as it arrived plus the head's assignments, or the records point writes
 * produced. A replica writes these and cannot diverge on etags, TTLs or CAS outcomes.
 */
export type ForwardOp =
  | { kind: 'bulk'; rows: PackedRows; assigned: BulkAssignment }
  | { kind: 'points'; nowMs: number; writes: readonly PointApplied[] };

/** One applied point write: the record a put stored, or a delete. */
export type PointApplied = { key: Buffer; record: StoredRecord } | { key: Buffer; deleted: true };

/** One forward between two neighbours of a chain. */
export interface ForwardMessage {
  partitionId: number;
  /** The partition epoch the sender holds; a receiver with another one refuses the forward. */
  epoch: number;
  /** The sender's address: the receiver checks it is its predecessor. */
  from: string;
  /** Names the head's sequence (a new head keeps the stream it inherited). */
  streamId: string;
  /** The head's sequence number of this write, 1, 2, 3, … per stream. */
  seq: number;
  op: ForwardOp;
}

/** Time each replica below the sender took, nearest first: its write and its wait for its successor. */
export interface HopTiming {
  node: string;
  writeMs: number;
  forwardMs: number;
}

export interface ForwardAck {
  seq: number;
  hops: HopTiming[];
}

/** How a replica reaches its successor. The gRPC one is store/chain-forwarder.ts; tests step an in-process one. */
export interface ForwardTransport {
  send(node: string, message: ForwardMessage, options: { timeoutMs: number; signal: AbortSignal }): Promise<ForwardAck>;
}

export interface ChainReplicaOptions {
  /** This node's address (HOST:PORT). */
  node: string;
  store: PartitionStore;
  /** The partition as the current map has it. */
  partition: Partition;
  transport: ForwardTransport;
  /** A forward not answered within this is sent again to the then-current successor. Default 2000. */
  forwardTimeoutMs?: number;
  /** Forwards waiting for their successor's ack at most; more are refused retryable (STORE_OVERLOADED). Default 10000. */
  maxUnacked?: number;
  /** Called when a forward failed or timed out and is sent again (for the coordinator / metrics). */
  onForwardRetry?: (info: { partitionId: number; seq: number; successor: string; error: unknown }) => void;
  logger?: Logger;
}

interface Unacked {
  message: ForwardMessage;
  acked: Promise<HopTiming[]>;
}

interface Waiting {
  message: ForwardMessage;
  resolve: () => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
}

/** Most out-of-order forwards a replica holds while it waits for the ones before them. */
const MAX_WAITING = 1024;
const RETRY_PAUSE_MS = 50;

/**
 * One partition's replica on one node: the chain's write path, without sockets. At the head it
 * numbers applied writes and sends them to its successor; elsewhere it applies forwards strictly in
 * sequence order, durably, then passes them on. The tail's answer is the ack that travels back up.
 * Every forward not yet acknowledged is kept (bounded) and sent again to whatever successor the
 * current map names until it is acked, so a chain change never drops one.
 */
export class ChainReplica {
  readonly node: string;
  readonly partitionId: number;
  private readonly store: PartitionStore;
  private readonly transport: ForwardTransport;
  private readonly forwardTimeoutMs: number;
  private readonly maxUnacked: number;
  private readonly onForwardRetry: ChainReplicaOptions['onForwardRetry'];
  private readonly logger: Logger | undefined;
  private partition: Partition;
  private streamId: string | undefined;
  /**
   * This replica joined its chain by a sync (it was `syncing` under some map): its rows come from a
   * snapshot, so the first stream it sees may be joined mid-way, even after its promotion (a quiet
   * partition forwards nothing while it copies). A replica from `cluster init` must start at 1.
   */
  private joinedBySync = false;
  /** The last sequence number applied here (head: assigned). */
  private lastSeq = 0;
  private readonly unacked = new Map<number, Unacked>();
  private readonly waiting = new Map<number, Waiting>();
  /** Aborted on every chain change, so sends to a removed successor stop at once and go again. */
  private chainChanged = unboundedController();
  private closed = false;
  /** Bytes of forwards this replica sent (payload: keys, values, metadata), for the bench and metrics. */
  forwardedBytes = 0;

  constructor(options: ChainReplicaOptions) {
    this.node = options.node;
    this.store = options.store;
    this.partition = options.partition;
    this.partitionId = options.partition.id;
    this.noteSyncing();
    this.transport = options.transport;
    this.forwardTimeoutMs = options.forwardTimeoutMs ?? 2000;
    this.maxUnacked = options.maxUnacked ?? 10_000;
    if (!Number.isSafeInteger(this.forwardTimeoutMs) || this.forwardTimeoutMs < 1) throw new RangeError(`forwardTimeoutMs must be a whole number ≥ 1, got ${this.forwardTimeoutMs}`);
    this.onForwardRetry = options.onForwardRetry;
    this.logger = options.logger;
  }

  /** This replica's position in its chain under the current map. */
  get index(): number {
    return this.partition.chain.findIndex((r) => r.node === this.node);
  }

  get isHead(): boolean {
    return this.index === 0;
  }

  /** The replica reads go to: the last serving one (a syncing tail serves no reads). */
  get isReadReplica(): boolean {
    const chain = this.partition.chain;
    let last = -1;
    for (let i = 0; i < chain.length; i++) if (chain[i]!.state === 'serving') last = i;
    return last >= 0 && chain[last]!.node === this.node;
  }

  get epoch(): number {
    return this.partition.epoch;
  }

  /** The highest sequence number applied here, and how many forwards still wait for their ack. */
  get progress(): { lastSeq: number; unacked: number } {
    return { lastSeq: this.lastSeq, unacked: this.unacked.size };
  }

  /**
   * Installs the partition as a new map has it. Sends in flight under the old epoch start again at
   * once (to the new successor, under the new epoch); a replica that became the tail acknowledges everything it holds.
   */
  setPartition(partition: Partition): void {
    const before = this.partition;
    this.partition = partition;
    this.noteSyncing();
    if (partition.epoch !== before.epoch || this.successorOf(partition) !== this.successorOf(before) || this.index < 0) {
      const changed = this.chainChanged;
      this.chainChanged = unboundedController();
      changed.abort(new StoreError('STORE_STALE_EPOCH', `partition ${this.partitionId}: the chain changed (epoch ${partition.epoch})`));
    }
  }

  /** This node is no longer in the chain: writes waiting for an ack end (a CAS as STORE_AMBIGUOUS). */
  leave(): void {
    this.setPartition({ ...this.partition, chain: [] });
  }

  /**
   * At the head: numbers a write the partition store has just applied and sends it down the chain;
   * resolves once the tail has it. Must be called in the order the writes were applied (from the
   * store's settlement, before anything else awaits), since that order is the sequence.
   */
  replicate(op: ForwardOp): Promise<HopTiming[]> {
    this.streamId ??= randomBytes(8).toString('hex');
    const message: ForwardMessage = { partitionId: this.partitionId, epoch: this.partition.epoch, from: this.node, streamId: this.streamId, seq: ++this.lastSeq, op };
    return this.passOn(message);
  }

  /** Whether a write that the head applied can still be acknowledged (more room for unacked forwards). */
  checkRoom(): void {
    if (this.unacked.size >= this.maxUnacked) {
      throw new StoreError('STORE_OVERLOADED', `partition ${this.partitionId}: ${this.unacked.size} writes wait for the chain's ack (limit ${this.maxUnacked}); retry shortly`, { retryAfterMs: 100 });
    }
  }

  /** A forward from the predecessor: checked, applied in sequence order, passed on; resolves with the ack. */
  async receive(message: ForwardMessage): Promise<ForwardAck> {
    this.check(message);
    if (message.streamId !== this.streamId) this.adoptStream(message);
    if (message.seq <= this.lastSeq) {
      // Sent again after a chain change: already written here, so ack once it is below us too.
      const pending = this.unacked.get(message.seq);
      return { seq: message.seq, hops: pending === undefined ? [] : await pending.acked };
    }
    if (message.seq > this.lastSeq + 1) await this.waitTurn(message);
    this.lastSeq = message.seq;
    const started = performance.now();
    const written = this.apply(message.op);
    this.releaseNext();
    await written;
    const writeMs = performance.now() - started;
    const forwarded = performance.now();
    const below = await this.passOn({ ...message, from: this.node, epoch: this.partition.epoch });
    return { seq: message.seq, hops: [{ node: this.node, writeMs, forwardMs: performance.now() - forwarded }, ...below] };
  }

  /** Stops retrying: unacknowledged forwards reject with STORE_CLOSED. Idempotent. */
  close(): void {
    this.closed = true;
    this.chainChanged.abort(new StoreError('STORE_CLOSED', `partition ${this.partitionId} on ${this.node} is closing`));
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new StoreError('STORE_CLOSED', `partition ${this.partitionId} on ${this.node} is closing`));
    }
    this.waiting.clear();
  }

  private check(message: ForwardMessage): void {
    if (this.closed) throw new StoreError('STORE_CLOSED', `partition ${this.partitionId} on ${this.node} is closing`);
    if (message.epoch !== this.partition.epoch) {
      throw new StoreError(
        'STORE_STALE_EPOCH',
        `forward of partition ${this.partitionId} under epoch ${message.epoch}, but ${this.node} holds epoch ${this.partition.epoch}: the sender or this node has not installed the current map yet; retry`,
        { context: { partition: this.partitionId, epoch: this.partition.epoch } },
      );
    }
    const index = this.index;
    const predecessor = index > 0 ? this.partition.chain[index - 1]!.node : undefined;
    if (predecessor !== message.from) {
      throw new StoreError('STORE_STALE_EPOCH', `forward of partition ${this.partitionId} from ${message.from}, but ${this.node}'s predecessor at epoch ${this.partition.epoch} is ${predecessor ?? 'none (it is the head)'}`, {
        context: { partition: this.partitionId, epoch: this.partition.epoch },
      });
    }
  }

  /**
   * A forward of a stream this replica has not seen: a replica that joined by a sync (syncing, or
   * promoted before any forward reached it) starts with it wherever it is, one that has applied
   * nothing yet starts at its beginning; a replica that holds another stream takes only its beginning.
   */
  private adoptStream(message: ForwardMessage): void {
    if (this.streamId === undefined && (this.joinedBySync || this.lastSeq === 0)) {
      this.lastSeq = this.joinedBySync ? message.seq - 1 : 0;
    } else if (message.seq !== 1) {
      throw new StoreError('STORE_FORWARD_GAP', `partition ${this.partitionId} on ${this.node}: a forward of a new write stream starts at sequence ${message.seq}, not 1; this replica needs a sync`, {
        context: { partition: this.partitionId },
      });
    } else {
      this.lastSeq = 0;
    }
    this.streamId = message.streamId;
  }

  private noteSyncing(): void {
    if (this.partition.chain[this.index]?.state === 'syncing') this.joinedBySync = true;
  }

  private waitTurn(message: ForwardMessage): Promise<void> {
    if (this.waiting.size >= MAX_WAITING || this.waiting.has(message.seq)) {
      return Promise.reject(new StoreError('STORE_FORWARD_GAP', `partition ${this.partitionId} on ${this.node}: forward ${message.seq} arrived while ${this.lastSeq + 1} is missing; retry`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(message.seq);
        reject(new StoreError('STORE_FORWARD_GAP', `partition ${this.partitionId} on ${this.node}: forward ${message.seq} waited ${this.forwardTimeoutMs} ms for ${this.lastSeq + 1}; retry`));
      }, this.forwardTimeoutMs);
      timer.unref();
      this.waiting.set(message.seq, { message, resolve, reject, timer });
    });
  }

  /** Lets the forward that is next in sequence apply, if it arrived early. */
  private releaseNext(): void {
    const next = this.waiting.get(this.lastSeq + 1);
    if (next === undefined) return;
    this.waiting.delete(next.message.seq);
    clearTimeout(next.timer);
    next.resolve();
  }

  /**
   * Queues the op's writes on the partition store at once (its queue keeps their order), and
   * resolves when they are durable.
   */
  private apply(op: ForwardOp): Promise<unknown> {
    if (op.kind === 'bulk') return this.store.bulkInsert(op.rows, op.assigned);
    const writes: Array<Promise<unknown>> = [];
    let puts: PackedRowsBuilder | undefined;
    const flush = (): void => {
      if (puts === undefined) return;
      // Kept etags and times: the rows become exactly the head's records.
      writes.push(this.store.bulkInsert(puts.finish(), { firstEtag: 1, nowMs: op.nowMs }));
      puts = undefined;
    };
    for (const w of op.writes) {
      if ('deleted' in w) {
        flush();
        writes.push(this.store.delete(w.key));
      } else {
        puts ??= new PackedRowsBuilder();
        puts.add(w.key, w.record.value, { etag: w.record.etag, updatedAtMs: w.record.updatedAtMs, expiresAtMs: w.record.expiresAtMs });
      }
    }
    flush();
    return Promise.all(writes);
  }

  /** Sends to the current successor until it acks (none: this is the tail, done). Never drops a forward. */
  private passOn(message: ForwardMessage): Promise<HopTiming[]> {
    let resolve!: (hops: HopTiming[]) => void;
    let reject!: (error: unknown) => void;
    const acked = new Promise<HopTiming[]>((res, rej) => ((resolve = res), (reject = rej)));
    this.unacked.set(message.seq, { message, acked });
    this.sendUntilAcked(message).then(
      (hops) => {
        this.unacked.delete(message.seq);
        resolve(hops);
      },
      (error: unknown) => {
        this.unacked.delete(message.seq);
        reject(error);
      },
    );
    return acked;
  }

  private async sendUntilAcked(message: ForwardMessage): Promise<HopTiming[]> {
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new StoreError('STORE_CLOSED', `partition ${this.partitionId} on ${this.node} is closing`);
      if (this.index < 0) {
        throw new StoreError('STORE_AMBIGUOUS', `partition ${this.partitionId}: ${this.node} left the chain (epoch ${this.partition.epoch}) before write ${message.seq} was acknowledged; it may or may not be on the chain`);
      }
      const successor = this.successorOf(this.partition);
      if (successor === undefined) return [];
      const changed = this.chainChanged.signal;
      const outgoing: ForwardMessage = { ...message, from: this.node, epoch: this.partition.epoch };
      try {
        const ack = await this.transport.send(successor, outgoing, { timeoutMs: this.forwardTimeoutMs, signal: changed });
        this.forwardedBytes += opBytes(message.op);
        return ack.hops;
      } catch (error) {
        if (this.closed) throw error;
        this.onForwardRetry?.({ partitionId: this.partitionId, seq: message.seq, successor, error });
        // Once per forward at warn: a dead successor fails every attempt until the map drops it.
        const level = attempt === 1 ? 'warn' : 'debug';
        this.logger?.[level]({ err: error, partition: this.partitionId, seq: message.seq, successor, attempt }, 'forward failed; sending it again to the current successor');
        if (!changed.aborted) await pause(RETRY_PAUSE_MS, changed);
      }
    }
  }

  private successorOf(partition: Partition): string | undefined {
    const index = partition.chain.findIndex((r) => r.node === this.node);
    return index < 0 ? undefined : partition.chain[index + 1]?.node;
  }
}

/** Payload bytes of a forward: keys, values and per-row metadata. */
export function opBytes(op: ForwardOp): number {
  if (op.kind === 'bulk') return op.rows.bytes + op.rows.count * 8 + (op.rows.hasMeta ? op.rows.count * 24 : 0) + 16;
  let bytes = 0;
  for (const w of op.writes) bytes += w.key.length + ('deleted' in w ? 1 : w.record.value.length + 24);
  return bytes;
}

/** Every forward in flight listens to it (one per unacknowledged write), so no listener limit. */
function unboundedController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
