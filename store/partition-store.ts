import { readdir, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRequire } from 'node:module';
import type { ClassicLevel } from 'classic-level';
import { DEFAULT_WRITE_BUFFER_BYTES, type Logger } from '../common/index.js';
import { MAX_ETAG, MAX_KEPT_ETAG, MAX_TIME_MS } from './field-limits.js';
import { RECORD_EXPIRY_BYTES, RECORD_HEADER_BYTES, decodeRecord, encodeRecord, encodedRecordLength, isExpired, readU64, writeRecordHeader, writeU64, type StoredRecord } from './record.js';
import type { BulkRowInput } from './bulk-row.js';
import { displayBytes } from './key.js';

// Loaded when a partition opens: processes that only talk to nodes (the CLI, ingest workers) skip it.
const loadClassicLevel = (): typeof import('classic-level') => createRequire(import.meta.url)('classic-level') as typeof import('classic-level');
import { PackedRows } from './packed-rows.js';
import { RangeDigest } from './range-digest.js';
import { ChangeLog, DEFAULT_CHANGE_LOG_RETENTION, type ChangeLogRetention, type ChangesSince } from './change-log.js';
import { StoreError } from './store-errors.js';

export type { BulkRowInput } from './bulk-row.js';

/** A stored entry as read back: key plus record. */
export interface StoredEntry extends StoredRecord {
  key: Buffer;
}


/** Server-side timing of one write group, in milliseconds. */
export interface WriteTiming {
  /** Waiting for earlier writes to the partition. */
  queueMs: number;
  /** Reading current records and building the LevelDB batch. */
  writeMs: number;
  /** The LevelDB batch write, including the log fsync when writes are synced. */
  fsyncMs: number;
}

/**
 * What a head assigned to a bulk write, so a replica can apply the same rows to the same records
 * (chain replication ships values): etags are handed out from `firstEtag` by the same rule
 * (a row's kept etag stays and raises the counter; others take the next), `nowMs` is the update time
 * and the instant expired rows are dropped at.
 */
export interface BulkAssignment {
  firstEtag: number;
  nowMs: number;
}

/** WriteTiming of a bulk write, with what it assigned. */
export interface BulkWriteTiming extends WriteTiming {
  assigned: BulkAssignment;
}

export interface PutOptions {
  /** Compare-and-set: current etag must equal this (0 = key must not exist). */
  expectedEtag?: number;
  /** Time to live in ms; 0 or absent = no expiry. */
  ttlMs?: number;
}

/** Options of an update (see PartitionStore.update). */
export interface UpdateOptions {
  /** Compare-and-set: the current etag must equal this. */
  expectedEtag?: number;
  /** Absent = keep the entry's expiry; 0 = no expiry; otherwise expire this many ms from now. */
  ttlMs?: number;
}

/**
 * Computes an entry's new value from its live record, inside the partition's write queue (so no
 * other write of the key comes between the read and the write). Throwing fails only this update.
 */
export type UpdateFn = (current: StoredRecord) => Buffer;

/** One put or delete of a group written together (see PartitionStore.writeMany). */
export type PointWrite =
  | { kind: 'put'; key: Buffer; value: Buffer; options: PutOptions; chain?: ChainTag }
  | { kind: 'delete'; key: Buffer; expectedEtag?: number; chain?: ChainTag };

/**
 * A write's place in its chain's write stream, persisted in the same LevelDB batch as the write
 * (so a restarted replica knows exactly which forwards it holds, and a snapshot which it contains).
 * `seq` 0 asks the partition to number the write (at the head: the next of `stream`, in commit
 * order, written back into `seq`); a replica gives the head's number.
 */
export interface ChainTag {
  stream: string;
  seq: number;
}

/** One write of a forward a replica applies (see PartitionStore.applyForwarded). */
export type ForwardedWrite = { kind: 'bulk'; rows: PackedRows; assigned: BulkAssignment; chain?: ChainTag } | { kind: 'delete'; key: Buffer; chain?: ChainTag };

/** The last chain write a partition (or a snapshot of it) holds; stream '' = none yet. */
export interface ChainPosition {
  stream: string;
  seq: number;
}

export interface PartitionStoreStats {
  /** Entries stored. Exact: maintained with every write batch; expired entries count until swept. */
  count: number;
  /** Sum of key and encoded record sizes, in bytes. */
  logicalBytes: number;
  /** LevelDB's estimate of the data's size on disk (excludes the memtable). */
  diskBytes: number;
  /** Unix ms of the last write, 0 if none. */
  lastWriteMs: number;
  /** Entries read (gets, scanned and checksummed entries) since the partition was opened. */
  reads: number;
  /** Entries written (puts, deletes, bulk rows) since the partition was opened. */
  writes: number;
}

/** Where `scan` and `checksum` read from: a pinned snapshot (see `openSnapshot`) or, absent, the current data. */
export interface ReadOptions {
  snapshot?: PartitionSnapshot;
  signal?: AbortSignal;
}

/**
 * A point-in-time view of one partition that reads can name until it is closed. LevelDB keeps
 * the files it needs alive meanwhile, so a long-held snapshot costs disk space, not memory.
 */
export class PartitionSnapshot {
  /** Entries in the partition at the snapshot (expired entries count until swept). */
  readonly count: number;
  readonly takenAtMs: number;
  /** The last chain write the snapshot holds (exact: persisted in the batch of that write). */
  readonly chain: ChainPosition;
  /** @internal */
  readonly handle: ReturnType<ClassicLevel<Buffer, Buffer>['snapshot']>;
  /** @internal */
  readonly owner: PartitionStore;

  constructor(owner: PartitionStore, handle: ReturnType<ClassicLevel<Buffer, Buffer>['snapshot']>, count: number, takenAtMs: number, chain: ChainPosition = { stream: '', seq: 0 }) {
    this.owner = owner;
    this.handle = handle;
    this.count = count;
    this.takenAtMs = takenAtMs;
    this.chain = chain;
  }

  /** Releases the view. Idempotent. */
  close(): Promise<void> {
    return this.handle.close();
  }
}

export interface PartitionStoreOptions {
  /** fsync every write batch before acknowledging it. Default true. */
  syncWrites?: boolean;
  /**
   * LevelDB's memtable, bytes. Larger loads faster; the partition holds up to twice it in memory,
   * and its write-ahead log grows to about it, which reopening after a full disk needs free.
   * Default DEFAULT_WRITE_BUFFER_BYTES (8 MiB).
   */
  writeBufferBytes?: number;
  /** How often expired entries are deleted, in ms; 0 disables the sweeper. Default 5000. */
  sweepIntervalMs?: number;
  /** Clock, for tests of expiry. Default Date.now. */
  now?: () => number;
  /** How errors name this partition ("partition 3"). Default: its location. */
  name?: string;
  /** After a failed write, the first retry of the partition's recovery; doubles up to `faultRetryMaxMs`. Default 200. */
  faultRetryBaseMs?: number;
  /** Longest pause between recovery attempts. Default 5000. */
  faultRetryMaxMs?: number;
  /** Free bytes the disk needs, beyond the size of LevelDB's logs, before a stuck LevelDB is reopened (reopening turns the logs into tables). Default 1 MiB. */
  reopenSpareBytes?: number;
  /** How much of the change log (the keys each chain write changed, for fast sync) is kept. Default 1,000,000 keys or 1 h. */
  changeLogRetention?: ChangeLogRetention;
  /** How often the change log is trimmed to its retention, ms. Default 1000. */
  changeLogTrimIntervalMs?: number;
  /** Called when the partition stops or starts accepting writes (with the write error when it stops). */
  onServingChange?: (serving: boolean, error: Error | undefined) => void;
  logger?: Logger;
}

/** Whether a partition accepts writes, and since when it does not. */
export interface PartitionHealth {
  serving: boolean;
  /** LevelDB write failures since the partition was opened. */
  writeErrors: number;
  /** The last write error while not serving. */
  error?: Error;
  /** Unix ms of the write failure that stopped it. */
  sinceMs?: number;
  /** Recovery attempts made since it stopped. */
  recoveryAttempts?: number;
}

// Namespaces inside the one LevelDB of a partition: user data, metadata, and the expiry index.
const NS_DATA = 0x64; // 'd'
const NS_META = 0x6d; // 'm'
const NS_EXPIRY = 0x78; // 'x'
const META_STATE = Buffer.from([NS_META, 0x73]); // 'ms'
// Written by recovery to learn whether LevelDB takes writes again; touches no user data or count.
const META_PROBE = Buffer.from([NS_META, 0x70]); // 'mp'
const DATA_END = Buffer.from([NS_DATA + 1]);
/** Appended to a key: the smallest key after it. */
const ZERO_BYTE = Buffer.from([0]);
const SWEEP_BATCH = 1000;
/** Default LevelDB memtable size per partition (8 MiB; common/store-node-defaults.ts says why). */
export { DEFAULT_WRITE_BUFFER_BYTES };
const GROUP_MAX_ROWS = 50_000;
/** Sorted bulk inserts of at most this many rows read what they overwrite key by key (getSync), not by a range iterator. */
const POINT_READ_MAX_ROWS = 16;
// One LevelDB batch is built in memory (and copied into LevelDB's): bound its bytes too.
const GROUP_MAX_BYTES = 16 * 1024 * 1024;
// Below this many bytes on disk a range is split by counting its keys (LevelDB's size index does
// not see the memtable, and is coarse for small ranges).
const EXACT_SPLIT_BYTES = 8 * 1024 * 1024;
const BISECT_STEPS = 40;
const MIDPOINT_EXTRA_BYTES = 8;

type BulkOp = Extract<Op, { kind: 'bulk' }>;

/** A built bulk batch not written yet, with the ops it settles (runBulk). */
interface WaitingBulk {
  batch: WriteOps;
  /** The state once it is written. */
  next: State;
  ops: Array<{ op: BulkOp; queueMs: number; writeMs: number; assigned: BulkAssignment }>;
  rows: number;
  bytes: number;
  /** Until its write starts: groups may still join. */
  open: boolean;
  /** Set when a joining group failed half-way: the batch is not written, its ops all fail. */
  failed: unknown;
  /** The first and last key of each sorted insert in it (views of the requests, held until it settles). */
  ranges: Array<[Buffer, Buffer]>;
  /** An insert in it is not sorted (it has no range): it may touch any key below the largest. */
  unsorted: boolean;
}

type Op =
  | { kind: 'put'; key: Buffer; value: Buffer; options: PutOptions; chain?: ChainTag; resolve: (r: StoredRecord) => void; reject: (e: unknown) => void }
  | { kind: 'delete'; key: Buffer; expectedEtag: number | undefined; chain?: ChainTag; resolve: (deleted: boolean) => void; reject: (e: unknown) => void }
  | { kind: 'bulk'; rows: PackedRows; sorted: boolean; enqueuedAt: number; assigned: BulkAssignment | undefined; chain?: ChainTag; resolve: (t: BulkWriteTiming) => void; reject: (e: unknown) => void }
  | { kind: 'update'; key: Buffer; change: UpdateFn; options: UpdateOptions; chain?: ChainTag; resolve: (r: StoredRecord) => void; reject: (e: unknown) => void }
  | { kind: 'sweep'; resolve: (swept: number) => void; reject: (e: unknown) => void }
  | { kind: 'barrier'; resolve: (snapshot: PartitionSnapshot) => void; reject: (e: unknown) => void }
  | { kind: 'clear'; start: Buffer; end: Buffer; limit: number; resolve: (deleted: number) => void; reject: (e: unknown) => void };

/**
 * The keys of `[start, end)` (empty end = unbounded) that writes queued after a tracked snapshot
 * touch (PartitionStore.openTrackedSnapshot): a split copies the snapshot, then these keys' current
 * values. A superset: a write that then fails is noted too (copying its key again is harmless).
 */
export class WriteTracker {
  /** By latin1 key. */
  readonly keys = new Map<string, Buffer>();
  constructor(
    readonly start: Buffer,
    readonly end: Buffer,
  ) {}

  note(key: Buffer): void {
    if (Buffer.compare(key, this.start) < 0 || (this.end.length > 0 && Buffer.compare(key, this.end) >= 0)) return;
    const id = key.toString('latin1');
    if (!this.keys.has(id)) this.keys.set(id, Buffer.from(key));
  }
}

interface WriteFault {
  error: StoreError;
  cause: Error;
  sinceMs: number;
  attempts: number;
}

interface State {
  seq: number;
  count: number;
  logicalBytes: number;
  lastWriteMs: number;
  /** The last chain write committed (ChainTag); '' / 0 when the partition never was in a chain. */
  chainStream: string;
  chainSeq: number;
}

/**
 * One partition's data in its own LevelDB. Writes go through one queue and are group-committed:
 * concurrent puts and deletes share one batch and one fsync, which also makes compare-and-set and
 * the entry count exact without locks. Reads go straight to LevelDB.
 */
export class PartitionStore {
  readonly location: string;
  private readonly db: ClassicLevel<Buffer, Buffer>;
  private readonly syncWrites: boolean;
  private readonly now: () => number;
  private readonly logger: Logger | undefined;
  private readonly sweepIntervalMs: number;
  private readonly name: string;
  private readonly faultRetryBaseMs: number;
  private readonly faultRetryMaxMs: number;
  private readonly reopenSpareBytes: number;
  private readonly onServingChange: ((serving: boolean, error: Error | undefined) => void) | undefined;
  private fault: WriteFault | undefined;
  private writeErrors = 0;
  private recovery: Promise<void> | undefined;
  private readonly stopRecovery = new AbortController();
  private state: State = { seq: 0, count: 0, logicalBytes: 0, lastWriteMs: 0, chainStream: '', chainSeq: 0 };
  /**
   * No stored key is larger than this (undefined: no key is stored). Kept on open and after every
   * write, never lowered (deletes leave it high, which only costs a read): a bulk insert entirely
   * above it overwrites nothing and skips reading what it would overwrite — a sorted load's case.
   */
  private maxKey: Buffer | undefined;
  // Since open, for rates; not persisted.
  private reads = 0;
  private writes = 0;
  private readonly queue: Op[] = [];
  private draining: Promise<void> | undefined;
  /** The bulk write being committed, if any: resolves whether it was (never rejects). */
  private committing: Promise<boolean> | undefined;
  /** The bulk batch built last, while it waits for the write before it (runBulk): appending groups join it. */
  private waiting: WaitingBulk | undefined;
  /** Every bulk batch built and not settled yet (written or failed): the key ranges still in flight. */
  private readonly unwritten = new Set<WaitingBulk>();
  /** The state once `committing` lands: what the next group builds on. */
  private tip: State | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** The keys each chain write changed (store/change-log.ts), written in the write's own batch. */
  readonly changeLog: ChangeLog;
  private readonly changeLogTrimIntervalMs: number;
  private trimTimer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private readonly trackers = new Set<WriteTracker>();
  /** Data writes queued and not settled yet (isIdle). */
  private pendingWrites = 0;
  /** Entries and bytes of a range being cleared (a split's leftovers), left out of `stats` until they are deleted. */
  private clearing: { count: number; logicalBytes: number } | undefined;

  private constructor(location: string, options: PartitionStoreOptions) {
    this.location = location;
    this.db = new (loadClassicLevel().ClassicLevel)<Buffer, Buffer>(location, { keyEncoding: 'buffer', valueEncoding: 'buffer', writeBufferSize: options.writeBufferBytes ?? DEFAULT_WRITE_BUFFER_BYTES });
    this.syncWrites = options.syncWrites ?? true;
    this.now = options.now ?? Date.now;
    this.logger = options.logger;
    this.sweepIntervalMs = options.sweepIntervalMs ?? 5000;
    this.name = options.name ?? location;
    this.faultRetryBaseMs = options.faultRetryBaseMs ?? 200;
    this.faultRetryMaxMs = options.faultRetryMaxMs ?? 5000;
    this.reopenSpareBytes = options.reopenSpareBytes ?? 1024 * 1024;
    this.onServingChange = options.onServingChange;
    this.changeLog = new ChangeLog(this.db, options.changeLogRetention ?? DEFAULT_CHANGE_LOG_RETENTION, this.now);
    this.changeLogTrimIntervalMs = options.changeLogTrimIntervalMs ?? 1000;
  }

  /** Opens (creating if needed) the partition at `location` and starts its expiry sweeper. */
  static async open(location: string, options: PartitionStoreOptions = {}): Promise<PartitionStore> {
    const store = new PartitionStore(location, options);
    await store.db.open();
    const raw = await store.db.get(META_STATE);
    if (raw !== undefined) store.state = decodeState(raw);
    if (store.state.seq > MAX_KEPT_ETAG) await store.rebaseSequence();
    const [last] = await store.db.keys({ gte: Buffer.from([NS_DATA]), lt: DATA_END, reverse: true, limit: 1 }).all();
    store.maxKey = last?.subarray(1);
    await store.changeLog.load();
    if (store.sweepIntervalMs > 0) store.scheduleSweep();
    if (store.changeLogTrimIntervalMs > 0) store.scheduleTrim();
    return store;
  }

  /** The live record of `key`, or undefined when absent or expired. */
  async get(key: Buffer): Promise<StoredRecord | undefined> {
    return this.getNow(key);
  }

  /** `get`, answered on the event loop (pointRead): the node's Get handler answers in the same turn. */
  getNow(key: Buffer): StoredRecord | undefined {
    this.reads++;
    const raw = this.pointRead(dataKey(key));
    if (raw === undefined) return undefined;
    const record = this.decode(key, raw);
    return isExpired(record, this.now()) ? undefined : record;
  }

  /** The live records of `keys` (undefined where absent or expired). */
  async getMany(keys: readonly Buffer[]): Promise<Array<StoredRecord | undefined>> {
    return this.getManyNow(keys);
  }

  /** `getMany`, answered on the event loop (pointRead). */
  getManyNow(keys: readonly Buffer[]): Array<StoredRecord | undefined> {
    this.reads += keys.length;
    const now = this.now();
    return keys.map((key) => {
      const raw = this.pointRead(dataKey(key));
      if (raw === undefined) return undefined;
      const record = this.decode(key, raw);
      return isExpired(record, now) ? undefined : record;
    });
  }

  /**
   * One key read on the event loop (getSync). LevelDB answers a point read from its block cache
   * or the OS page cache in microseconds, well under the thread-pool round trip of the async get
   * (a hand-off to a worker thread and back, which on 2 busy cores costs more than the read). A
   * read that must go to the disk blocks the loop for its duration.
   */
  private pointRead(dk: Buffer): Buffer | undefined {
    try {
      return this.db.getSync(dk);
    } catch (err) {
      return this.readFailed(err);
    }
  }

  /**
   * Queues the writes together, so they share one batch and one fsync (with whatever else is
   * queued beside them); each settles on its own, as put/delete would: a failed CAS fails only its write.
   */
  writeMany(writes: readonly PointWrite[]): Array<Promise<StoredRecord | boolean>> {
    const ops: Op[] = [];
    const settled = writes.map(
      (w) =>
        new Promise<StoredRecord | boolean>((resolve, reject) => {
          if (w.kind === 'put') ops.push({ kind: 'put', key: w.key, value: w.value, options: w.options, chain: w.chain, resolve: this.counted(1, resolve), reject });
          else ops.push({ kind: 'delete', key: w.key, expectedEtag: w.expectedEtag, chain: w.chain, resolve: this.counted(1, resolve), reject });
        }),
    );
    this.enqueue(...ops);
    return settled;
  }

  /** Writes `value`; rejects with STORE_ETAG_MISMATCH when `expectedEtag` does not match. `chain`: its place in the chain's stream (ChainTag). */
  put(key: Buffer, value: Buffer, options: PutOptions = {}, chain?: ChainTag): Promise<StoredRecord> {
    return new Promise((resolve, reject) => this.enqueue({ kind: 'put', key, value, options, chain, resolve: this.counted(1, resolve), reject }));
  }

  /**
   * Replaces the live value of `key` by `change(current)`, read and written in one turn of the
   * write queue (ordered with every put, delete and bulk insert of the partition, and group-committed
   * with them). Rejects with STORE_NOT_FOUND when the key has no live value, STORE_ETAG_MISMATCH when
   * `expectedEtag` does not match, or whatever `change` throws; nothing is written then.
   */
  update(key: Buffer, change: UpdateFn, options: UpdateOptions = {}, chain?: ChainTag): Promise<StoredRecord> {
    return new Promise((resolve, reject) => this.enqueue({ kind: 'update', key, change, options, chain, resolve: this.counted(1, resolve), reject }));
  }

  /** Deletes `key`; resolves whether a live entry was deleted. `chain`: its place in the chain's stream (ChainTag). */
  delete(key: Buffer, expectedEtag?: number, chain?: ChainTag): Promise<boolean> {
    return new Promise((resolve, reject) => this.enqueue({ kind: 'delete', key, expectedEtag, chain, resolve: this.counted(1, resolve), reject }));
  }

  /**
   * Writes all rows in one atomic batch (upsert). The caller has checked they belong here and
   * that their fields are in range. Rows given as objects are packed first (one copy).
   * `assigned` (a replica applying its head's write) replaces this partition's own etag counter
   * and clock for these rows, so they get exactly the head's records.
   */
  bulkInsert(input: readonly BulkRowInput[] | PackedRows, assigned?: BulkAssignment, chain?: ChainTag): Promise<BulkWriteTiming> {
    const rows = input instanceof PackedRows ? input : PackedRows.fromRows(input);
    return new Promise((resolve, reject) =>
      this.enqueue({ kind: 'bulk', rows, sorted: rows.isStrictlySorted(), enqueuedAt: performance.now(), assigned, chain, resolve: this.counted(rows.count, resolve), reject }),
    );
  }

  /**
   * A chain replica's writes of several forwards, queued in one call so they can share one group
   * (one LevelDB batch and one fsync) as the head's did: bulk rows with their head's assignments,
   * and deletes. Each settles on its own, in order.
   */
  applyForwarded(writes: readonly ForwardedWrite[]): Array<Promise<unknown>> {
    const ops: Op[] = [];
    const settled = writes.map(
      (w) =>
        new Promise<unknown>((resolve, reject) => {
          if (w.kind === 'delete') ops.push({ kind: 'delete', key: w.key, expectedEtag: undefined, chain: w.chain, resolve: this.counted(1, resolve), reject });
          else ops.push({ kind: 'bulk', rows: w.rows, sorted: w.rows.isStrictlySorted(), enqueuedAt: performance.now(), assigned: w.assigned, chain: w.chain, resolve: this.counted(w.rows.count, resolve), reject });
        }),
    );
    this.enqueue(...ops);
    return settled;
  }

  /**
   * No data write (put, delete, update, bulk insert) queued, being built or committing: what a
   * write pause waits for, with the chain's acks. Sweeps and range clean-ups do not count (they
   * are this replica's own, never forwarded).
   */
  get isIdle(): boolean {
    return this.pendingWrites === 0;
  }

  /** The live records of `keys` as `snapshot` holds them (undefined where absent or expired then): a fast sync's copy. */
  async snapshotRecords(keys: readonly Buffer[], snapshot: PartitionSnapshot): Promise<Array<StoredRecord | undefined>> {
    const handle = this.snapshotHandle(snapshot);
    this.reads += keys.length;
    const raws = await this.db.getMany(keys.map(dataKey), { snapshot: handle }).catch((err: unknown) => this.readFailed(err));
    const now = this.now();
    return raws.map((raw, i) => {
      if (raw === undefined) return undefined;
      const record = this.decode(keys[i]!, raw);
      return isExpired(record, now) ? undefined : record;
    });
  }

  /** The last chain write this partition holds durably. */
  get chainPosition(): ChainPosition {
    return { stream: this.state.chainStream, seq: this.state.chainSeq };
  }

  /** Deletes entries whose expiry has passed; resolves how many. Runs periodically on its own. */
  sweepExpired(): Promise<number> {
    return new Promise((resolve, reject) => this.enqueue({ kind: 'sweep', resolve, reject }));
  }

  /**
   * Live entries of `[start, end)` (empty end = unbounded) in key order, in arrays of up to
   * `batchSize` entries and `batchMaxBytes` bytes (key + value + 32 per entry; a single larger
   * entry comes alone), from one LevelDB snapshot taken when the iteration starts.
   */
  async *scan(start: Buffer, end: Buffer, options: ReadOptions & { limit?: number; batchSize?: number; batchMaxBytes?: number } = {}): AsyncGenerator<StoredEntry[]> {
    const limit = options.limit && options.limit > 0 ? options.limit : Infinity;
    const batchSize = Math.max(1, Math.min(options.batchSize ?? 1000, 10_000));
    const batchMaxBytes = Math.max(1, options.batchMaxBytes ?? DEFAULT_SCAN_BATCH_MAX_BYTES);
    let iterator;
    try {
      // LevelDB stops filling one nextv once it holds this many bytes, so a batch of large values is never read whole.
      iterator = this.db.iterator({ ...dataRange(start, end), snapshot: this.snapshotHandle(options.snapshot), highWaterMarkBytes: batchMaxBytes });
    } catch (err) {
      this.readFailed(err);
    }
    let sent = 0;
    let out: StoredEntry[] = [];
    let outBytes = 0;
    try {
      while (sent < limit) {
        options.signal?.throwIfAborted();
        const raw = await iterator.nextv(Math.min(batchSize - out.length, limit - sent - out.length)).catch((err: unknown) => this.readFailed(err));
        if (raw.length === 0) break;
        const now = this.now();
        for (const [k, v] of raw) {
          const record = this.decode(k.subarray(1), v);
          if (isExpired(record, now)) continue;
          const bytes = k.length - 1 + record.value.length + SCAN_ENTRY_OVERHEAD_BYTES;
          if (out.length > 0 && outBytes + bytes > batchMaxBytes) {
            sent += out.length;
            this.reads += out.length;
            yield out;
            out = [];
            outBytes = 0;
          }
          out.push({ key: k.subarray(1), ...record });
          outBytes += bytes;
        }
        if (out.length >= batchSize || sent + out.length >= limit) {
          sent += out.length;
          this.reads += out.length;
          yield out;
          out = [];
          outBytes = 0;
        }
      }
      if (out.length > 0) {
        this.reads += out.length;
        yield out;
      }
    } finally {
      await iterator.close();
    }
  }

  /** Order-independent digest and count of the live entries of `[start, end)`. */
  async checksum(start: Buffer, end: Buffer, options: ReadOptions & { includeEtag?: boolean } = {}): Promise<RangeDigest> {
    return (await this.checksumPage(start, end, 0, options)).digest;
  }

  /**
   * The digest of the first `maxEntries` live entries of `[start, end)` (0 = all of them), and
   * where the rest begins when it stopped there (`undefined` = the range is done).
   */
  async checksumPage(start: Buffer, end: Buffer, maxEntries: number, options: ReadOptions & { includeEtag?: boolean } = {}): Promise<{ digest: RangeDigest; next: Buffer | undefined }> {
    const digest = new RangeDigest();
    let last: Buffer | undefined;
    for await (const batch of this.scan(start, end, { batchSize: 1000, limit: maxEntries, signal: options.signal, snapshot: options.snapshot })) {
      for (const e of batch) digest.add(e.key, e.value, e.expiresAtMs, options.includeEtag ? e.etag : undefined);
      last = batch[batch.length - 1]?.key ?? last;
    }
    const cut = maxEntries > 0 && digest.count >= maxEntries;
    return { digest, next: cut && last !== undefined ? Buffer.concat([last, ZERO_BYTE]) : undefined };
  }

  async stats(): Promise<PartitionStoreStats> {
    const diskBytes = await this.db.approximateSize(Buffer.from([NS_DATA]), DATA_END);
    const left = this.clearing ?? { count: 0, logicalBytes: 0 };
    return { count: this.state.count - left.count, logicalBytes: this.state.logicalBytes - left.logicalBytes, diskBytes, lastWriteMs: this.state.lastWriteMs, reads: this.reads, writes: this.writes };
  }

  /**
   * A snapshot that holds every write queued before this call, and a tracker of the keys of
   * `[start, end)` that writes queued from now on touch (what the snapshot may lack). The snapshot
   * is taken in the write queue, once every earlier write has committed. `stopTracking` ends it.
   */
  async openTrackedSnapshot(start: Buffer, end: Buffer): Promise<{ snapshot: PartitionSnapshot; tracker: WriteTracker }> {
    const tracker = new WriteTracker(start, end);
    this.trackers.add(tracker);
    try {
      const snapshot = await new Promise<PartitionSnapshot>((resolve, reject) => this.enqueue({ kind: 'barrier', resolve, reject }));
      return { snapshot, tracker };
    } catch (err) {
      this.trackers.delete(tracker);
      throw err;
    }
  }

  stopTracking(tracker: WriteTracker): void {
    this.trackers.delete(tracker);
  }

  /**
   * Deletes every entry of `[start, end)` (a split's leftovers: keys this partition no longer owns)
   * in batches of `batchRows` through the write queue, counts kept exact. From the call on they are
   * left out of `stats` (counted first, in the queue). Resolves with how many were deleted.
   */
  async clearRange(start: Buffer, end: Buffer, options: { batchRows?: number; signal?: AbortSignal } = {}): Promise<number> {
    const limit = Math.max(1, Math.min(options.batchRows ?? 1000, 10_000));
    const left = { count: 0, logicalBytes: 0 };
    const iterator = this.db.iterator(dataRange(start, end));
    try {
      for (;;) {
        const page = await iterator.nextv(1000);
        if (page.length === 0) break;
        for (const [k, v] of page) {
          left.count++;
          left.logicalBytes += recordBytes(k.subarray(1), decodeRecord(v));
        }
      }
    } finally {
      await iterator.close();
    }
    if (left.count === 0) return 0;
    this.clearing = left;
    let deleted = 0;
    try {
      for (;;) {
        options.signal?.throwIfAborted();
        const n = await new Promise<number>((resolve, reject) => this.enqueue({ kind: 'clear', start, end, limit, resolve, reject }));
        deleted += n;
        if (n < limit) break;
      }
    } finally {
      this.clearing = undefined;
    }
    return deleted;
  }

  /** Pins the current state for later reads; the caller closes it. */
  async openSnapshot(): Promise<PartitionSnapshot> {
    if (this.closing !== undefined) throw new StoreError('STORE_CLOSED', `partition at ${this.location} is closed`);
    const takenAtMs = Date.now();
    const handle = this.db.snapshot();
    try {
      // The count comes from the snapshot itself, so it matches what a scan of it will see.
      const raw = await this.db.get(META_STATE, { snapshot: handle });
      const state = raw === undefined ? undefined : decodeState(raw);
      return new PartitionSnapshot(this, handle, state?.count ?? 0, takenAtMs, { stream: state?.chainStream ?? '', seq: state?.chainSeq ?? 0 });
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /**
   * Up to `parts - 1` sorted keys strictly inside `[start, end)` that cut it into pieces of about
   * equal size, and the estimated entries of the range. Large ranges are cut by bisecting
   * LevelDB's on-disk size index (no scan); ranges too small for it to see are counted exactly.
   */
  async splitKeys(start: Buffer, end: Buffer, parts: number, options: { signal?: AbortSignal } = {}): Promise<{ keys: Buffer[]; approxCount: number }> {
    const range = dataRange(start, end);
    const rangeBytes = await this.db.approximateSize(range.gte, range.lt);
    const allBytes = await this.db.approximateSize(Buffer.from([NS_DATA]), DATA_END);
    if (rangeBytes < EXACT_SPLIT_BYTES) return this.exactSplit(start, end, parts, options.signal);
    const approxCount = allBytes > 0 ? Math.round((this.state.count * rangeBytes) / allBytes) : 0;
    const keys: Buffer[] = [];
    for (let i = 1; i < parts; i++) {
      options.signal?.throwIfAborted();
      const probe = await this.keyAtSize(range.gte, range.lt, (rangeBytes * i) / parts);
      // Snap to the first real key at or after the probe, so keys are actual entries.
      const [found] = await this.db.keys({ gte: probe, lt: range.lt, limit: 1 }).all();
      if (found === undefined) break;
      const key = found.subarray(1);
      const previous = keys[keys.length - 1] ?? start;
      if (Buffer.compare(key, previous) > 0) keys.push(key);
    }
    return { keys, approxCount };
  }

  /**
   * A sequence past MAX_KEPT_ETAG can only come from a kept etag an older version accepted (no
   * partition hands out 2^52 etags itself); left alone, the partition would soon run out of etags
   * (STORE_ETAG_EXHAUSTED on every put). The sequence restarts at the highest in-range etag stored;
   * keys holding larger etags keep them until they are next written. Persisted with the next write.
   */
  private async rebaseSequence(): Promise<void> {
    let highest = 0;
    let above = 0;
    const iterator = this.db.iterator({ gte: Buffer.from([NS_DATA]), lt: DATA_END });
    try {
      for (;;) {
        const page = await iterator.nextv(1000);
        if (page.length === 0) break;
        for (const [, v] of page) {
          const etag = decodeRecord(v).etag;
          if (etag <= MAX_KEPT_ETAG) highest = Math.max(highest, etag);
          else above++;
        }
      }
    } finally {
      await iterator.close();
    }
    this.logger?.warn({ location: this.location, from: this.state.seq, to: highest, keysAbove: above }, 'etag sequence beyond the kept-etag range (written by an older version): restarting it at the highest in-range etag');
    this.state = { ...this.state, seq: highest };
  }

  /** The highest etag this partition has handed out. */
  get lastEtag(): number {
    return this.state.seq;
  }

  /** Whether the partition takes writes; while it does not, it is recovering by itself. */
  get health(): PartitionHealth {
    const fault = this.fault;
    if (fault === undefined) return { serving: true, writeErrors: this.writeErrors };
    return { serving: false, writeErrors: this.writeErrors, error: fault.cause, sinceMs: fault.sinceMs, recoveryAttempts: fault.attempts };
  }

  /** Stops intake and recovery, finishes queued writes, closes LevelDB. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearTimeout(this.sweepTimer);
      this.sweepTimer = undefined;
      clearTimeout(this.trimTimer);
      this.trimTimer = undefined;
      this.stopRecovery.abort();
      await this.idle();
      await this.recovery;
      await this.db.close();
    })();
    return this.closing;
  }

  /** Wraps a write's resolve so the write counter moves only for writes that committed. */
  private counted<T>(entries: number, resolve: (value: T) => void): (value: T) => void {
    return (value) => {
      this.writes += entries;
      resolve(value);
    };
  }

  private snapshotHandle(snapshot: PartitionSnapshot | undefined): ReturnType<ClassicLevel<Buffer, Buffer>['snapshot']> | undefined {
    if (snapshot === undefined) return undefined;
    if (snapshot.owner !== this) throw new TypeError(`a snapshot of another partition was passed to ${this.location}`);
    return snapshot.handle;
  }

  private async exactSplit(start: Buffer, end: Buffer, parts: number, signal: AbortSignal | undefined): Promise<{ keys: Buffer[]; approxCount: number }> {
    const all: Buffer[] = [];
    const iterator = this.db.keys(dataRange(start, end));
    try {
      for (;;) {
        signal?.throwIfAborted();
        const page = await iterator.nextv(10_000);
        if (page.length === 0) break;
        for (const k of page) all.push(k.subarray(1));
      }
    } finally {
      await iterator.close();
    }
    const keys: Buffer[] = [];
    for (let i = 1; i < parts; i++) {
      const key = all[Math.floor((all.length * i) / parts)];
      if (key !== undefined && Buffer.compare(key, keys[keys.length - 1] ?? start) > 0) keys.push(key);
    }
    return { keys, approxCount: all.length };
  }

  /** The LevelDB key in `[lo, hi)` below which about `bytes` of the range's data lies. */
  private async keyAtSize(lo: Buffer, hi: Buffer, bytes: number): Promise<Buffer> {
    let low = lo;
    let high = hi;
    for (let step = 0; step < BISECT_STEPS; step++) {
      const mid = midpoint(low, high);
      if (mid === undefined) break;
      if ((await this.db.approximateSize(lo, mid)) < bytes) low = mid;
      else high = mid;
    }
    return high;
  }

  /** Queues ops in order; ops queued in one call are all in the queue before draining starts, so they can share a group. */
  private enqueue(...ops: Op[]): void {
    for (const op of ops) {
      if (this.closing !== undefined) {
        op.reject(new StoreError('STORE_CLOSED', `partition at ${this.location} is closed`));
      } else if (this.fault !== undefined) {
        // Fail fast while recovering: the caller retries, and nothing waits on a broken disk.
        if (op.kind === 'sweep') op.resolve(0);
        else op.reject(this.fault.error);
      } else {
        if (this.trackers.size > 0) this.track(op);
        if (op.kind !== 'sweep' && op.kind !== 'barrier' && op.kind !== 'clear') this.countPending(op);
        this.queue.push(op);
      }
    }
    if (this.queue.length > 0) this.draining ??= this.drain();
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      if (this.fault !== undefined) {
        for (const op of this.queue.splice(0)) {
          if (op.kind === 'sweep') op.resolve(0);
          else op.reject(this.fault.error);
        }
        break;
      }
      // Consecutive puts and deletes share one batch and fsync; so do consecutive bulk inserts
      // over disjoint key ranges (pipelined batches of a sorted load). A sweep runs alone.
      const first = this.queue[0]!;
      let group: Op[];
      if (first.kind === 'sweep' || first.kind === 'barrier' || first.kind === 'clear') {
        group = this.queue.splice(0, 1);
      } else if (first.kind === 'bulk') {
        group = this.queue.splice(0, this.disjointBulkRun());
      } else {
        let n = 1;
        while (n < this.queue.length && isPointKind(this.queue[n]!.kind)) n++;
        group = this.queue.splice(0, n);
      }
      try {
        // A sorted group whose keys no write still in flight touches (it appends past every key
        // written, or its range misses every batch not written yet: another stream's rows, as a
        // restore or an ingest of several files sends) reads what it overwrites from the data as
        // written, which those writes do not change; so it is built while the group before it is
        // being written. Everything else waits for that write first. Writes still reach LevelDB
        // one at a time, in order.
        const appending = first.kind === 'bulk' && this.clearOfUnwritten(group as BulkOp[]);
        if (!appending) {
          await this.committing;
          // The write awaited may have failed meanwhile.
          const fault = this.fault as WriteFault | undefined;
          if (fault !== undefined) {
            for (const op of group) {
              if (op.kind === 'sweep') op.resolve(0);
              else op.reject(fault.error);
            }
            continue;
          }
        }
        if (first.kind === 'bulk') await this.runBulk(group as BulkOp[], appending);
        else await this.runGroup(group);
      } catch (err) {
        for (const op of group) op.reject(err);
      }
    }
    // Cleared synchronously with the last empty-queue check: an enqueue can never fall between.
    // A bulk commit may still be in flight (`committing`): the next drain builds on top of it.
    this.draining = undefined;
  }

  /** Until the queue is drained and every write committed. */
  private async idle(): Promise<void> {
    while (this.draining !== undefined || this.committing !== undefined) {
      await this.draining;
      await this.committing;
    }
  }

  /**
   * Whether every insert of the group is sorted and either lies above the largest key written or
   * being written, or has a key range that overlaps no batch built and not written yet.
   */
  private clearOfUnwritten(group: BulkOp[]): boolean {
    const maxKey = this.maxKey;
    return group.every((op) => {
      const { rows } = op;
      if (!op.sorted || rows.count === 0) return false;
      if (maxKey === undefined || rows.compareKeyTo(0, maxKey) > 0) return true;
      for (const batch of this.unwritten) {
        if (batch.unsorted) return false;
        for (const [lo, hi] of batch.ranges) if (rows.compareKeyTo(0, hi) <= 0 && rows.compareKeyTo(rows.count - 1, lo) >= 0) return false;
      }
      return true;
    });
  }

  private async runGroup(group: Op[]): Promise<void> {
    const op = group[0]!;
    if (op.kind === 'sweep') return this.runSweep(op);
    if (op.kind === 'barrier') return op.resolve(await this.openSnapshot());
    if (op.kind === 'clear') return this.runClear(op);
    return this.runSingles(group);
  }

  private async runSingles(group: Op[]): Promise<void> {
    const batch = new WriteOps();
    const next = { ...this.state };
    const now = this.now();
    // Later ops in the group must see earlier ones: an overlay of what this batch writes, over
    // the stored records of every key of the group, read up front.
    const overlay = this.storedRecords(group);
    const settle: Array<() => void> = [];
    for (const op of group) {
      if (op.kind !== 'put' && op.kind !== 'delete' && op.kind !== 'update') continue;
      const problem = op.kind !== 'delete' ? putProblem(op.options.ttlMs ?? 0, now, next.seq) : undefined;
      if (problem !== undefined) {
        settle.push(() => op.reject(problem));
        continue;
      }
      const id = op.key.toString('latin1');
      const dk = dataKey(op.key);
      const stored = overlay.get(id)!;
      const live = stored !== null && !isExpired(stored, now) ? stored : null;
      const expected = op.kind === 'delete' ? op.expectedEtag : op.options.expectedEtag;
      if (expected !== undefined && expected !== (live?.etag ?? 0)) {
        const current = live?.etag ?? 0;
        settle.push(() =>
          op.reject(
            new StoreError('STORE_ETAG_MISMATCH', `etag mismatch: expected ${expected}, current ${current === 0 ? '0 (key absent)' : current}`, {
              currentEtag: current,
            }),
          ),
        );
        continue;
      }
      let updated: StoredRecord | undefined;
      if (op.kind === 'update') {
        if (live === null) {
          settle.push(() => op.reject(new StoreError('STORE_NOT_FOUND', `key "${displayBytes(op.key)}" has no value to update: write it first with Put`)));
          continue;
        }
        try {
          const ttl = op.options.ttlMs;
          updated = { value: op.change(live), etag: next.seq + 1, updatedAtMs: now, expiresAtMs: ttl === undefined ? live.expiresAtMs : ttl > 0 ? now + ttl : 0 };
        } catch (err) {
          settle.push(() => op.reject(err));
          continue;
        }
      }
      if (stored !== null) {
        next.count--;
        next.logicalBytes -= recordBytes(op.key, stored);
      }
      if (op.kind !== 'delete') {
        let record: StoredRecord;
        if (op.kind === 'update') record = updated!;
        else {
          const ttl = op.options.ttlMs ?? 0;
          record = { value: op.value, etag: next.seq + 1, updatedAtMs: now, expiresAtMs: ttl > 0 ? now + ttl : 0 };
        }
        next.seq++;
        batch.put(dk, encodeRecord(record));
        if (record.expiresAtMs > 0) batch.put(expiryKey(record.expiresAtMs, op.key), EMPTY);
        next.count++;
        next.logicalBytes += recordBytes(op.key, record);
        overlay.set(id, record);
        this.logChange(batch, next, numberChainWrite(next, op.chain), [op.key], now);
        settle.push(() => op.resolve(record));
      } else {
        if (stored !== null) batch.del(dk);
        overlay.set(id, null);
        this.logChange(batch, next, numberChainWrite(next, op.chain), [op.key], now);
        settle.push(() => op.resolve(live !== null));
      }
    }
    next.lastWriteMs = now;
    await this.commit(batch, next);
    for (const op of group) if (op.kind === 'put' || op.kind === 'update') this.noteWritten(op.key);
    for (const s of settle) s();
  }

  /** The stored record (null: none) of each distinct key of the group's puts and deletes, by latin1 key. */
  private storedRecords(group: readonly Op[]): Map<string, StoredRecord | null> {
    const records = new Map<string, StoredRecord | null>();
    const ids: string[] = [];
    const keys: Buffer[] = [];
    for (const op of group) {
      if (!isPointKind(op.kind)) continue;
      const key = (op as Extract<Op, { key: Buffer }>).key;
      const id = key.toString('latin1');
      if (records.has(id)) continue;
      records.set(id, null);
      ids.push(id);
      keys.push(dataKey(key));
    }
    for (let i = 0; i < keys.length; i++) {
      const raw = this.pointRead(keys[i]!);
      if (raw !== undefined) records.set(ids[i]!, this.decode(keys[i]!.subarray(1), raw));
    }
    return records;
  }

  /**
   * How many queued bulk inserts from the head can share one batch: each must have sorted keys
   * and a range disjoint from those before it (so reading what they overwrite before writing any
   * stays exact), up to GROUP_MAX_ROWS rows and GROUP_MAX_BYTES bytes.
   */
  private disjointBulkRun(): number {
    const ranges: Array<[Buffer, Buffer]> = [];
    let rows = 0;
    let bytes = 0;
    let n = 0;
    for (const op of this.queue) {
      if (op.kind !== 'bulk') break;
      const range: [Buffer, Buffer] | undefined = op.sorted && op.rows.count > 0 ? [op.rows.key(0), op.rows.key(op.rows.count - 1)] : undefined;
      if (n > 0 && (range === undefined || rows + op.rows.count > GROUP_MAX_ROWS || bytes + op.rows.bytes > GROUP_MAX_BYTES)) break;
      if (range !== undefined && ranges.some(([lo, hi]) => Buffer.compare(range[0], hi) <= 0 && Buffer.compare(lo, range[1]) <= 0)) break;
      n++;
      rows += op.rows.count;
      bytes += op.rows.bytes;
      if (range === undefined) break;
      ranges.push(range);
    }
    return Math.max(1, n);
  }

  /**
   * One LevelDB batch for a group of bulk inserts, each row laid out in PutScratch and copied into
   * the native batch at once: no buffer per row. Builds the group's batch on the state the previous write leaves (`tip`), then commits it once
   * that write has landed — without waiting here: resolves when the batch is built, and the group's
   * ops settle when it is written. A group built on a write that then fails is not written.
   * `appending` (the group touches no key of a write in flight, see drain): while the batch built
   * last still waits for the write before it, the group joins that batch instead of making its
   * own, so one LevelDB write and one fsync cover both (group commit across calls; every op is
   * still settled only once the batch holding it is written).
   */
  private async runBulk(group: BulkOp[], appending = false): Promise<void> {
    const started = performance.now();
    const now = this.now();
    const overwritten: Array<Map<number, number>> = [];
    let total = 0;
    let rowCount = 0;
    for (const op of group) {
      const opNow = op.assigned?.nowMs ?? now;
      overwritten.push(await this.overwrittenBytes(op.rows, op.sorted, opNow));
      total += op.rows.bytes;
      rowCount += op.rows.count;
    }
    // Checked after the reads above: the waiting batch may have started its write meanwhile.
    const waiting = this.waiting;
    const join =
      appending &&
      waiting !== undefined &&
      waiting.open &&
      waiting.rows + rowCount <= GROUP_MAX_ROWS &&
      waiting.bytes + total <= GROUP_MAX_BYTES &&
      etagBound(group, waiting.next.seq, rowCount) < MAX_ETAG;
    const next = { ...(join ? waiting.next : (this.tip ?? this.state)) };
    const assignments: BulkAssignment[] = [];
    const batch = join ? waiting.batch : new WriteOps(this.db, total);
    try {
      for (let g = 0; g < group.length; g++) {
        const { rows, assigned } = group[g]!;
        const old = overwritten[g]!;
        const opNow = assigned?.nowMs ?? now;
        // A replica counts from its head's first etag; the head from its own sequence.
        let seq = assigned === undefined ? next.seq : assigned.firstEtag - 1;
        assignments.push({ firstEtag: seq + 1, nowMs: opNow });
        for (let i = 0; i < rows.count; i++) {
          const expiresAtMs = rows.metaField(i, 2);
          if (expiresAtMs > 0 && expiresAtMs <= opNow) continue;
          const oldBytes = old.size === 0 ? undefined : old.get(i);
          if (oldBytes !== undefined) {
            next.count--;
            next.logicalBytes -= oldBytes;
          }
          let etag = rows.metaField(i, 0);
          if (etag > 0) seq = Math.max(seq, etag);
          else if (seq >= MAX_ETAG) throw etagsExhausted(seq);
          else etag = ++seq;
          const keyLength = rows.keyLength(i);
          const key = putScratch.key(1 + keyLength);
          key[0] = NS_DATA;
          rows.copyKey(i, key, 1);
          const recordLength = RECORD_HEADER_BYTES + (expiresAtMs > 0 ? RECORD_EXPIRY_BYTES : 0) + rows.valueLength(i);
          const record = putScratch.value(recordLength);
          rows.copyValue(i, record, writeRecordHeader(record, 0, etag, rows.metaField(i, 1) || opNow, expiresAtMs));
          batch.putCopied(key, record);
          if (expiresAtMs > 0) {
            const index = putScratch.key(9 + keyLength);
            index[0] = NS_EXPIRY;
            writeU64(index, 1, expiresAtMs);
            rows.copyKey(i, index, 9);
            batch.putCopied(index, EMPTY);
          }
          next.count++;
          next.logicalBytes += 1 + keyLength + recordLength;
        }
        next.seq = Math.max(next.seq, seq);
        this.logChange(batch, next, numberChainWrite(next, group[g]!.chain), rows, now);
      }
    } catch (err) {
      // etagBound keeps a joining group from failing half-way; were it to, the shared batch holds
      // part of it, so none of the batch is written and every op in it fails.
      if (join) waiting.failed ??= err;
      else await batch.discard();
      throw err;
    }
    next.lastWriteMs = now;
    const built = performance.now();
    // Raised now (a write that fails leaves it high, which only costs a read): the next group
    // appends only if it lies above these rows too.
    for (const op of group) this.noteWritten(op.rows);
    this.tip = next;
    const timings = group.map((op, g) => ({ op, queueMs: started - op.enqueuedAt, writeMs: built - started, assigned: assignments[g]! }));
    const ranges = group.filter((op) => op.sorted && op.rows.count > 0).map(({ rows }): [Buffer, Buffer] => [rows.key(0), rows.key(rows.count - 1)]);
    if (join) {
      waiting.next = next;
      waiting.ops.push(...timings);
      waiting.ranges.push(...ranges);
      waiting.rows += rowCount;
      waiting.bytes += total;
      return;
    }
    const pending: WaitingBulk = { batch, next, ops: timings, rows: rowCount, bytes: total, open: true, failed: undefined, ranges, unsorted: group.some((op) => !op.sorted) };
    this.waiting = pending;
    this.unwritten.add(pending);
    const previous = this.committing;
    let committing: Promise<boolean> | undefined = undefined;
    committing = (async (): Promise<boolean> => {
      try {
        if (previous !== undefined && !(await previous)) {
          throw this.fault?.error ?? new StoreError('STORE_CLOSED', `partition at ${this.location} is closed`);
        }
        pending.open = false;
        if (pending.failed !== undefined) throw pending.failed;
        const writing = performance.now();
        await this.commit(pending.batch, pending.next);
        const fsyncMs = performance.now() - writing;
        for (const t of pending.ops) t.op.resolve({ queueMs: t.queueMs, writeMs: t.writeMs, fsyncMs, assigned: t.assigned });
        return true;
      } catch (err) {
        pending.open = false;
        await pending.batch.discard().catch(() => undefined);
        for (const t of pending.ops) t.op.reject(err);
        return false;
      } finally {
        this.unwritten.delete(pending);
        if (this.waiting === pending) this.waiting = undefined;
        if (this.committing === committing) {
          this.committing = undefined;
          this.tip = undefined;
        }
      }
    })();
    this.committing = committing;
  }

  /**
   * What each row overwrites: the logical bytes of the entry it replaces, by row index. Sorted,
   * distinct keys (the fast path) take one range iteration merged with the rows: nearly free into
   * an empty range. Anything else reads key by key and also settles duplicates within the batch
   * (a later row for a key replaces the earlier row, not the stored record).
   */
  private async overwrittenBytes(rows: PackedRows, sorted: boolean, now: number): Promise<Map<number, number>> {
    const found = new Map<number, number>();
    if (rows.count === 0) return found;
    if (sorted && (this.maxKey === undefined || rows.compareKeyTo(0, this.maxKey) > 0)) return found;
    if (sorted && rows.count <= POINT_READ_MAX_ROWS) {
      // A few rows (a replica's forwarded puts): point reads on the loop beat an iterator's round trips.
      for (let i = 0; i < rows.count; i++) {
        const dk = dataKey(rows.key(i));
        const raw = this.pointRead(dk);
        if (raw !== undefined) found.set(i, dk.length + raw.length);
      }
      return found;
    }
    if (sorted) {
      // Not worth caching: these blocks are about to be rewritten, and large values would push out hot ones.
      const iterator = this.db.iterator({ gte: dataKey(rows.key(0)), lte: dataKey(rows.key(rows.count - 1)), fillCache: false });
      try {
        let r = 0;
        for (;;) {
          const chunk = await iterator.nextv(1000);
          if (chunk.length === 0) break;
          for (const [k, v] of chunk) {
            while (r < rows.count && rows.compareKeyTo(r, k, 1) < 0) r++;
            if (r < rows.count && rows.compareKeyTo(r, k, 1) === 0) found.set(r, k.length + v.length);
          }
        }
      } finally {
        await iterator.close();
      }
      return found;
    }
    const lastSeen = new Map<string, number>();
    for (let i = 0; i < rows.count; i++) {
      const expiresAtMs = rows.metaField(i, 2);
      if (expiresAtMs > 0 && expiresAtMs <= now) continue;
      const key = rows.key(i);
      const id = key.toString('latin1');
      const prev = lastSeen.get(id);
      if (prev !== undefined) {
        found.set(i, 1 + key.length + encodedRecordLength({ value: rows.value(prev), etag: 0, updatedAtMs: 0, expiresAtMs: rows.metaField(prev, 2) }));
      } else {
        const dk = dataKey(key);
        const stored = await this.db.get(dk);
        if (stored !== undefined) found.set(i, dk.length + stored.length);
      }
      lastSeen.set(id, i);
    }
    return found;
  }

  /** Raises maxKey to the largest key of `rows` (written). */
  private noteWritten(rows: PackedRows | Buffer): void {
    let largest: Buffer | undefined;
    if (Buffer.isBuffer(rows)) largest = rows;
    else if (rows.count === 0) return;
    else if (rows.isStrictlySorted()) largest = rows.key(rows.count - 1);
    else for (let i = 0; i < rows.count; i++) if (largest === undefined || rows.compareKeyTo(i, largest) > 0) largest = rows.key(i);
    // A copy: the key may be a view of a whole request.
    if (largest !== undefined && (this.maxKey === undefined || Buffer.compare(largest, this.maxKey) > 0)) this.maxKey = Buffer.from(largest);
  }

  private async runSweep(op: Extract<Op, { kind: 'sweep' }>): Promise<void> {
    const now = this.now();
    const upper = Buffer.alloc(9);
    upper[0] = NS_EXPIRY;
    writeU64(upper, 1, now + 1);
    const entries = await this.db.keys({ gte: Buffer.from([NS_EXPIRY]), lt: upper, limit: SWEEP_BATCH }).all();
    if (entries.length === 0) return op.resolve(0);
    const batch = new WriteOps();
    const next = { ...this.state };
    let swept = 0;
    for (const indexKey of entries) {
      const expiresAtMs = readU64(indexKey, 1);
      const key = indexKey.subarray(9);
      const dk = dataKey(key);
      const stored = await this.readRaw(dk);
      // The index may be stale: the key was rewritten (other or no expiry) or deleted since.
      if (stored !== null && stored.expiresAtMs === expiresAtMs) {
        batch.del(dk);
        next.count--;
        next.logicalBytes -= recordBytes(key, stored);
        swept++;
      }
      batch.del(indexKey);
    }
    await this.commit(batch, next);
    op.resolve(swept);
    // More may be due than one sweep takes.
    if (entries.length === SWEEP_BATCH) void this.sweepExpired().catch((err: unknown) => this.logSweepError(err));
  }

  /** Counts a data write as pending until it settles (isIdle). */
  private countPending(op: { resolve: (value: never) => void; reject: (e: unknown) => void }): void {
    this.pendingWrites++;
    const { resolve, reject } = op;
    let settled = false;
    const done = (): void => {
      if (!settled) this.pendingWrites--;
      settled = true;
    };
    op.resolve = (value: never) => {
      done();
      resolve(value);
    };
    op.reject = (e: unknown) => {
      done();
      reject(e);
    };
  }

  /** Notes the keys an op queued now will write, for every tracker (openTrackedSnapshot). */
  private track(op: Op): void {
    for (const tracker of this.trackers) {
      if (op.kind === 'put' || op.kind === 'delete' || op.kind === 'update') tracker.note(op.key);
      else if (op.kind === 'bulk') for (let i = 0; i < op.rows.count; i++) tracker.note(op.rows.key(i));
    }
  }

  private async runClear(op: Extract<Op, { kind: 'clear' }>): Promise<void> {
    const entries = await this.db.iterator({ ...dataRange(op.start, op.end), limit: op.limit }).all();
    if (entries.length === 0) return op.resolve(0);
    const batch = new WriteOps();
    const next = { ...this.state };
    let bytes = 0;
    for (const [dk, raw] of entries) {
      const key = dk.subarray(1);
      const record = decodeRecord(raw);
      batch.del(dk);
      if (record.expiresAtMs > 0) batch.del(expiryKey(record.expiresAtMs, key));
      next.count--;
      next.logicalBytes -= recordBytes(key, record);
      bytes += recordBytes(key, record);
    }
    await this.commit(batch, next);
    if (this.clearing !== undefined) this.clearing = { count: Math.max(0, this.clearing.count - entries.length), logicalBytes: Math.max(0, this.clearing.logicalBytes - bytes) };
    op.resolve(entries.length);
  }

  private async commit(batch: WriteOps, next: State): Promise<void> {
    batch.put(META_STATE, encodeState(next));
    try {
      await batch.write(this.db, this.syncWrites);
    } catch (err) {
      if (this.closing !== undefined) throw new StoreError('STORE_CLOSED', `partition at ${this.location} is closed`, { cause: err });
      throw this.enterFault(err);
    }
    this.state = next;
  }

  /**
   * A write failed (disk full, I/O error): stop taking writes, and try again in the background
   * until LevelDB takes them. The state in memory stays the last committed one; recovery reloads
   * it from disk, where data and counts were written in one batch.
   */
  private enterFault(err: unknown): StoreError {
    this.writeErrors++;
    if (this.fault !== undefined) return this.fault.error;
    const cause = err instanceof Error ? err : new Error(String(err));
    const error = new StoreError(
      'STORE_PARTITION_UNAVAILABLE',
      `${this.name} cannot write (${osError(cause)}): the write was not acknowledged; the partition retries by itself and takes writes again once the disk has room — retry the call`,
      { cause, context: { partition: this.name } },
    );
    this.fault = { error, cause, sinceMs: Date.now(), attempts: 0 };
    this.logger?.error({ err: cause, location: this.location }, 'partition write failed; refusing writes and recovering');
    this.onServingChange?.(false, cause);
    this.recovery ??= this.recover().finally(() => {
      this.recovery = undefined;
    });
    return error;
  }

  /** Retries with backoff until a probe write succeeds, reopening LevelDB when its error is sticky. */
  private async recover(): Promise<void> {
    const fault = this.fault!;
    for (;;) {
      const delay = Math.min(this.faultRetryMaxMs, this.faultRetryBaseMs * 2 ** Math.min(fault.attempts, 16));
      try {
        await sleep(delay, undefined, { signal: this.stopRecovery.signal });
      } catch {
        return; // closing
      }
      fault.attempts++;
      try {
        await this.idle();
        await this.tryResume();
        this.fault = undefined;
        this.logger?.info({ location: this.location, attempts: fault.attempts, downMs: Date.now() - fault.sinceMs }, 'partition takes writes again');
        this.onServingChange?.(true, undefined);
        return;
      } catch (err) {
        if (this.closing !== undefined) return;
        fault.cause = err instanceof Error ? err : new Error(String(err));
        fault.error = new StoreError(
          'STORE_PARTITION_UNAVAILABLE',
          `${this.name} cannot write since ${new Date(fault.sinceMs).toISOString()} (${osError(fault.cause)}); ${fault.attempts} recovery attempt(s) so far — free disk space; retry the call`,
          { cause: fault.cause, context: { partition: this.name } },
        );
        this.logger?.warn({ err: fault.cause, location: this.location, attempts: fault.attempts }, 'partition still cannot write; will retry');
      }
    }
  }

  /** One recovery attempt: a probe write, then (LevelDB errors are sticky) a reopen and another probe. */
  private async tryResume(): Promise<void> {
    const probe = (): Promise<void> => this.db.put(META_PROBE, encodeProbe(Date.now()), { sync: true });
    try {
      await probe();
    } catch (err) {
      // Reopening replays LevelDB's logs into tables, so it needs about their size free; held snapshots end.
      const free = await freeBytes(this.location);
      const needed = (await logBytes(this.location)) + this.reopenSpareBytes;
      if (free !== undefined && free < needed) throw err;
      this.logger?.warn({ location: this.location, freeBytes: free, neededBytes: needed }, 'reopening the partition\'s LevelDB to clear its write error');
      await this.db.close();
      await this.db.open();
      await probe();
    }
    // What the failed write did is what disk says: reload the counts from there.
    const raw = await this.db.get(META_STATE);
    if (raw !== undefined) this.state = decodeState(raw);
    await this.changeLog.load();
  }

  /** A read that failed because recovery has LevelDB closed says so, retryably; a released snapshot says so too. */
  private readFailed(err: unknown): never {
    if (this.fault !== undefined && (err as { code?: unknown }).code === 'LEVEL_DATABASE_NOT_OPEN') throw this.fault.error;
    return snapshotGone(err);
  }

  private async readRaw(dk: Buffer): Promise<StoredRecord | null> {
    const raw = await this.db.get(dk);
    return raw === undefined ? null : this.decode(dk.subarray(1), raw);
  }

  /** decodeRecord, its failure naming this partition and the key (hex), so the caller can find the record. */
  private decode(key: Buffer, raw: Buffer): StoredRecord {
    try {
      return decodeRecord(raw);
    } catch (err) {
      if (!(err instanceof StoreError)) throw err;
      throw new StoreError('STORE_INTERNAL', `${this.name}: ${err.message} at key ${key.toString('hex')} (hex): the record is damaged or in a format this version does not know; other keys stay readable`, {
        cause: err,
        context: { partition: this.name, key: key.toString('hex') },
      });
    }
  }

  private scheduleSweep(): void {
    this.sweepTimer = setTimeout(() => {
      this.sweepExpired()
        .catch((err: unknown) => this.logSweepError(err))
        .finally(() => {
          if (this.closing === undefined) this.scheduleSweep();
        });
    }, this.sweepIntervalMs);
    this.sweepTimer.unref();
  }

  /** Puts the change log's entry for a chain write that moved the partition's position (`moved`) into its batch. */
  private logChange(batch: WriteOps, next: State, moved: ChainMove, keys: Buffer[] | PackedRows, atMs: number): void {
    if (moved === 'none' || !this.changeLog.enabled) return;
    const [key, value] = this.changeLog.entry({ stream: next.chainStream, seq: next.chainSeq }, moved === 'jump', keys, atMs);
    batch.put(key, value);
  }

  /**
   * The keys this partition changed after `after` in its write stream, up to the position of
   * `snapshot` (absent: the current data), from its change log as the snapshot sees it; not
   * covered when the log does not reach back that far (trimmed, or a jump or another stream in
   * between). What a fast sync copies.
   */
  async changesSince(after: ChainPosition, snapshot?: PartitionSnapshot): Promise<ChangesSince> {
    const handle = this.snapshotHandle(snapshot);
    const upTo = snapshot?.chain ?? this.chainPosition;
    try {
      return await this.changeLog.changesSince(after, upTo, handle);
    } catch (err) {
      return this.readFailed(err);
    }
  }

  private scheduleTrim(): void {
    this.trimTimer = setTimeout(() => {
      this.changeLog
        .trim()
        .catch((err: unknown) => {
          if (this.closing === undefined && this.fault === undefined) this.logger?.warn({ err, location: this.location }, 'trimming the change log failed; will retry');
        })
        .finally(() => {
          if (this.closing === undefined) this.scheduleTrim();
        });
    }, this.changeLogTrimIntervalMs);
    this.trimTimer.unref();
  }

  private logSweepError(err: unknown): void {
    if (this.closing !== undefined) return;
    this.logger?.error({ err, location: this.location }, 'expiry sweep failed; will retry');
  }
}

const EMPTY = Buffer.alloc(0);

/** The single-key writes, which share one group (and one batch and fsync). */
function isPointKind(kind: Op['kind']): boolean {
  return kind === 'put' || kind === 'delete' || kind === 'update';
}

/**
 * Why a put cannot be written at `now`: its expiry would pass MAX_TIME_MS, or the partition has
 * no etag left to hand out. The service checked the TTL's range; only `now` makes it too far here.
 */
function putProblem(ttlMs: number, now: number, seq: number): StoreError | undefined {
  if (ttlMs > 0 && now + ttlMs > MAX_TIME_MS) {
    return new StoreError('STORE_INVALID_ARGUMENT', `ttl_ms ${ttlMs} puts the expiry past ${new Date(MAX_TIME_MS).toISOString()} (the latest time the store holds): use a TTL of at most ${MAX_TIME_MS - now} ms`, {
      context: { field: 'ttl_ms', value: ttlMs },
    });
  }
  return seq >= MAX_ETAG ? etagsExhausted(seq) : undefined;
}

/**
 * A bound on every etag a group of bulk inserts can reach when built on sequence `seq`: the largest
 * starting point (the partition's sequence, a replica's assigned first etag, a kept etag) plus one
 * per row. Below MAX_ETAG the build cannot fail with STORE_ETAG_EXHAUSTED.
 */
function etagBound(group: readonly BulkOp[], seq: number, rows: number): number {
  let start = seq;
  for (const { rows: packed, assigned } of group) {
    if (assigned !== undefined) start = Math.max(start, assigned.firstEtag - 1);
    start = Math.max(start, packed.etagUpperBound());
  }
  return start + rows;
}

function etagsExhausted(seq: number): StoreError {
  return new StoreError('STORE_ETAG_EXHAUSTED', `this partition has handed out etag ${seq}, the largest the store assigns (${MAX_ETAG}): no new etag is left for the write`);
}

/**
 * The operations of one atomic write. Small writes go through classic-level's chained batch, about
 * six times faster per row than the array form (1.2M vs 0.19M rows/s for 1,000-row batches here).
 * But a chained batch's native copy of the data is freed only when V8 collects the JS object, and
 * V8 does not count that memory, so large batches piled up outside the heap (15 MiB BulkInserts
 * grew a node by about their size each); from CHAINED_BATCH_MAX_BYTES on, puts and deletes whose
 * size is not known up front use the array form, which frees its native batch as soon as the write
 * is done. Bulk groups (size known, at most GROUP_MAX_BYTES) always use the chained batch: the
 * array form cost 0.8 µs more per row, and since the packed path allocates little per row, the
 * native batches waiting for V8 to collect them stay a small part of the node's memory (measured:
 * a forced collection after every write lowered the peak by about 25 MiB).
 */
class WriteOps {
  readonly ops: Array<{ type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer }> = [];
  private bytes = 0;
  /** Set when the caller knew the size up front and it is small: operations go straight in. */
  private readonly chained: ReturnType<ClassicLevel<Buffer, Buffer>['batch']> | undefined;

  /** `expectedBytes`: the key and value bytes about to be written, when known. */
  constructor(db?: ClassicLevel<Buffer, Buffer>, expectedBytes?: number) {
    if (db !== undefined && expectedBytes !== undefined) this.chained = db.batch();
  }

  put(key: Buffer, value: Buffer): void {
    if (this.chained !== undefined) {
      this.chained.put(key, value);
      return;
    }
    this.ops.push({ type: 'put', key, value });
    this.bytes += key.length + value.length;
  }

  /**
   * A put of Buffers straight into classic-level's batch (`_put`, what its public `put` calls
   * after abstract-level's per-call option merging, validation, encoding and hooks — none of
   * which a Buffer key and value under 'buffer' encodings without hooks need). About a third of
   * a bulk row's cost on the node. The batch's last operation (the state) goes through `put`, so
   * abstract-level counts the batch as non-empty and writes it.
   */
  putBuffers(key: Buffer, value: Buffer): void {
    const chained = this.chained as unknown as { _put?: (key: Buffer, value: Buffer) => void } | undefined;
    if (chained?._put !== undefined) chained._put(key, value);
    else this.put(key, value);
  }

  /**
   * putBuffers for a key and value the caller reuses as soon as this returns (PutScratch):
   * classic-level's native `_put` copies both into LevelDB's batch before returning; any other
   * path may keep references, so it gets copies.
   */
  putCopied(key: Buffer, value: Buffer): void {
    const chained = this.chained as unknown as { _put?: (key: Buffer, value: Buffer) => void } | undefined;
    if (chained?._put !== undefined) chained._put(key, value);
    else this.put(Buffer.from(key), Buffer.from(value));
  }

  del(key: Buffer): void {
    if (this.chained !== undefined) {
      this.chained.del(key);
      return;
    }
    this.ops.push({ type: 'del', key });
    this.bytes += key.length;
  }

  /** Drops what was added, for a write that will not happen. */
  discard(): Promise<void> {
    return this.chained?.close() ?? Promise.resolve();
  }

  write(db: ClassicLevel<Buffer, Buffer>, sync: boolean): Promise<void> {
    if (this.chained !== undefined) return this.chained.write({ sync });
    if (this.bytes >= CHAINED_BATCH_MAX_BYTES) return db.batch(this.ops, { sync });
    const batch = db.batch();
    for (const op of this.ops) {
      if (op.type === 'put') batch.put(op.key, op.value);
      else batch.del(op.key);
    }
    return batch.write({ sync });
  }
}

/** Writes of this many key and value bytes or more skip the chained batch (see WriteOps). */
const CHAINED_BATCH_MAX_BYTES = 1024 * 1024;

/** Bytes an entry of a scan batch counts beyond its key and value (etag, times, framing). */
export const SCAN_ENTRY_OVERHEAD_BYTES = 32;

/** Default byte bound of one scan batch. */
export const DEFAULT_SCAN_BATCH_MAX_BYTES = 4 * 1024 * 1024;

/** The OS error of a LevelDB failure ("IO error: …: No space left on device"), for messages. */
function osError(err: Error): string {
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error && cause.message !== err.message ? `${err.message}: ${cause.message}` : err.message;
}

/** Free bytes for unprivileged writers on the disk of `path`; undefined when it cannot be asked. */
async function freeBytes(path: string): Promise<number | undefined> {
  try {
    const s = await statfs(path);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/** Bytes of LevelDB's write-ahead logs in `dir`. */
async function logBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) {
    if (name.endsWith('.log')) total += (await stat(join(dir, name))).size;
  }
  return total;
}

function encodeProbe(ms: number): Buffer {
  const out = Buffer.allocUnsafe(8);
  writeU64(out, 0, ms);
  return out;
}

/**
 * Scratch bytes for one bulk put at a time, shared by every partition of the process: runBulk
 * writes a row's data key and record here and hands them to classic-level's `_put`, which copies
 * both into LevelDB's batch before it returns (and nothing awaits in between), so the next row
 * reuses the same bytes. The views are cached per length: a fresh view per key and per record
 * (two Buffer objects per row, and the garbage) cost about a tenth of the node's CPU per bulk row.
 * Keys and records longer than the slabs get a buffer of their own.
 */
class PutScratch {
  private readonly keySlab = Buffer.allocUnsafe(SCRATCH_KEY_BYTES);
  private readonly valueSlab = Buffer.allocUnsafe(SCRATCH_VALUE_BYTES);
  private readonly keyViews: Buffer[] = [];
  private readonly valueViews: Buffer[] = [];

  key(length: number): Buffer {
    if (length > SCRATCH_KEY_BYTES) return Buffer.allocUnsafe(length);
    return (this.keyViews[length] ??= this.keySlab.subarray(0, length));
  }

  value(length: number): Buffer {
    if (length > SCRATCH_VALUE_BYTES) return Buffer.allocUnsafe(length);
    return (this.valueViews[length] ??= this.valueSlab.subarray(0, length));
  }
}

/** Data keys and expiry index entries up to this many bytes, and records up to the next, use PutScratch's slabs. */
const SCRATCH_KEY_BYTES = 4096;
const SCRATCH_VALUE_BYTES = 16 * 1024;
const putScratch = new PutScratch();

/** A read of a snapshot released meanwhile (its lease ran out) fails with our code, not LevelDB's. */
function snapshotGone(err: unknown): never {
  if ((err as { code?: unknown }).code === 'LEVEL_SNAPSHOT_NOT_OPEN') {
    throw new StoreError('STORE_SNAPSHOT_NOT_FOUND', 'the snapshot was released while it was being read: its lease ran out (renew it while reading)', { cause: err });
  }
  throw err;
}

/** A key strictly between `a` and `b` (a < b), halfway by value; undefined when none is found. */
function midpoint(a: Buffer, b: Buffer): Buffer | undefined {
  // Compare as fixed-width numbers over the common prefix plus enough bytes to tell them apart.
  let prefix = 0;
  while (prefix < a.length && prefix < b.length && a[prefix] === b[prefix]) prefix++;
  const width = prefix + MIDPOINT_EXTRA_BYTES;
  const toBig = (x: Buffer): bigint => {
    let n = 0n;
    for (let i = prefix; i < width; i++) n = (n << 8n) | BigInt(x[i] ?? 0);
    return n;
  };
  const mid = (toBig(a) + toBig(b)) >> 1n;
  const out = Buffer.alloc(width);
  a.copy(out, 0, 0, prefix);
  let rest = mid;
  for (let i = width - 1; i >= prefix; i--) {
    out[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  // Trailing zero bytes sort before longer keys with the same stem; dropping them keeps the key minimal.
  let len = width;
  while (len > prefix + 1 && out[len - 1] === 0) len--;
  const key = out.subarray(0, len);
  return Buffer.compare(key, a) > 0 && Buffer.compare(key, b) < 0 ? key : undefined;
}

function dataKey(key: Buffer): Buffer {
  const out = Buffer.allocUnsafe(key.length + 1);
  out[0] = NS_DATA;
  key.copy(out, 1);
  return out;
}

function dataRange(start: Buffer, end: Buffer): { gte: Buffer; lt: Buffer } {
  return { gte: dataKey(start), lt: end.length === 0 ? DATA_END : dataKey(end) };
}

function expiryKey(expiresAtMs: number, key: Buffer): Buffer {
  const out = Buffer.allocUnsafe(9 + key.length);
  out[0] = NS_EXPIRY;
  writeU64(out, 1, expiresAtMs);
  key.copy(out, 9);
  return out;
}

/** What an entry adds to `logicalBytes`: its LevelDB key and encoded record. */
function recordBytes(key: Buffer, record: StoredRecord): number {
  return key.length + 1 + encodedRecordLength(record);
}

// 32 bytes, then (since chains) the chain sequence (8) and stream id (latin1, to the end); a
// 32-byte state from before reads as no chain position.
function encodeState(s: State): Buffer {
  const out = Buffer.allocUnsafe(40 + s.chainStream.length);
  writeU64(out, 0, s.seq);
  writeU64(out, 8, s.count);
  writeU64(out, 16, s.logicalBytes);
  writeU64(out, 24, s.lastWriteMs);
  writeU64(out, 32, s.chainSeq);
  out.write(s.chainStream, 40, 'latin1');
  return out;
}

function decodeState(raw: Buffer): State {
  const chained = raw.length >= 40;
  return {
    seq: readU64(raw, 0),
    count: readU64(raw, 8),
    logicalBytes: readU64(raw, 16),
    lastWriteMs: readU64(raw, 24),
    chainSeq: chained ? readU64(raw, 32) : 0,
    chainStream: chained ? raw.toString('latin1', 40) : '',
  };
}

/**
 * Moves the state's chain position to a write's tag: the head's next number of its stream (written
 * back into the tag), or the number a replica was given. A replica's re-applied older forward
 * leaves the position where it is; a new stream replaces it.
 */
function numberChainWrite(next: State, tag: ChainTag | undefined): ChainMove {
  if (tag === undefined) return 'none';
  if (tag.seq === 0) {
    tag.seq = next.chainStream === tag.stream ? next.chainSeq + 1 : 1;
  } else if (next.chainStream === tag.stream && tag.seq <= next.chainSeq) {
    return 'none';
  }
  const follows = next.chainStream === tag.stream && tag.seq === next.chainSeq + 1;
  next.chainStream = tag.stream;
  next.chainSeq = tag.seq;
  return follows ? 'next' : 'jump';
}

/** How a write moved the partition's chain position: not at all, to the next sequence number, or elsewhere (a new stream, a sync's snapshot position). */
type ChainMove = 'none' | 'next' | 'jump';
