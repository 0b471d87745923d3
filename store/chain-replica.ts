import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Logger } from '../common/index.js';
import type { PackedRows } from './packed-rows.js';
import type { Partition } from './partition-map.js';
import type { BulkAssignment, ChainPosition, ChainTag, ForwardedWrite, PartitionStore } from './partition-store.js';
import type { StoredRecord } from './record.js';
import { PackedRowsBuilder } from './packed-rows.js';
import { MAX_FORWARD_BATCH } from './field-limits.js';
import { StoreError } from './store-errors.js';
import { ForwardRetryLog } from './forward-retry-log.js';

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
  /** The head's last sequence number when it sent this write (≥ seq), for the replicas' lag; absent = seq. */
  headSeq?: number;
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

/**
 * How a replica reaches its successor. The gRPC one is store/chain-forwarder.ts; tests step an
 * in-process one. `messages` are consecutive writes of one partition and stream in sequence order
 * (group commit per hop: one call, one batch and fsync at the receiver); the answer has one ack per
 * message, in order — or fewer, from a receiver that takes one write per call (the rest are then
 * sent again, one per call).
 */
export interface ForwardTransport {
  send(node: string, messages: readonly ForwardMessage[], options: { timeoutMs: number; signal: AbortSignal }): Promise<ForwardAck[]>;
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
  /**
   * Payload bytes (keys, values, metadata) one Forward call carries at most when it carries several
   * writes; a larger write goes alone. Capped at 4 MiB. Default 4 MiB.
   */
  forwardBatchMaxBytes?: number;
  /** Forwards waiting for their successor's ack at most; more are refused retryable (STORE_OVERLOADED). Default 10000. */
  maxUnacked?: number;
  /** Called when a forward failed or timed out and is sent again (for the coordinator / metrics). */
  onForwardRetry?: (info: { partitionId: number; seq: number; successor: string; error: unknown }) => void;
  /**
   * A head opened on data with a write stream (restarted within its lease) takes no write until its
   * successor's persisted position is compared with its own (`confirmHead`; etcd mode). Default false:
   * it starts a new write stream at once.
   */
  checkRestartAsHead?: boolean;
  /** Where failed forwards are logged, throttled per successor; shared by a node's replicas. Default: one of its own on `logger`. */
  retryLog?: ForwardRetryLog;
  logger?: Logger;
}

/**
 * A head restarted on its own data, before it takes writes: `checking` until its successor's
 * persisted position is known; `fenced` when the successor lacks writes this head applied (they are
 * nowhere else and cannot be re-sent: no log), until the coordinator makes it a syncing replica.
 */
export interface HeadRestartCheck {
  state: 'checking' | 'fenced';
  /** This head's persisted position when it opened. */
  persisted: ChainPosition;
  /** The successor it was compared with, and its position (fenced only). */
  successor?: string;
  successorPosition?: ChainPosition;
}

interface Unacked {
  message: ForwardMessage;
  acked: Promise<HopTiming[]>;
  resolve: (hops: HopTiming[]) => void;
  reject: (error: unknown) => void;
}

/** A forward's writes collected while a batch of forwards is received, queued on the store together. */
interface Collected {
  writes: ForwardedWrite[];
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

interface Waiting {
  message: ForwardMessage;
  resolve: () => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
}

/**
 * The keys live forwards wrote into a syncing replica since its sync's snapshot position: newer than
 * anything the snapshot holds, so the copy neither writes over them nor deletes them (a forwarded
 * delete is a tombstone here), and the copy's verification leaves them out. `touchedAt` gives the
 * clock value at a key's first write; the copy compares it with the clock when it read a batch.
 */
export interface CopyGuard {
  touchedAt(key: Buffer): number | undefined;
  /** Advances with every key first touched. */
  readonly clock: number;
  /** More keys were touched than the guard holds (MAX_TOUCHED): the copy cannot be verified, start it again. */
  readonly overflowed: boolean;
  /** Every touched key (latin1) with its clock value. */
  touched(): IterableIterator<[string, number]>;
}

/** Most keys a syncing replica tracks as written by forwards during one copy (about 100 bytes each). */
const MAX_TOUCHED = 1_000_000;

class TouchedKeys implements CopyGuard {
  private readonly keys = new Map<string, number>();
  clock = 0;
  overflowed = false;

  touchedAt(key: Buffer): number | undefined {
    return this.keys.get(key.toString('latin1'));
  }

  get size(): number {
    return this.keys.size;
  }

  touched(): IterableIterator<[string, number]> {
    return this.keys.entries();
  }

  touch(key: Buffer): void {
    const id = key.toString('latin1');
    if (this.keys.has(id)) return;
    if (this.keys.size >= MAX_TOUCHED) {
      this.overflowed = true;
      return;
    }
    this.keys.set(id, ++this.clock);
  }
}

/** Most out-of-order forwards a replica holds while it waits for the ones before them. */
const MAX_WAITING = 1024;
const RETRY_PAUSE_MS = 50;
/**
 * Forward calls a replica has in flight to its successor per partition. Writes that become ready
 * while they are out wait in the outbox and go together in the next call (group commit per hop);
 * two let the successor's fsync of one batch overlap the transfer of the next.
 */
const MAX_SENDS_IN_FLIGHT = 2;
/** Payload bytes (opBytes) one Forward call of several writes carries at most (a larger write goes alone). */
const FORWARD_BATCH_MAX_BYTES = 4 * 1024 * 1024;

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
  private readonly forwardBatchMaxBytes: number;
  private readonly onForwardRetry: ChainReplicaOptions['onForwardRetry'];
  private readonly logger: Logger | undefined;
  private partition: Partition;
  private streamId: string | undefined;
  /**
   * Whether this replica knows where in the head's write stream it stands. A syncing replica does
   * not until its sync has opened the snapshot it copies (`startAt` with the snapshot's position):
   * forwards wait until then, so its position is never guessed from whichever forward came first.
   */
  private positioned = true;
  /** Set while a restarted head may hold writes its successor lacks (see HeadRestartCheck). */
  private headCheck: HeadRestartCheck | undefined;
  private readonly checkRestartAsHead: boolean;
  private readonly retryLog: ForwardRetryLog;
  /** The last sequence number taken here (queued for writing; head: assigned), of `streamId`. */
  private lastSeq = 0;
  /** The highest head sequence number forwards of `streamId` carried (the head's own: lastSeq). */
  private headSeq = 0;
  /** While a sync copies into this replica: keys forwards wrote since its snapshot (dropped once it serves). */
  private guard: TouchedKeys | undefined;
  /** Forwards sent on and not yet acked, by stream and sequence number (unackedKey). */
  private readonly unacked = new Map<string, Unacked>();
  private readonly waiting = new Map<number, Waiting>();
  /** Forwards to pass on that no call carries yet, in the order they became ready. */
  private readonly outbox: ForwardMessage[] = [];
  private sendsInFlight = 0;
  /** The write stream of the calls in flight (see pump: a later stream waits for them). */
  private sendingStream: string | undefined;
  private pumpScheduled = false;
  /** Successors that answered a batched call with one ack (they take one write per call). */
  private readonly singleWriteSuccessors = new Set<string>();
  /** Set while a batch of forwards is received: their writes are queued on the store together. */
  private collecting: Collected[] | undefined;
  /** Aborted on every chain change, so sends to a removed successor stop at once and go again. */
  private chainChanged = unboundedController();
  private closed = false;
  /** Bytes of forwards this replica sent (payload: keys, values, metadata), for the bench and metrics. */
  forwardedBytes = 0;
  /** Forwards whose send failed or timed out (each was sent again; a batched call counts each of its writes), since this replica opened. */
  forwardRetries = 0;
  /** The latest of those: to whom, why, when (Unix ms). */
  lastForwardRetry: { successor: string; error: string; atMs: number } | undefined;

  constructor(options: ChainReplicaOptions) {
    this.node = options.node;
    this.store = options.store;
    this.partition = options.partition;
    this.partitionId = options.partition.id;
    this.logger = options.logger;
    this.checkRestartAsHead = options.checkRestartAsHead ?? false;
    this.retryLog = options.retryLog ?? new ForwardRetryLog(options.logger);
    this.resume(options.store.chainPosition);
    this.transport = options.transport;
    this.forwardTimeoutMs = options.forwardTimeoutMs ?? 2000;
    this.maxUnacked = options.maxUnacked ?? 10_000;
    this.forwardBatchMaxBytes = Math.min(FORWARD_BATCH_MAX_BYTES, options.forwardBatchMaxBytes ?? FORWARD_BATCH_MAX_BYTES);
    if (!(this.forwardBatchMaxBytes >= 1)) throw new RangeError(`forwardBatchMaxBytes must be ≥ 1, got ${options.forwardBatchMaxBytes}`);
    if (!Number.isSafeInteger(this.forwardTimeoutMs) || this.forwardTimeoutMs < 1) throw new RangeError(`forwardTimeoutMs must be a whole number ≥ 1, got ${this.forwardTimeoutMs}`);
    this.onForwardRetry = options.onForwardRetry;
  }

  /**
   * Where a replica opened on existing data stands: a syncing one waits for its sync's snapshot; a
   * middle or tail continues from the position persisted with its last write (its predecessor
   * re-sends what it lacks). A head with a serving successor (etcd mode) first has its position
   * compared with the successor's (`confirmHead`): writes it applied but had not forwarded before it
   * stopped are nowhere else. Otherwise a head starts a new stream, so its successors never take its
   * numbering as theirs.
   */
  private resume(persisted: ChainPosition): void {
    if (this.state === 'syncing') {
      this.positioned = false;
    } else if (persisted.stream !== '' && !this.isHead) {
      this.streamId = persisted.stream;
      this.lastSeq = persisted.seq;
    } else if (persisted.stream !== '' && this.checkRestartAsHead && this.hasServingSuccessor) {
      this.headCheck = { state: 'checking', persisted: { ...persisted } };
      this.logger?.info({ partition: this.partitionId, stream: persisted.stream, seq: persisted.seq }, 'restarted as the head of its chain: taking no write until its successor\'s position is compared with this one');
    } else if (persisted.stream !== '') {
      this.logger?.warn({ partition: this.partitionId, stream: persisted.stream, seq: persisted.seq }, 'restarted as the head of its chain: starting a new write stream (run `shardpipe cluster check` if it stopped with writes unacknowledged)');
    }
  }

  private get state(): string | undefined {
    return this.partition.chain[this.index]?.state;
  }

  private get hasServingSuccessor(): boolean {
    return this.isHead && this.partition.chain[1]?.state === 'serving';
  }

  /** A restarted head's check against its successor, while it is due or failed (undefined: none). */
  get restartCheck(): HeadRestartCheck | undefined {
    return this.headCheck;
  }

  /**
   * A restarted head's verdict, from its successor's persisted position. Every write this head
   * applied is also on the successor (same stream, position at least this head's): the head goes on
   * with that stream where it stopped (no resync) → true. Otherwise the head holds writes the chain
   * lacks and cannot re-send: it stays fenced for this partition (writes refused, retryable) until
   * the coordinator turns it into a syncing replica, whose copy from the chain's tail drops those
   * never-acknowledged writes → false. Acknowledged writes are all on the successor either way.
   */
  confirmHead(successor: string, position: ChainPosition): boolean {
    const check = this.headCheck;
    if (check === undefined) return true;
    if (check.state === 'fenced') return false;
    if (successor !== this.partition.chain[1]?.node) return false;
    const { persisted } = check;
    if (position.stream === persisted.stream && position.seq >= persisted.seq) {
      this.headCheck = undefined;
      this.streamId = persisted.stream;
      this.lastSeq = persisted.seq;
      this.logger?.info({ partition: this.partitionId, stream: persisted.stream, seq: persisted.seq, successor }, 'restarted head: its successor holds every write it applied; taking writes again on the same stream');
      return true;
    }
    this.headCheck = { ...check, state: 'fenced', successor, successorPosition: { ...position } };
    this.logger?.warn(
      { partition: this.partitionId, stream: persisted.stream, seq: persisted.seq, successor, successorStream: position.stream, successorSeq: position.seq },
      'restarted head holds writes its successor lacks (applied, never forwarded, never acknowledged): refusing writes for this partition and asking the coordinator to resync this replica (none running? start `shardpipe coordinator --etcd URL`)',
    );
    return false;
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

  /**
   * How many of the head's writes this replica does not hold durably yet: the head's sequence number
   * (as the latest forward carried it) minus the one persisted here. 0 at the head, and while a
   * syncing replica has no position yet (its sync progress says where it is).
   */
  get lagSequences(): number {
    if (this.isHead || !this.positioned || this.streamId === undefined) return 0;
    const durable = this.store.chainPosition;
    const applied = durable.stream === this.streamId ? durable.seq : 0;
    return Math.max(0, this.headSeq - applied);
  }

  /** The highest sequence number taken here, and how many forwards still wait for their ack. */
  get progress(): { lastSeq: number; unacked: number; streamId: string; positioned: boolean; touchedKeys: number } {
    return { lastSeq: this.lastSeq, unacked: this.unacked.size, streamId: this.streamId ?? '', positioned: this.positioned, touchedKeys: this.guard?.size ?? 0 };
  }

  /**
   * What keeps this head's forwards from being acknowledged, for a pause that ran out: how many
   * wait, the oldest, the successor and its last failure (within the last 10 s); undefined when none wait.
   */
  unackedSummary(nowMs = Date.now()): string | undefined {
    if (this.unacked.size === 0) return undefined;
    let oldest = Number.POSITIVE_INFINITY;
    for (const u of this.unacked.values()) oldest = Math.min(oldest, u.message.seq);
    const successor = this.successorOf(this.partition) ?? 'no successor';
    const retry = this.lastForwardRetry;
    const failure = retry !== undefined && nowMs - retry.atMs <= 10_000 ? `; its last failure ${nowMs - retry.atMs} ms ago, from ${retry.successor}: ${retry.error}` : '; no forward failed in the last 10 s';
    return `${this.unacked.size} forward(s) from sequence ${oldest} not acknowledged through ${successor}${failure}`;
  }

  /**
   * A syncing replica's place in the write stream, from the snapshot its sync copies: every forward
   * up to `position.seq` is in the snapshot, every later one is applied here. Forwards that arrived
   * before (they waited) go on at once. Called again by a restarted sync, it never moves back.
   */
  startAt(position: ChainPosition): void {
    if (position.stream === '') {
      if (!this.positioned) {
        this.streamId = undefined;
        this.lastSeq = 0;
      }
    } else if (!this.positioned || this.streamId !== position.stream) {
      this.streamId = position.stream;
      this.lastSeq = position.seq;
    } else {
      this.lastSeq = Math.max(this.lastSeq, position.seq);
    }
    this.positioned = true;
    // Persisted too (an empty write tagged with it; never moves the position back): a replica whose
    // copy is done but that got no forward since reports the position its data is at.
    if (position.stream !== '') {
      // Ahead of the snapshot in its own stream (a restarted head made syncing: writes the chain never
      // got, which the copy drops): the position moves back through another stream first, since
      // within one stream it never moves back — a later restart must not take them as held here.
      const persisted = this.store.chainPosition;
      if (persisted.stream === position.stream && persisted.seq > position.seq) {
        this.store.bulkInsert(new PackedRowsBuilder().finish(), undefined, { stream: `${position.stream}-dropped`, seq: 1 }).catch((err: unknown) => this.logger?.warn({ err, partition: this.partitionId }, 'moving a resynced replica\'s position back failed; its sync starts again'));
      }
      this.store.bulkInsert(new PackedRowsBuilder().finish(), undefined, { ...position }).catch((err: unknown) => this.logger?.warn({ err, partition: this.partitionId }, 'persisting the position of a sync\'s snapshot failed; the next forward persists one'));
    }
    // A new snapshot holds every forward up to its position: only keys written after it count.
    this.guard = new TouchedKeys();
    for (const w of [...this.waiting.values()]) this.wake(w);
  }

  /**
   * Before a sync opens its snapshot: forwards wait (unpositioned) until `startAt`, so nothing is
   * applied here that the snapshot might not hold — every forward applied before has passed the
   * snapshot's source (ahead in the chain) already. Returns a function that lets them go on again
   * if the snapshot could not be opened (the replica is then as it was).
   */
  holdForSnapshot(): () => void {
    if (!this.positioned) return () => undefined;
    this.positioned = false;
    return () => {
      if (this.positioned) return;
      this.positioned = true;
      for (const w of [...this.waiting.values()]) this.wake(w);
    };
  }

  /** The keys forwards wrote since the running sync's snapshot (undefined: no sync positioned this replica). */
  get copyGuard(): CopyGuard | undefined {
    return this.guard;
  }

  /**
   * Installs the partition as a new map has it. Sends in flight under the old epoch start again at
   * once (to the new successor, under the new epoch); a replica that became the tail acknowledges everything it holds.
   */
  setPartition(partition: Partition): void {
    const before = this.partition;
    const wasSyncing = this.state === 'syncing';
    this.partition = partition;
    // Entering `syncing` (cluster repair): its data is about to be replaced by a copy.
    if (!wasSyncing && this.state === 'syncing') this.positioned = false;
    // Promoted or removed: the copy is over, its tombstones go.
    if (this.state !== 'syncing') this.guard = undefined;
    // No longer a head with a serving successor (made syncing, or now the only serving replica, whose
    // data is the partition's then): nothing left to compare; as a head it starts a new stream.
    if (this.headCheck !== undefined && !this.hasServingSuccessor) this.headCheck = undefined;
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
   * At the head: the tag a write is queued on the partition store with, so the store numbers it
   * in its commit order and persists the number in the write's own batch (ChainTag).
   */
  headTag(): ChainTag {
    this.streamId ??= randomBytes(8).toString('hex');
    return { stream: this.streamId, seq: 0 };
  }

  /**
   * At the head: sends a write the partition store has applied (numbered through `tag`, from
   * `headTag`) down the chain; resolves once the tail has it. Any call order: receivers apply in
   * sequence order.
   */
  replicate(op: ForwardOp, tag: ChainTag): Promise<HopTiming[]> {
    if (tag.seq < 1) throw new RangeError(`partition ${this.partitionId}: a write is replicated after the store numbered it (tag.seq ≥ 1), got ${tag.seq}`);
    if (tag.stream === this.streamId) this.lastSeq = Math.max(this.lastSeq, tag.seq);
    const message: ForwardMessage = { partitionId: this.partitionId, epoch: this.partition.epoch, from: this.node, streamId: tag.stream, seq: tag.seq, headSeq: Math.max(this.lastSeq, tag.seq), op };
    return this.passOn(message);
  }

  /** Whether a write that the head applied can still be acknowledged (more room for unacked forwards). */
  checkRoom(): void {
    const check = this.headCheck;
    if (check !== undefined) {
      const why =
        check.state === 'checking'
          ? 'it restarted and is comparing its write position with its successor\'s'
          : `it restarted holding writes its successor ${check.successor ?? ''} lacks (never acknowledged) and waits to be resynced by the coordinator (if none runs, start one: \`shardpipe coordinator --etcd URL\`; it makes this replica syncing, its successor the head, and promotes the copy; \`shardpipe cluster repair ${this.partitionId} --replica ${this.node} --etcd URL\` does the first step by hand)`;
      throw new StoreError('STORE_FENCED', `partition ${this.partitionId} on ${this.node} takes no writes: ${why}; retry (the client follows the new head)`, { retryAfterMs: 200 });
    }
    if (this.unacked.size >= this.maxUnacked) {
      throw new StoreError('STORE_OVERLOADED', `partition ${this.partitionId}: ${this.unacked.size} writes wait for the chain's ack (limit ${this.maxUnacked}); retry shortly`, { retryAfterMs: 100 });
    }
  }

  /**
   * Forwards from the predecessor that came in one call: each is handled as `receive` handles it,
   * but the writes of those that are next in sequence are queued on the partition store together
   * (one batch, one fsync) and passed on together. Resolves with every ack in order; rejects with
   * the first failure once all have settled (the sender sends the batch again: what was applied is
   * a duplicate then, acknowledged without being applied twice).
   */
  async receiveMany(messages: readonly ForwardMessage[]): Promise<ForwardAck[]> {
    if (messages.length === 1) return [await this.receive(messages[0]!)];
    const collected: Collected[] = [];
    this.collecting = collected;
    let results: Array<Promise<ForwardAck>>;
    try {
      results = messages.map((m) => this.receive(m));
    } finally {
      this.collecting = undefined;
    }
    this.queueCollected(collected);
    const settled = await Promise.allSettled(results);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    return settled.map((r) => (r as PromiseFulfilledResult<ForwardAck>).value);
  }

  /** A forward from the predecessor: checked, applied in sequence order, passed on; resolves with the ack. */
  async receive(message: ForwardMessage): Promise<ForwardAck> {
    this.check(message);
    if (message.streamId === this.streamId || this.streamId === undefined) this.headSeq = Math.max(this.headSeq, message.headSeq ?? message.seq);
    for (;;) {
      if (this.positioned) {
        if (message.streamId !== this.streamId) this.adoptStream(message);
        if (message.seq <= this.lastSeq + 1) break;
      }
      await this.waitTurn(message);
      // The chain may have changed while it waited.
      this.check(message);
    }
    if (message.seq <= this.lastSeq) {
      // Already written here (sent again after a chain change, or in the snapshot a sync copied, or
      // before a restart): ack it once it is below us too, passing it on if no send of it is pending.
      const pending = this.unacked.get(unackedKey(message));
      if (pending !== undefined) return { seq: message.seq, hops: await pending.acked };
      return { seq: message.seq, hops: await this.passOn({ ...message, from: this.node, epoch: this.partition.epoch }) };
    }
    this.lastSeq = message.seq;
    const started = performance.now();
    const written = this.apply(message.op, { stream: message.streamId, seq: message.seq });
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
   * A forward of a stream this replica does not hold: one that holds none (a fresh replica, or a
   * synced one whose snapshot had none) takes it from its beginning, as does one that holds another
   * stream (a restarted head starts a new one); anything else is a gap only a sync can fill.
   */
  private adoptStream(message: ForwardMessage): void {
    if (this.streamId === undefined && this.lastSeq === 0) {
      this.lastSeq = 0;
    } else if (message.seq !== 1) {
      throw new StoreError('STORE_FORWARD_GAP', `partition ${this.partitionId} on ${this.node}: a forward of a new write stream starts at sequence ${message.seq}, not 1; this replica needs a sync`, {
        context: { partition: this.partitionId },
      });
    } else {
      this.lastSeq = 0;
    }
    if (this.streamId !== message.streamId) this.headSeq = Math.max(message.headSeq ?? message.seq, message.seq);
    this.streamId = message.streamId;
  }

  private waitTurn(message: ForwardMessage): Promise<void> {
    const missing = (): string => (this.positioned ? `${this.lastSeq + 1} is missing` : 'its sync has not opened its snapshot yet');
    if (this.waiting.size >= MAX_WAITING || this.waiting.has(message.seq)) {
      return Promise.reject(new StoreError('STORE_FORWARD_GAP', `partition ${this.partitionId} on ${this.node}: forward ${message.seq} arrived while ${missing()}; retry`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(message.seq);
        reject(new StoreError('STORE_FORWARD_GAP', `partition ${this.partitionId} on ${this.node}: forward ${message.seq} waited ${this.forwardTimeoutMs} ms while ${missing()}; retry`));
      }, this.forwardTimeoutMs);
      timer.unref();
      this.waiting.set(message.seq, { message, resolve, reject, timer });
    });
  }

  /** Lets the forward that is next in sequence apply, if it arrived early. */
  private releaseNext(): void {
    const next = this.waiting.get(this.lastSeq + 1);
    if (next !== undefined) this.wake(next);
  }

  private wake(w: Waiting): void {
    this.waiting.delete(w.message.seq);
    clearTimeout(w.timer);
    w.resolve();
  }

  /**
   * Queues the op's writes on the partition store at once (its queue keeps their order), the last
   * one carrying the forward's tag (so the position persisted never runs ahead of the data), and
   * resolves when they are durable. Applying a forward twice writes the same records again.
   */
  private apply(op: ForwardOp, tag: ChainTag): Promise<unknown> {
    // Marked as the writes are queued, before any await: the copy checks the marks synchronously
    // just before it queues its own rows, so the two never interleave.
    const guard = this.guard;
    if (guard !== undefined) {
      if (op.kind === 'bulk') for (let i = 0; i < op.rows.count; i++) guard.touch(op.rows.key(i));
      else for (const w of op.writes) guard.touch(w.key);
    }
    const writes = forwardedWrites(op, tag);
    const collecting = this.collecting;
    if (collecting !== undefined) return new Promise((resolve, reject) => collecting.push({ writes, resolve, reject }));
    return Promise.all(this.store.applyForwarded(writes));
  }

  /** Queues the writes of a received batch's forwards on the store in one call (they share a group). */
  private queueCollected(collected: readonly Collected[]): void {
    if (collected.length === 0) return;
    const settled = this.store.applyForwarded(collected.flatMap((c) => c.writes));
    let at = 0;
    for (const c of collected) {
      Promise.all(settled.slice(at, (at += c.writes.length))).then(c.resolve, c.reject);
    }
  }

  /**
   * Sends to the current successor until it acks (none: this is the tail, done). Never drops a
   * forward. Forwards that become ready together go in one call (see MAX_SENDS_IN_FLIGHT).
   */
  private passOn(message: ForwardMessage): Promise<HopTiming[]> {
    let resolve!: (hops: HopTiming[]) => void;
    let reject!: (error: unknown) => void;
    const acked = new Promise<HopTiming[]>((res, rej) => ((resolve = res), (reject = rej)));
    this.unacked.set(unackedKey(message), { message, acked, resolve, reject });
    this.outbox.push(message);
    // After the current turn: the forwards a group commit made ready all reach the outbox first.
    if (!this.pumpScheduled) {
      this.pumpScheduled = true;
      setImmediate(() => {
        this.pumpScheduled = false;
        this.pump();
      });
    }
    return acked;
  }

  /**
   * Starts calls for what waits in the outbox, up to MAX_SENDS_IN_FLIGHT. A **stream barrier**: the
   * writes of a new stream (a head restarted on a static map starts one) go to the successor only
   * once every call of the stream before it is answered, i.e. acked there. A successor that gets
   * seq 1 of a new stream from its predecessor then holds every earlier write its predecessor
   * passed on, and takes the new stream; otherwise the new stream could overtake the old one's
   * re-sends, and the successor would refuse those for ever (STORE_FORWARD_GAP). store/README.md
   * "The write path" has the rule.
   */
  private pump(): void {
    while (this.sendsInFlight < MAX_SENDS_IN_FLIGHT && this.outbox.length > 0) {
      if (this.sendsInFlight > 0 && this.outbox[0]!.streamId !== this.sendingStream) break;
      const batch = this.takeBatch();
      this.sendingStream = batch[0]!.streamId;
      this.sendsInFlight++;
      this.sendUntilAcked(batch)
        .then(
          (hops) => {
            for (const m of batch) this.settle(m, (u) => u.resolve(hops.get(m.seq) ?? []));
          },
          (error: unknown) => {
            for (const m of batch) this.settle(m, (u) => u.reject(error));
          },
        )
        .finally(() => {
          this.sendsInFlight--;
          this.pump();
        });
    }
  }

  private settle(message: ForwardMessage, done: (u: Unacked) => void): void {
    const key = unackedKey(message);
    const u = this.unacked.get(key);
    if (u === undefined) return;
    this.unacked.delete(key);
    done(u);
  }

  /** The outbox's first forwards of one stream, in sequence order, within MAX_FORWARD_BATCH and forwardBatchMaxBytes (a larger first one alone). */
  private takeBatch(): ForwardMessage[] {
    const first = this.outbox[0]!;
    let n = 1;
    let bytes = opBytes(first.op);
    while (n < this.outbox.length && n < MAX_FORWARD_BATCH) {
      const next = this.outbox[n]!;
      bytes += opBytes(next.op);
      if (next.streamId !== first.streamId || bytes > this.forwardBatchMaxBytes) break;
      n++;
    }
    return this.outbox.splice(0, n).sort((a, b) => a.seq - b.seq);
  }

  /** Sends a batch until every forward of it is acked; resolves with each one's hops by sequence number. */
  private async sendUntilAcked(batch: readonly ForwardMessage[]): Promise<Map<number, HopTiming[]>> {
    const hops = new Map<number, HopTiming[]>();
    let pending = batch;
    for (;;) {
      if (this.closed) throw new StoreError('STORE_CLOSED', `partition ${this.partitionId} on ${this.node} is closing`);
      if (this.index < 0) {
        throw new StoreError('STORE_AMBIGUOUS', `partition ${this.partitionId}: ${this.node} left the chain (epoch ${this.partition.epoch}) before write ${pending[0]!.seq} was acknowledged; it may or may not be on the chain`);
      }
      const successor = this.successorOf(this.partition);
      if (successor === undefined) return hops;
      const changed = this.chainChanged.signal;
      const sending = this.singleWriteSuccessors.has(successor) ? pending.slice(0, 1) : pending;
      const outgoing = sending.map((m): ForwardMessage => ({ ...m, from: this.node, epoch: this.partition.epoch }));
      try {
        const acks = await this.transport.send(successor, outgoing, { timeoutMs: this.forwardTimeoutMs, signal: changed });
        if (acks.length === 0) throw new StoreError('STORE_INTERNAL', `partition ${this.partitionId}: ${successor} answered a forward of ${outgoing.length} write(s) with no ack`);
        this.retryLog.answered(successor);
        for (let i = 0; i < acks.length && i < sending.length; i++) {
          hops.set(sending[i]!.seq, acks[i]!.hops);
          this.forwardedBytes += opBytes(sending[i]!.op);
        }
        if (acks.length >= pending.length) return hops;
        if (sending.length > 1) this.singleWriteSuccessors.add(successor);
        pending = pending.slice(Math.min(acks.length, sending.length));
      } catch (error) {
        if (this.closed) throw error;
        // Counted per write, as before batching: each of them is sent again.
        this.forwardRetries += sending.length;
        this.lastForwardRetry = { successor, error: error instanceof Error ? error.message.slice(0, 300) : String(error), atMs: Date.now() };
        this.onForwardRetry?.({ partitionId: this.partitionId, seq: pending[0]!.seq, successor, error });
        // A dead successor fails every attempt until the map drops it: first failure, then summaries.
        this.retryLog.failed(successor, error, { partition: this.partitionId, seq: pending[0]!.seq, writes: pending.length });
        if (!changed.aborted) await pause(RETRY_PAUSE_MS, changed);
      }
    }
  }

  private successorOf(partition: Partition): string | undefined {
    const index = partition.chain.findIndex((r) => r.node === this.node);
    return index < 0 ? undefined : partition.chain[index + 1]?.node;
  }
}

/**
 * The store writes of a forward: a bulk batch as it came, or a points op's puts (as rows keeping
 * the head's etags and times: they become exactly the head's records) and deletes; the last one
 * carries the forward's tag, so the position persisted never runs ahead of the data.
 */
function forwardedWrites(op: ForwardOp, tag: ChainTag): ForwardedWrite[] {
  if (op.kind === 'bulk') return [{ kind: 'bulk', rows: op.rows, assigned: op.assigned, chain: tag }];
  const parts: Array<PackedRowsBuilder | Buffer> = [];
  for (const w of op.writes) {
    if ('deleted' in w) {
      parts.push(w.key);
      continue;
    }
    let puts = parts[parts.length - 1];
    if (!(puts instanceof PackedRowsBuilder)) parts.push((puts = new PackedRowsBuilder()));
    puts.add(w.key, w.record.value, { etag: w.record.etag, updatedAtMs: w.record.updatedAtMs, expiresAtMs: w.record.expiresAtMs });
  }
  return parts.map((part, i): ForwardedWrite => {
    const chain = i === parts.length - 1 ? tag : undefined;
    return part instanceof PackedRowsBuilder ? { kind: 'bulk', rows: part.finish(), assigned: { firstEtag: 1, nowMs: op.nowMs }, chain } : { kind: 'delete', key: part, chain };
  });
}

/** A forward's key among the unacknowledged: sequence numbers restart with a new stream. */
function unackedKey(message: ForwardMessage): string {
  return `${message.seq}/${message.streamId}`;
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
