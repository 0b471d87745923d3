import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../common/index.js';
import { MAX_KEPT_ETAG, MAX_LEASE_MS, MAX_MAP_VERSION_STEP, MAX_TIME_MS, MAX_TTL_MS, MAX_SPLIT_PARTS, MIN_LEASE_MS, MIN_SPLIT_PARTS, truncateForMessage } from './field-limits.js';
import { DEFAULT_MAX_KEY_BYTES, Key, displayBytes } from './key.js';
import { PackedRows } from './packed-rows.js';
import { PartitionMap, partitionContains, readNodeOf, type Partition } from './partition-map.js';
import { DEFAULT_SCAN_BATCH_MAX_BYTES, PartitionStore, type ChainTag, type PointWrite, type BulkRowInput, type PartitionHealth, type ChainPosition, type PartitionSnapshot, type PartitionStoreStats, type PutOptions, type StoredEntry, type WriteTiming } from './partition-store.js';
import type { StoredRecord } from './record.js';
import type { RangeDigest } from './range-digest.js';
import { StoreError } from './store-errors.js';
import { checkPointers, patchDocument, projectDocument, type PatchMode } from './json-document.js';
import { ForwardRetryLog } from './forward-retry-log.js';
import { changedKeyBatches, type ChangedKeysRequestOptions } from './changed-keys.js';
import type { ChangedKeysBatch } from './proto/gen/shardpipe/store/v1/store.js';
import { PartitionGc, partitionFolder, type GcFigures, type GcPendingPartition } from './partition-gc.js';
import { WritePause, type WritePauseRecord } from './write-pause.js';
import { SplitParticipant } from './split-participant.js';
import type { ChangeLogRetention } from './change-log.js';
import type { SyncMode } from './replica-sync.js';
import { ChainReplica, type CopyGuard, type HeadRestartCheck, type ForwardAck, type ForwardMessage, type ForwardOp, type ForwardTransport, type HopTiming } from './chain-replica.js';

/** Options of a store node. Sizes in bytes, times in milliseconds. */
export interface StoreNodeOptions {
  /** This node's address as it appears in the partition map (HOST:PORT). Required. */
  node: string;
  /** Folder for the persisted map and one LevelDB folder per partition. Required. */
  dataDir: string;
  /** A map to start from; the newer of it and the persisted one is used. */
  initialMap?: PartitionMap;
  /** Longest key accepted. Default 4096. */
  maxKeyBytes?: number;
  /** Largest value accepted. Default 4 MiB. */
  maxValueBytes?: number;
  /** Largest BulkInsert batch (sum of key and value bytes). Default 16 MiB. */
  maxBatchBytes?: number;
  /** fsync each write batch before acknowledging. Default true; false trades durability for speed. */
  syncWrites?: boolean;
  /** Expiry sweeper interval. Default 5000; 0 disables it. */
  sweepIntervalMs?: number;
  /** LevelDB memtable per partition, bytes (see PartitionStoreOptions.writeBufferBytes). Default 8 MiB. */
  writeBufferBytes?: number;
  /** Largest scan batch (one Scan message or ScanPage), key + value + 32 bytes per entry; one larger entry comes alone. Default 4 MiB. */
  scanBatchMaxBytes?: number;
  /** Pause bounds of a partition's recovery after a failed write (see PartitionStoreOptions). Defaults 200 and 5000. */
  faultRetryBaseMs?: number;
  faultRetryMaxMs?: number;
  /** Called whenever a partition starts or stops taking writes, or the set of partitions changes. */
  onHealthChange?: () => void;
  /** The map comes from etcd (`store start --etcd`): SetPartitionMap is refused. Default false. */
  mapFromEtcd?: boolean;
  /** How this node forwards writes to its successor in a chain (store/chain-forwarder.ts over gRPC). Needed for chains of more than one replica. */
  transport?: ForwardTransport;
  /** A forward not acknowledged within this is sent again to the current successor. Default 2000. */
  forwardTimeoutMs?: number;
  /** Called when a forward is sent again (timed out or failed), to be reported. */
  onForwardRetry?: (info: { partitionId: number; seq: number; successor: string; error: unknown }) => void;
  /** How long the folder of a partition that left this node stays on disk before GC deletes it (store/partition-gc.ts). Default 600000 (10 min). */
  gcGraceMs?: number;
  /** Called when the list of partitions awaiting GC changed (the etcd agent reports it). */
  onGcChange?: () => void;
  /** How much of each partition's change log (for fast sync) is kept. Default 1,000,000 keys or 1 h (store/change-log.ts). */
  changeLogRetention?: ChangeLogRetention;
  logger?: Logger;
}

/** Whether one partition of this node takes writes (see PartitionStore.health). */
export interface PartitionHealthInfo extends PartitionHealth {
  partitionId: number;
  /** This node answers clients for it: it is the chain's head (writes) or its tail (reads), and the node is not fenced. */
  servesClients: boolean;
}

/** A bounded range request, after the node has clamped it to one of its partitions. */
export interface ClampedRange {
  partition: Partition;
  start: Buffer;
  end: Buffer;
  /** Where the caller continues when its range extends past this partition; empty = done. */
  next: Buffer;
}

export interface BulkInsertResult {
  accepted: number;
  nextKey: Buffer | undefined;
  timing: WriteTiming & ChainTiming;
}

/** Per-hop timing of a replicated write: the head's own write is WriteTiming; these follow it. */
export interface ChainTiming {
  /** From the head's write being durable to the tail's ack arriving back, ms (0 for a chain of one). */
  forwardMs?: number;
  /** Each replica below the head, nearest first: its write and its wait for the rest of the chain. */
  hops?: HopTiming[];
}

/** One point operation of a Multi, with the caller's map version. */
export type PointOp =
  | { kind: 'get'; mapVersion: number; key: Buffer; fields?: readonly string[] }
  | { kind: 'put'; mapVersion: number; key: Buffer; value: Buffer; options: PutOptions }
  | { kind: 'delete'; mapVersion: number; key: Buffer; expectedEtag?: number };

/** The outcome of one point operation: what get/put/delete would resolve, or why it failed. */
export type PointOutcome =
  | { ok: true; kind: 'get'; record: StoredRecord | undefined }
  | { ok: true; kind: 'put'; record: StoredRecord; timing: PointWriteTiming }
  | { ok: true; kind: 'delete'; deleted: boolean; timing: PointWriteTiming }
  | { ok: false; error: unknown };

/**
 * A point write's timing at its head (the ServerTiming of Put, Delete, Patch and a Multi's writes):
 * `writeMs` from the write being queued to durable (its queue, batch and fsync together: a point
 * write shares its group's); `forwardMs` and `hops` as a bulk write's (0 and none for a chain of one).
 */
export interface PointWriteTiming {
  writeMs: number;
  forwardMs: number;
  hops: HopTiming[];
}

/** A snapshot the node holds for a caller until its lease runs out. */
export interface SnapshotLeaseInfo {
  snapshotId: string;
  partitionId: number;
  count: number;
  takenAtMs: number;
  expiresAtMs: number;
  /** The last chain write the snapshot holds. */
  chain: ChainPosition;
}

interface HeldSnapshot {
  partitionId: number;
  snapshot: PartitionSnapshot;
  expiresAtMs: number;
  timer: NodeJS.Timeout;
}

const MAP_FILE = 'partition-map.json';

/**
 * The store node's logic, without gRPC: owns one PartitionStore per partition the map assigns to
 * it, checks every request against the map version and ownership, and persists the newest map.
 */
export class StoreNode {
  readonly address: string;
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  readonly maxBatchBytes: number;
  readonly scanBatchMaxBytes: number;
  private readonly dataDir: string;
  private readonly faultRetryBaseMs: number | undefined;
  private readonly faultRetryMaxMs: number | undefined;
  private readonly onHealthChange: (() => void) | undefined;
  private readonly syncWrites: boolean;
  private readonly sweepIntervalMs: number;
  private readonly writeBufferBytes: number | undefined;
  private readonly logger: Logger | undefined;
  private currentMap: PartitionMap;
  private readonly stores = new Map<number, PartitionStore>();
  private readonly replicas = new Map<number, ChainReplica>();
  /** Failed forwards of every replica here, logged throttled per successor. */
  private readonly forwardRetryLog: ForwardRetryLog;
  private readonly transport: ForwardTransport | undefined;
  private readonly forwardTimeoutMs: number | undefined;
  private readonly onForwardRetry: StoreNodeOptions['onForwardRetry'];
  private readonly snapshots = new Map<string, HeldSnapshot>();
  private readonly syncs = new Map<number, { rows: number; bytes: number; totalRows: number }>();
  private readonly changeLogRetention: ChangeLogRetention | undefined;
  /** Keys and bytes this node's syncs copied since it started, by mode (for metrics); the sync agent adds to it. */
  readonly syncCopied: Record<SyncMode, { keys: number; bytes: number }> = { fast: { keys: 0, bytes: 0 }, full: { keys: 0, bytes: 0 } };
  private mapChange: Promise<unknown> = Promise.resolve();
  /** Held writes of partitions this node heads (a split's or merge's cut). */
  readonly writePause = new WritePause();
  private readonly splits: SplitParticipant;
  /** Background deletes of rows outside a partition's range (a split's leftovers), by partition. */
  private readonly cleanups = new Map<number, Promise<void>>();
  private readonly cleanupStop = new AbortController();
  private draining = false;
  private fencedReason: string | undefined;
  private closed: Promise<void> | undefined;
  private gc!: PartitionGc;
  /** True when the map comes from etcd (SetPartitionMap is refused). */
  readonly mapFromEtcd: boolean;

  private constructor(options: StoreNodeOptions, map: PartitionMap) {
    this.address = options.node;
    this.dataDir = options.dataDir;
    this.maxKeyBytes = positive('maxKeyBytes', options.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES);
    this.maxValueBytes = positive('maxValueBytes', options.maxValueBytes ?? 4 * 1024 * 1024);
    this.maxBatchBytes = positive('maxBatchBytes', options.maxBatchBytes ?? 16 * 1024 * 1024);
    this.scanBatchMaxBytes = positive('scanBatchMaxBytes', options.scanBatchMaxBytes ?? DEFAULT_SCAN_BATCH_MAX_BYTES);
    this.faultRetryBaseMs = options.faultRetryBaseMs;
    this.faultRetryMaxMs = options.faultRetryMaxMs;
    this.onHealthChange = options.onHealthChange;
    this.syncWrites = options.syncWrites ?? true;
    this.sweepIntervalMs = options.sweepIntervalMs ?? 5000;
    this.writeBufferBytes = options.writeBufferBytes;
    this.logger = options.logger;
    this.mapFromEtcd = options.mapFromEtcd ?? false;
    this.forwardRetryLog = new ForwardRetryLog(this.logger);
    this.transport = options.transport;
    this.forwardTimeoutMs = options.forwardTimeoutMs;
    this.onForwardRetry = options.onForwardRetry;
    this.changeLogRetention = options.changeLogRetention;
    this.currentMap = map;
    this.splits = new SplitParticipant({ dataDir: this.dataDir, open: (id) => this.openStore(id), logger: this.logger });
  }

  /** Loads the persisted map (or the initial one, whichever is newer) and opens this node's partitions. */
  static async open(options: StoreNodeOptions): Promise<StoreNode> {
    await mkdir(options.dataDir, { recursive: true });
    const persisted = await readMapFile(join(options.dataDir, MAP_FILE));
    const initial = options.initialMap;
    let map = persisted ?? initial;
    if (map === undefined) {
      throw new StoreError('STORE_INVALID_MAP', `no partition map: ${options.dataDir} has none persisted, so pass one (--map FILE)`);
    }
    if (persisted && initial && initial.version > persisted.version) map = initial;
    if (persisted && initial && initial.version < persisted.version) {
      options.logger?.warn({ given: initial.version, persisted: persisted.version }, 'ignoring the given partition map: the persisted one is newer');
    }
    const node = new StoreNode(options, map);
    node.gc = await PartitionGc.open({
      dataDir: options.dataDir,
      graceMs: options.gcGraceMs,
      isAssigned: (id) => node.currentMap.replicasOf(node.address).some((p) => p.id === id),
      runExclusive: (fn) => node.betweenMapChanges(fn),
      onChange: options.onGcChange,
      logger: options.logger,
    });
    // Only a map installed over the persisted one moves partitions away (README "Object GC").
    if (persisted !== undefined && map !== persisted) await node.gc.left(leftBetween(persisted, map, node.address));
    if (map !== persisted) await node.persistMap(map);
    await node.openOwnedPartitions(map);
    await node.gc.reconcile();
    await node.gc.logUnexplainedFolders();
    node.gc.start();
    node.cleanOutsideRanges();
    if (map.partitionsOf(node.address).length === 0) {
      options.logger?.warn({ node: node.address, mapVersion: map.version }, 'this node owns no partition in the map');
    }
    return node;
  }

  get map(): PartitionMap {
    return this.currentMap;
  }

  /** Partitions this node serves reads of (it is their chain's last serving replica), in key order. */
  ownedPartitions(): Partition[] {
    return this.currentMap.replicasOf(this.address).filter((p) => this.replicas.get(p.id)?.isReadReplica ?? p.node === this.address);
  }

  /** The live record of `key`; with `fields` (JSON Pointers) its value is the JSON document reduced to them. */
  async get(mapVersion: number, key: Buffer, fields: readonly string[] = []): Promise<StoredRecord | undefined> {
    return this.getNow(mapVersion, key, fields);
  }

  /** `get` without a promise: the read is on the event loop (PartitionStore.getNow), so the Get RPC is answered in the turn it arrived in. */
  getNow(mapVersion: number, key: Buffer, fields: readonly string[] = []): StoredRecord | undefined {
    this.checkKey(key);
    checkPointers(fields);
    const { partition, store } = this.route(mapVersion, key, 'read');
    let record: StoredRecord | undefined;
    try {
      record = store.getNow(key);
    } catch (err) {
      this.readCutShort(partition.id, store, err);
    }
    return project(key, record, fields);
  }

  /**
   * Patches the JSON document of `key` on this head, inside its partition's write queue (ordered
   * with every other write of the key), and forwards the resulting record down the chain like a
   * put's. A JSON Patch, or any patch with `ifEtag`, whose ack cannot come is STORE_AMBIGUOUS: sent
   * again, it could apply twice. A merge patch is idempotent, like an upsert.
   */
  async patch(mapVersion: number, key: Buffer, patch: Buffer, options: { mode: PatchMode; ifEtag?: number; ttlMs?: number }, timing?: PointWriteTiming): Promise<StoredRecord> {
    this.checkKey(key);
    this.checkValue(patch, key);
    checkTtl(options.ttlMs);
    const admitted = this.admit(mapVersion, key);
    const { partition, store } = this.route(typeof admitted === 'number' ? admitted : await admitted, key, 'write');
    const change = (current: StoredRecord): Buffer => {
      const value = patchDocument(key, current.value, patch, options.mode);
      if (value.length > this.maxValueBytes) {
        throw new StoreError('STORE_VALUE_TOO_LARGE', `the patched document of key "${displayBytes(key.subarray(0, 64))}" would be ${value.length} bytes, over the limit of ${this.maxValueBytes} bytes; nothing was written`, {
          context: { bytes: value.length, limit: this.maxValueBytes },
        });
      }
      return value;
    };
    const update = { expectedEtag: options.ifEtag, ttlMs: options.ttlMs };
    const replica = this.chainOf(partition);
    const started = performance.now();
    if (replica === undefined) return timing === undefined ? store.update(key, change, update, this.loneTag(partition)) : store.update(key, change, update, this.loneTag(partition)).then((record) => (timedLocally(timing, started), record));
    replica.checkRoom();
    const tag = replica.headTag();
    let durable = 0;
    const { record, acked } = await store.update(key, change, update, tag).then((record) => ((durable = performance.now()), { record, acked: replica.replicate({ kind: 'points', nowMs: record.updatedAtMs, writes: [{ key, record }] }, tag) }));
    const hops = await this.chainAck(acked, options.mode === 'json-patch' || options.ifEtag !== undefined, partition);
    if (timing !== undefined) timedInChain(timing, started, durable, hops);
    return record;
  }

  /** Writes a value at the head; `timing`, when given, is filled in with the write's PointWriteTiming. */
  async put(mapVersion: number, key: Buffer, value: Buffer, options: PutOptions, timing?: PointWriteTiming): Promise<StoredRecord> {
    this.checkKey(key);
    this.checkValue(value, key);
    checkTtl(options.ttlMs);
    const admitted = this.admit(mapVersion, key);
    const { partition, store } = this.route(typeof admitted === 'number' ? admitted : await admitted, key, 'write');
    const replica = this.chainOf(partition);
    const started = performance.now();
    if (replica === undefined) return timing === undefined ? store.put(key, value, options, this.loneTag(partition)) : store.put(key, value, options, this.loneTag(partition)).then((record) => (timedLocally(timing, started), record));
    replica.checkRoom();
    const tag = replica.headTag();
    let durable = 0;
    const replicated = store.put(key, value, options, tag).then((record) => ((durable = performance.now()), { record, acked: replica.replicate({ kind: 'points', nowMs: record.updatedAtMs, writes: [{ key, record }] }, tag) }));
    const { record, acked } = await replicated;
    const hops = await this.chainAck(acked, options.expectedEtag !== undefined, partition);
    if (timing !== undefined) timedInChain(timing, started, durable, hops);
    return record;
  }

  /** Deletes a key at the head; `timing` as put's. */
  async delete(mapVersion: number, key: Buffer, expectedEtag?: number, timing?: PointWriteTiming): Promise<boolean> {
    this.checkKey(key);
    const admitted = this.admit(mapVersion, key);
    const { partition, store } = this.route(typeof admitted === 'number' ? admitted : await admitted, key, 'write');
    const replica = this.chainOf(partition);
    const started = performance.now();
    if (replica === undefined) return timing === undefined ? store.delete(key, expectedEtag, this.loneTag(partition)) : store.delete(key, expectedEtag, this.loneTag(partition)).then((deleted) => (timedLocally(timing, started), deleted));
    replica.checkRoom();
    const tag = replica.headTag();
    let durable = 0;
    const { deleted, acked } = await store.delete(key, expectedEtag, tag).then((deleted) => ((durable = performance.now()), { deleted, acked: replica.replicate({ kind: 'points', nowMs: Date.now(), writes: [{ key, deleted: true }] }, tag) }));
    const hops = await this.chainAck(acked, expectedEtag !== undefined, partition);
    if (timing !== undefined) timedInChain(timing, started, durable, hops);
    return deleted;
  }

  /**
   * Runs many point operations, each with the outcome its own get/put/delete would have (its own
   * checks, routing, CAS and errors). Gets read each partition with one multi-get; the puts and
   * deletes of each partition are queued together, so they share one batch and one fsync.
   */
  async multi(given: readonly PointOp[]): Promise<PointOutcome[]> {
    const ops = this.writePause.active ? await this.admitMulti(given) : given;
    const outcomes: Array<PointOutcome | Promise<PointOutcome>> = new Array(ops.length);
    const gets = new Map<PartitionStore, number[]>();
    const writes = new Map<PartitionStore, number[]>();
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      try {
        this.checkKey(op.key);
        if (op.kind === 'get' && op.fields !== undefined) checkPointers(op.fields);
        if (op.kind === 'put') {
          this.checkValue(op.value, op.key);
          checkTtl(op.options.ttlMs);
        }
        const { partition, store } = this.route(op.mapVersion, op.key, op.kind === 'get' ? 'read' : 'write');
        if (op.kind !== 'get') this.chainOf(partition)?.checkRoom();
        const byStore = op.kind === 'get' ? gets : writes;
        const slots = byStore.get(store);
        if (slots === undefined) byStore.set(store, [i]);
        else slots.push(i);
      } catch (error) {
        outcomes[i] = { ok: false, error };
      }
    }
    for (const [store, slots] of gets) readSlots(store, slots, ops, outcomes);
    for (const [store, slots] of writes) {
      const partition = this.currentMap.lookup(ops[slots[0]!]!.key);
      const replica = this.chainOf(partition);
      const tags = slots.map(() => replica?.headTag() ?? this.loneTag(partition));
      const started = performance.now();
      const settled = store.writeMany(slots.map((i, j) => ({ ...(ops[i] as PointWrite & PointOp), chain: tags[j] })));
      slots.forEach((slot, j) => {
        const op = ops[slot]!;
        // Filled in as it becomes durable, and (in a chain) once the tail acked it.
        const timing: PointWriteTiming = { writeMs: 0, forwardMs: 0, hops: [] };
        const outcome = settled[j]!.then((r): PointOutcome => {
          timing.writeMs = performance.now() - started;
          return op.kind === 'put' ? { ok: true, kind: 'put', record: r as StoredRecord, timing } : { ok: true, kind: 'delete', deleted: r as boolean, timing };
        });
        if (replica === undefined) {
          outcomes[slot] = outcome.catch((error: unknown): PointOutcome => ({ ok: false, error }));
          return;
        }
        // Numbered as the store settles them (its write order), then each waits for the chain's ack.
        const cas = op.kind === 'put' ? op.options.expectedEtag !== undefined : op.kind === 'delete' && op.expectedEtag !== undefined;
        outcomes[slot] = outcome
          .then((o) => {
            const applied: ForwardOp =
              o.ok && o.kind === 'put' ? { kind: 'points', nowMs: o.record.updatedAtMs, writes: [{ key: op.key, record: o.record }] } : { kind: 'points', nowMs: Date.now(), writes: [{ key: op.key, deleted: true }] };
            return { o, acked: replica.replicate(applied, tags[j]!) };
          })
          .then(async ({ o, acked }) => {
            const durable = performance.now();
            timing.hops = await this.chainAck(acked, cas, partition);
            timing.forwardMs = performance.now() - durable;
            return o;
          })
          .catch((error: unknown): PointOutcome => ({ ok: false, error }));
      });
    }
    return Promise.all(outcomes);
  }

  /**
   * `multi` of gets only, answered without a promise (every read is on the event loop, as in
   * `getNow`): the Multi RPC of a reader is answered in the turn it arrived in. Undefined when an
   * op is not a get (use `multi`).
   */
  multiGetsNow(ops: readonly PointOp[]): PointOutcome[] | undefined {
    for (const op of ops) if (op.kind !== 'get') return undefined;
    const outcomes: PointOutcome[] = new Array(ops.length);
    const gets = new Map<PartitionStore, number[]>();
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i] as Extract<PointOp, { kind: 'get' }>;
      try {
        this.checkKey(op.key);
        if (op.fields !== undefined) checkPointers(op.fields);
        const { store } = this.route(op.mapVersion, op.key, 'read');
        const slots = gets.get(store);
        if (slots === undefined) gets.set(store, [i]);
        else slots.push(i);
      } catch (error) {
        outcomes[i] = { ok: false, error };
      }
    }
    for (const [store, slots] of gets) readSlots(store, slots, ops, outcomes);
    return outcomes;
  }

  /**
   * Writes the longest prefix of `rows` that falls in the first row's partition, atomically.
   * Rejects the whole batch when it is too large or any row is invalid (naming the row).
   */
  async bulkInsert(mapVersion: number, rows: readonly BulkRowInput[] | PackedRows): Promise<BulkInsertResult> {
    if (rows instanceof PackedRows) return this.bulkInsertPacked(mapVersion, rows);
    if (rows.length === 0) return { accepted: 0, nextKey: undefined, timing: { queueMs: 0, writeMs: 0, fsyncMs: 0 } };
    let bytes = 0;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      const problem = Key.problem(row.key, this.maxKeyBytes);
      if (problem !== undefined) {
        throw new StoreError('STORE_INVALID_KEY', `row ${i}: ${problem}`, { context: { row: i } });
      }
      this.checkValue(row.value, row.key, i);
      checkRowMetadata(row, i);
      bytes += row.key.length + row.value.length;
    }
    if (bytes > this.maxBatchBytes) {
      throw new StoreError('STORE_BATCH_TOO_LARGE', `batch of ${rows.length} rows is ${bytes} bytes, over the limit of ${this.maxBatchBytes} bytes: send smaller batches`, {
        context: { bytes, limit: this.maxBatchBytes },
      });
    }
    const admitted = this.admit(mapVersion, rows[0]!.key);
    const { partition, store } = this.route(typeof admitted === 'number' ? admitted : await admitted, rows[0]!.key, 'write');
    let accepted = 1;
    while (accepted < rows.length && partitionContains(partition, rows[accepted]!.key)) accepted++;
    const timing = await this.replicatedBulk(partition, store, PackedRows.fromRows(accepted === rows.length ? rows : rows.slice(0, accepted)));
    return { accepted, nextKey: accepted < rows.length ? rows[accepted]!.key : undefined, timing };
  }

  /** bulkInsert of a packed batch: the same checks and answers, reading lengths and metadata in place. */
  private async bulkInsertPacked(mapVersion: number, rows: PackedRows): Promise<BulkInsertResult> {
    const count = rows.count;
    if (count === 0) return { accepted: 0, nextKey: undefined, timing: { queueMs: 0, writeMs: 0, fsyncMs: 0 } };
    // A batch the gRPC request check passed under these limits (the same ranges) is not looped over again.
    const checked = rows.checkedWithin(this.maxKeyBytes, this.maxValueBytes);
    for (let i = 0; !checked && i < count; i++) {
      const keyLength = rows.keyLength(i);
      if (keyLength === 0 || keyLength > this.maxKeyBytes) {
        throw new StoreError('STORE_INVALID_KEY', `row ${i}: ${Key.problem(rows.key(i), this.maxKeyBytes)}`, { context: { row: i } });
      }
      if (rows.valueLength(i) > this.maxValueBytes) this.checkValue(rows.value(i), rows.key(i), i);
    }
    if (rows.hasMeta && !checked) {
      for (let i = 0; i < count; i++) {
        if (rows.metaField(i, 0) > MAX_KEPT_ETAG || rows.metaField(i, 1) > MAX_TIME_MS || rows.metaField(i, 2) > MAX_TIME_MS) checkRowMetadata(rows.meta(i)!, i);
      }
    }
    if (rows.bytes > this.maxBatchBytes) {
      throw new StoreError('STORE_BATCH_TOO_LARGE', `batch of ${count} rows is ${rows.bytes} bytes, over the limit of ${this.maxBatchBytes} bytes: send smaller batches`, {
        context: { bytes: rows.bytes, limit: this.maxBatchBytes },
      });
    }
    const admitted = this.admit(mapVersion, rows.key(0));
    const { partition, store } = this.route(typeof admitted === 'number' ? admitted : await admitted, rows.key(0), 'write');
    let accepted = 1;
    const { start, end } = partition;
    if (rows.isStrictlySorted()) {
      // Every key after the first (which is inside) is larger: only the partition's end can cut.
      accepted = end.length === 0 ? count : rows.firstKeyAtLeast(end, 1);
    } else {
      while (accepted < count && rows.compareKeyTo(accepted, start) >= 0 && (end.length === 0 || rows.compareKeyTo(accepted, end) < 0)) accepted++;
    }
    const timing = await this.replicatedBulk(partition, store, accepted === count ? rows : rows.slice(0, accepted));
    return { accepted, nextKey: accepted < count ? rows.key(accepted) : undefined, timing };
  }

  /** Writes an accepted prefix at the head and, in a chain, forwards it as it arrived with the head's assignments. */
  private async replicatedBulk(partition: Partition, store: PartitionStore, rows: PackedRows): Promise<WriteTiming & ChainTiming> {
    const replica = this.chainOf(partition);
    if (replica === undefined) return store.bulkInsert(rows, undefined, this.loneTag(partition));
    replica.checkRoom();
    const tag = replica.headTag();
    const { timing, acked } = await store.bulkInsert(rows, undefined, tag).then((timing) => ({ timing, acked: replica.replicate({ kind: 'bulk', rows, assigned: timing.assigned }, tag) }));
    const forwarded = performance.now();
    const hops = await this.chainAck(acked, false, partition);
    return { queueMs: timing.queueMs, writeMs: timing.writeMs, fsyncMs: timing.fsyncMs, forwardMs: performance.now() - forwarded, hops };
  }

  /**
   * A forward from this node's predecessor in a chain (the Forward RPC): checked against the
   * partition's epoch, applied in sequence order, durably, passed on; resolves with the ack.
   */
  async receiveForward(message: ForwardMessage): Promise<ForwardAck> {
    return (await this.receiveForwards([message]))[0]!;
  }

  /**
   * Consecutive forwards of one partition from the predecessor, received in one call (group commit
   * per hop: their writes share one batch and fsync here and go on together); one ack each, in order.
   */
  async receiveForwards(messages: readonly ForwardMessage[]): Promise<ForwardAck[]> {
    const message = messages[0]!;
    this.checkOpen();
    if (this.fencedReason !== undefined) {
      throw new StoreError('STORE_FENCED', `node ${this.address} is fenced (${this.fencedReason}): it takes forwards again once it has the current partition map from etcd`, { mapVersion: this.currentMap.version });
    }
    const replica = this.replicas.get(message.partitionId);
    if (replica === undefined) {
      throw new StoreError('STORE_STALE_EPOCH', `forward of partition ${message.partitionId} (epoch ${message.epoch}), which ${this.address} holds no replica of at map version ${this.currentMap.version}`, {
        mapVersion: this.currentMap.version,
      });
    }
    return replica.receiveMany(messages);
  }

  /** Where each replica of this node stands in its chain's write stream, by partition id. */
  chainProgress(): Array<{ partitionId: number; epoch: number; lastSeq: number; unacked: number; streamId: string; positioned: boolean; touchedKeys: number; forwardedBytes: number }> {
    return [...this.replicas.values()].map((r) => ({ partitionId: r.partitionId, epoch: r.epoch, ...r.progress, forwardedBytes: r.forwardedBytes }));
  }

  /** The whole-partition digest of this node's replica, whatever its place in the chain, etags included (for comparing replicas in-process). */
  async replicaDigest(partitionId: number): Promise<RangeDigest> {
    const store = this.stores.get(partitionId);
    if (store === undefined) throw new StoreError('STORE_NOT_OWNER', `partition ${partitionId} has no replica on ${this.address}`, { mapVersion: this.currentMap.version });
    return store.checksum(Buffer.alloc(0), Buffer.alloc(0), { includeEtag: true });
  }

  /** The chain replica of a partition with more than one replica (undefined: a chain of one, nothing to forward). */
  private chainOf(partition: Partition): ChainReplica | undefined {
    if (partition.chain.length < 2) return undefined;
    return this.replicas.get(partition.id);
  }

  /**
   * A write's place in the stream at the head of a chain of one in etcd mode whose map asks for
   * more replicas (the others are gone for now and come back by a sync): still numbered, so its
   * position and change log name it and a returning replica can fast-sync from it. Static maps and
   * maps of one replica per chain number nothing.
   */
  private loneTag(partition: Partition): ChainTag | undefined {
    if (!this.mapFromEtcd || partition.chain.length !== 1 || this.currentMap.replicas < 2) return undefined;
    return this.replicas.get(partition.id)?.headTag();
  }

  /**
   * Waits for the tail's ack of a write this head applied. A write whose ack cannot come (this node
   * left the chain, or is closing) may or may not survive on the new chain: a CAS says so
   * (STORE_AMBIGUOUS, not retryable: re-applying could apply it twice); anything else is an upsert,
   * which the caller may simply send again (STORE_UNAVAILABLE, retryable).
   */
  private async chainAck(acked: Promise<HopTiming[]>, cas: boolean, partition: Partition): Promise<HopTiming[]> {
    try {
      return await acked;
    } catch (error) {
      const message = `partition ${partition.id}: the write was applied on ${this.address} but the chain changed before its tail acknowledged it`;
      if (cas) {
        throw new StoreError('STORE_AMBIGUOUS', `${message}; it may or may not have taken effect: read the key (its etag) to find out before retrying`, { cause: error, context: { partition: partition.id } });
      }
      throw new StoreError('STORE_UNAVAILABLE', `${message}; send it again to the new head (it is an upsert)`, { cause: error, context: { partition: partition.id } });
    }
  }

  /**
   * Streams live entries of the part of `[start, end)` inside the partition owning `start`, from
   * the named snapshot of that partition when `snapshotId` is given.
   */
  async *scan(range: ClampedRange, options: { limit?: number; batchSize?: number; signal?: AbortSignal; snapshotId?: string }): AsyncGenerator<StoredEntry[]> {
    const store = this.storeOf(range.partition);
    try {
      yield* store.scan(range.start, range.end, {
        ...options,
        batchMaxBytes: this.scanBatchMaxBytes,
        snapshot: this.heldSnapshot(options.snapshotId, range.partition),
      });
    } catch (err) {
      this.readCutShort(range.partition.id, store, err);
    }
  }

  /** Whether each partition this node serves takes writes, in key order. */
  partitionHealth(): PartitionHealthInfo[] {
    return this.currentMap.replicasOf(this.address).flatMap((p) => {
      const store = this.stores.get(p.id);
      const servesClients = this.fencedReason === undefined && (p.node === this.address || readNodeOf(p) === this.address);
      return store === undefined ? [] : [{ partitionId: p.id, ...store.health, servesClients }];
    });
  }

  async checksum(range: ClampedRange, options: { includeEtag?: boolean; signal?: AbortSignal; snapshotId?: string }): Promise<RangeDigest> {
    return (await this.checksumPage(range, 0, options)).digest;
  }

  /**
   * The digest of up to about `maxEntries` entries of the range (0 = all) and where the caller goes
   * on: past the last entry digested when it stopped early, else the range's own `next`.
   */
  async checksumPage(range: ClampedRange, maxEntries: number, options: { includeEtag?: boolean; signal?: AbortSignal; snapshotId?: string }): Promise<{ digest: RangeDigest; next: Buffer }> {
    const store = this.storeOf(range.partition);
    const page = await store.checksumPage(range.start, range.end, maxEntries, { ...options, snapshot: this.heldSnapshot(options.snapshotId, range.partition) }).catch((err: unknown) => this.readCutShort(range.partition.id, store, err));
    return { digest: page.digest, next: page.next ?? range.next };
  }

  /**
   * A read that a newer map cut short by closing its partition here (moved, drained, merged away:
   * setMap drops the store before closing it) answers the retryable STORE_NOT_OWNER, so the client
   * reads again where the map now has the partition; any other failure is passed on.
   */
  private readCutShort(partitionId: number, store: PartitionStore, err: unknown): never {
    if (this.stores.get(partitionId) === store) throw err;
    throw new StoreError('STORE_NOT_OWNER', `partition ${partitionId} left ${this.address} while it was being read (map version ${this.currentMap.version}): read it again where the current map has it`, {
      mapVersion: this.currentMap.version,
      cause: err,
    });
  }

  /**
   * The digest of this node's own replica of the partition owning `start` (clamped to it), whatever
   * the replica's place or state in the chain: what `cluster check` compares across a chain.
   */
  async replicaChecksum(mapVersion: number, start: Buffer, end: Buffer, options: { includeEtag?: boolean; signal?: AbortSignal } = {}): Promise<{ digest: RangeDigest; partition: Partition; state: string; next: Buffer; chain: ChainPosition }> {
    this.checkVersion(mapVersion);
    const partition = this.currentMap.lookup(start);
    const replica = partition.chain.find((r) => r.node === this.address);
    const store = replica === undefined ? undefined : this.stores.get(partition.id);
    if (replica === undefined || store === undefined) {
      throw new StoreError('STORE_NOT_OWNER', `partition ${partition.id} has no replica on ${this.address}`, { mapVersion: this.currentMap.version, context: { partition: partition.id } });
    }
    const from = Buffer.compare(start, partition.start) < 0 ? partition.start : start;
    const endsInside = partition.end.length === 0 || (end.length > 0 && Buffer.compare(end, partition.end) <= 0);
    // One snapshot: the digest is exactly the data at the chain position it reports.
    const snapshot = await store.openSnapshot();
    try {
      const digest = await store.checksum(from, endsInside ? end : partition.end, { ...options, snapshot });
      return { digest, partition, state: replica.state, next: endsInside ? Buffer.alloc(0) : partition.end, chain: snapshot.chain };
    } finally {
      await snapshot.close();
    }
  }

  /** Records the progress of this node's sync of a partition (undefined: no sync running), for metrics. */
  reportSync(partitionId: number, progress: { rows: number; bytes: number; totalRows: number } | undefined): void {
    if (progress === undefined) this.syncs.delete(partitionId);
    else this.syncs.set(partitionId, progress);
  }

  /** This node's replicas under its map: state, and the progress of a syncing one's copy. */
  replicaStates(): Array<{ partitionId: number; epoch: number; state: string; sync: { rows: number; bytes: number; totalRows: number } | undefined; lagSequences: number; forwardRetries: number; lastForwardRetry?: { successor: string; error: string; atMs: number } }> {
    return this.currentMap.replicasOf(this.address).map((p) => {
      const state = p.chain.find((r) => r.node === this.address)!.state;
      const replica = this.replicas.get(p.id);
      return {
        partitionId: p.id,
        epoch: p.epoch,
        state,
        sync: state === 'syncing' ? (this.syncs.get(p.id) ?? { rows: 0, bytes: 0, totalRows: 0 }) : undefined,
        lagSequences: p.chain.length < 2 ? 0 : (replica?.lagSequences ?? 0),
        forwardRetries: replica?.forwardRetries ?? 0,
        ...(replica?.lastForwardRetry === undefined ? {} : { lastForwardRetry: replica.lastForwardRetry }),
      };
    });
  }

  /** Partitions this node heads that restarted on their own data and still wait for, or failed, the comparison with their successor. */
  headRestartChecks(): Array<{ partition: Partition; check: HeadRestartCheck }> {
    return this.currentMap.replicasOf(this.address).flatMap((partition) => {
      const check = this.replicas.get(partition.id)?.restartCheck;
      return check === undefined ? [] : [{ partition, check }];
    });
  }

  /** A restarted head's comparison with its successor's persisted position (ChainReplica.confirmHead). */
  confirmHead(partitionId: number, successor: string, position: ChainPosition): boolean {
    return this.replicas.get(partitionId)?.confirmHead(successor, position) ?? true;
  }

  /** A syncing replica's place in the write stream, from the snapshot its sync copies (ChainReplica.startAt). */
  /** Holds a replica's forwards while its sync opens a snapshot (ChainReplica.holdForSnapshot); the result lets them go if that fails. */
  holdReplicaForSnapshot(partitionId: number): () => void {
    return this.replicas.get(partitionId)?.holdForSnapshot() ?? (() => undefined);
  }

  positionReplica(partitionId: number, position: ChainPosition): CopyGuard | undefined {
    const replica = this.replicas.get(partitionId);
    replica?.startAt(position);
    return replica?.copyGuard;
  }

  /**
   * The messages of a ChangedKeys call on a snapshot this node holds (see changedKeyBatches); one
   * whose partition a newer map closed here mid-read ends with the retryable STORE_NOT_OWNER.
   */
  async *changedKeys(snapshotId: string, request: Omit<ChangedKeysRequestOptions, 'maxBytes'>, signal?: AbortSignal): AsyncGenerator<ChangedKeysBatch> {
    const { store, snapshot, partitionId } = this.snapshotSource(snapshotId);
    try {
      yield* changedKeyBatches(store, snapshot, { ...request, maxBytes: this.scanBatchMaxBytes }, signal);
    } catch (err) {
      this.readCutShort(partitionId, store, err);
    }
  }

  /** A snapshot this node holds and its partition's store: what ChangedKeys reads (the log and rows as the snapshot sees them). */
  private snapshotSource(snapshotId: string): { store: PartitionStore; snapshot: PartitionSnapshot; partitionId: number } {
    const held = this.snapshots.get(snapshotId);
    const store = held === undefined ? undefined : this.stores.get(held.partitionId);
    if (held === undefined || store === undefined) {
      throw new StoreError('STORE_SNAPSHOT_NOT_FOUND', `snapshot ${truncateForMessage(snapshotId)} is not held by ${this.address}: its lease ran out, it was released, or the node restarted`);
    }
    return { store, snapshot: held.snapshot, partitionId: held.partitionId };
  }

  /** The local store of a partition this node holds a replica of (any state), for a replica sync. */
  replicaStore(partitionId: number): PartitionStore | undefined {
    return this.stores.get(partitionId);
  }

  /**
   * Prepares splitting `partitionId` at `at` into a new partition `newPartition` on the same chain
   * (SplitParticipant.prepare): copies its rows of [at, end) into the new partition's own LevelDB
   * and tracks later writes there. Refused unless this node holds a serving replica of the partition
   * at `epoch`, `at` lies strictly inside its range and the map has no partition `newPartition`.
   */
  async prepareSplit(request: { operation: string; partition: number; epoch: number; newPartition: number; at: Buffer }): Promise<number> {
    this.checkOpen();
    const map = this.currentMap;
    const p = map.byId(request.partition);
    const store = p === undefined ? undefined : this.stores.get(p.id);
    if (p === undefined || store === undefined || p.chain.find((r) => r.node === this.address)?.state !== 'serving') {
      throw new StoreError('STORE_NOT_OWNER', `partition ${request.partition} has no serving replica on ${this.address} at map version ${map.version}`, { mapVersion: map.version });
    }
    if (p.epoch !== request.epoch) throw new StoreError('STORE_STALE_EPOCH', `partition ${p.id} is at epoch ${p.epoch} here, the split was asked at epoch ${request.epoch}`, { mapVersion: map.version });
    if (map.byId(request.newPartition) !== undefined) throw new StoreError('STORE_INVALID_ARGUMENT', `partition ${request.newPartition} exists already: a split needs an unused id`);
    if (request.at.compare(p.start) <= 0 || (p.end.length > 0 && request.at.compare(p.end) >= 0)) {
      throw new StoreError('STORE_INVALID_ARGUMENT', `split key "${displayBytes(request.at)}" is not strictly inside partition ${p.id} ["${displayBytes(p.start)}", "${displayBytes(p.end)}")`);
    }
    // The id may be one this node left earlier and still holds for GC: the split's copy replaces that folder, and GC must not delete it.
    await this.betweenMapChanges(() => this.gc.forget(request.newPartition));
    return this.splits.prepare({ operation: request.operation, partition: p, to: request.newPartition, at: request.at, source: store });
  }

  /** Drops prepared split copies no `prepare/` request asks for any more (by new partition id → operation). */
  forgetSplitsExcept(keep: ReadonlyMap<number, string>): Promise<void> {
    return this.betweenMapChanges(() => this.splits.forgetExcept(keep));
  }

  /** Drops prepared merges no `merge/` request asks for any more (by lower partition id → operation); their copied rows are cleaned up. */
  forgetMergesExcept(keep: ReadonlyMap<number, string>): Promise<void> {
    return this.betweenMapChanges(async () => {
      this.splits.forgetMergesExcept(keep);
      this.cleanOutsideRanges();
    });
  }

  /**
   * Runs `fn` between two map installs, never during one: a GC sweep, or dropping a prepared split
   * or merge (and starting the clean-up of a dropped merge's rows, by the map then installed), while
   * an install assigns that partition or finishes that split or merge would delete what it installs.
   */
  private betweenMapChanges<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.mapChange.then(fn);
    this.mapChange = run.catch(() => undefined);
    return run;
  }

  /**
   * Prepares merging `other` (P's upper neighbour on the same chain) into `partition`
   * (SplitParticipant.prepareMerge). Refused unless this node holds serving replicas of both at
   * the given epochs, they are neighbours and have the same head.
   */
  async prepareMerge(request: { operation: string; partition: number; epoch: number; other: number; otherEpoch: number }): Promise<number> {
    this.checkOpen();
    const map = this.currentMap;
    const p = map.byId(request.partition);
    const q = map.byId(request.other);
    const target = p === undefined ? undefined : this.stores.get(p.id);
    const source = q === undefined ? undefined : this.stores.get(q.id);
    const serving = (x: Partition | undefined): boolean => x?.chain.find((r) => r.node === this.address)?.state === 'serving';
    if (p === undefined || q === undefined || target === undefined || source === undefined || !serving(p) || !serving(q)) {
      throw new StoreError('STORE_NOT_OWNER', `partitions ${request.partition} and ${request.other} do not both have a serving replica on ${this.address} at map version ${map.version}`, { mapVersion: map.version });
    }
    if (p.epoch !== request.epoch || q.epoch !== request.otherEpoch) throw new StoreError('STORE_STALE_EPOCH', `partitions ${p.id} and ${q.id} are at epochs ${p.epoch} and ${q.epoch} here, the merge was asked at ${request.epoch} and ${request.otherEpoch}`, { mapVersion: map.version });
    if (!p.end.equals(q.start) || p.node !== q.node) throw new StoreError('STORE_INVALID_ARGUMENT', `partition ${q.id} does not start where ${p.id} ends on the same head: only neighbours on one chain merge`);
    return this.splits.prepareMerge({ operation: request.operation, into: p, target, other: q, source, beforeCopy: () => this.clearNow(p.id, q.start, q.end) });
  }

  /** Deletes a range of a partition's LevelDB now, after any clean-up of it running. */
  private async clearNow(partitionId: number, start: Buffer, end: Buffer): Promise<void> {
    await this.cleanups.get(partitionId);
    await this.stores.get(partitionId)?.clearRange(start, end);
  }

  /** The median key of a partition this node holds (SplitKeys in two parts), undefined when it has too few rows. */
  async medianKey(partitionId: number): Promise<Buffer | undefined> {
    const p = this.currentMap.byId(partitionId);
    const store = this.stores.get(partitionId);
    if (p === undefined || store === undefined) return undefined;
    const { keys } = await store.splitKeys(p.start, p.end, 2);
    return keys[0];
  }

  /**
   * Holds new writes of a partition this node heads (WritePause) and resolves with the chain
   * position once every write it applied is acknowledged by the whole chain (all replicas at one
   * sequence number); undefined if that takes longer than `timeoutMs` (the writes stay held: the
   * caller releases them). Polls every millisecond: the wait is bounded by the pause.
   */
  async holdWrites(partitionId: number, timeoutMs: number, signal?: AbortSignal): Promise<ChainPosition | undefined> {
    const p = this.currentMap.byId(partitionId);
    const store = this.stores.get(partitionId);
    if (p === undefined || store === undefined || p.node !== this.address) {
      throw new StoreError('STORE_NOT_OWNER', `partition ${partitionId} is not headed by ${this.address}`, { mapVersion: this.currentMap.version });
    }
    this.writePause.hold(partitionId);
    const deadline = (this.writePause.heldSince(partitionId) ?? Date.now()) + timeoutMs;
    const replica = this.replicas.get(partitionId);
    while (!(store.isIdle && (replica === undefined || p.chain.length < 2 || replica.progress.unacked === 0))) {
      if (Date.now() >= deadline || signal?.aborted || !this.writePause.isHeld(partitionId)) return undefined;
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    return store.chainPosition;
  }

  /** Why a held partition is not settled yet (see holdWrites), for the reason a pause gives when it runs out. */
  unsettledWrites(partitionId: number): string {
    const store = this.stores.get(partitionId);
    const parts: string[] = [];
    if (store !== undefined && !store.isIdle) parts.push('writes of the head not yet durable here');
    const forwards = this.replicas.get(partitionId)?.unackedSummary();
    if (forwards !== undefined) parts.push(forwards);
    return parts.length > 0 ? parts.join('; ') : 'settled just as the pause ran out';
  }

  /** Lets a partition's held writes go on; the pause measured (undefined: it was not held). */
  releaseWrites(partitionId: number, reason: string): WritePauseRecord | undefined {
    return this.writePause.release(partitionId, reason);
  }

  /**
   * Deletes, in the background, rows a partition's LevelDB holds outside its range (what a split
   * left in the partition it cut: keys the new partition owns now), in bounded batches. Scans,
   * checksums and backups never see them (they are clamped to the range); `stats` leaves them out.
   */
  private cleanOutsideRanges(): void {
    for (const p of this.currentMap.replicasOf(this.address)) {
      const store = this.stores.get(p.id);
      // A merge target holds its neighbour's rows outside its range on purpose until the merge commits.
      if (store === undefined || this.cleanups.has(p.id) || this.splits.isMergeTarget(p.id)) continue;
      const run = (async () => {
        let deleted = 0;
        const signal = this.cleanupStop.signal;
        if (p.start.length > 0) deleted += await store.clearRange(Buffer.alloc(0), p.start, { signal });
        if (p.end.length > 0) deleted += await store.clearRange(p.end, Buffer.alloc(0), { signal });
        if (deleted > 0) this.logger?.info({ partition: p.id, deleted }, 'deleted the rows outside the partition\'s range (a split\'s leftovers)');
      })()
        .catch((err: unknown) => {
          if (!this.cleanupStop.signal.aborted && !(err instanceof StoreError && err.code === 'STORE_CLOSED')) this.logger?.warn({ err, partition: p.id }, 'deleting rows outside the partition\'s range failed; it runs again with the next map installed or at restart');
        })
        .finally(() => this.cleanups.delete(p.id));
      this.cleanups.set(p.id, run);
    }
  }

  /** Split keys of the clamped range (see PartitionStore.splitKeys); `parts` is 2–1000. */
  async splitKeys(range: ClampedRange, parts: number, signal?: AbortSignal): Promise<{ keys: Buffer[]; approxCount: number }> {
    if (!Number.isSafeInteger(parts) || parts < MIN_SPLIT_PARTS || parts > MAX_SPLIT_PARTS) {
      throw new StoreError('STORE_INVALID_ARGUMENT', `parts must be ${MIN_SPLIT_PARTS}–${MAX_SPLIT_PARTS}, got ${parts}`);
    }
    return this.storeOf(range.partition).splitKeys(range.start, range.end, parts, { signal });
  }

  /**
   * Pins a snapshot of each named partition (empty = all this node serves) for `leaseMs`, one
   * after the other as fast as LevelDB allows. Every snapshot is released if one fails.
   */
  async openSnapshots(mapVersion: number, partitionIds: readonly number[], leaseMs: number): Promise<SnapshotLeaseInfo[]> {
    this.checkVersion(mapVersion);
    checkLease(leaseMs);
    const owned = this.ownedPartitions();
    for (const id of partitionIds) {
      if (!owned.some((p) => p.id === id)) {
        throw new StoreError('STORE_NOT_OWNER', `partition ${id} is not served by ${this.address}`, { mapVersion: this.currentMap.version, context: { partition: id } });
      }
    }
    const wanted = partitionIds.length === 0 ? owned : owned.filter((p) => partitionIds.includes(p.id));
    const opened = await Promise.allSettled(wanted.map((p) => this.storeOf(p).openSnapshot()));
    const failure = opened.find((r) => r.status === 'rejected');
    if (failure !== undefined) {
      await Promise.allSettled(opened.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
      throw failure.reason;
    }
    return opened.map((r, i) => {
      const snapshot = (r as PromiseFulfilledResult<PartitionSnapshot>).value;
      const snapshotId = `p${wanted[i]!.id}-${randomBytes(8).toString('hex')}`;
      const expiresAtMs = Date.now() + leaseMs;
      this.snapshots.set(snapshotId, { partitionId: wanted[i]!.id, snapshot, expiresAtMs, timer: this.expiryTimer(snapshotId, leaseMs) });
      return { snapshotId, partitionId: wanted[i]!.id, count: snapshot.count, takenAtMs: snapshot.takenAtMs, expiresAtMs, chain: snapshot.chain };
    });
  }

  /** Extends the leases of held snapshots; any unknown one fails the call, naming it. */
  renewSnapshots(snapshotIds: readonly string[], leaseMs: number): SnapshotLeaseInfo[] {
    this.checkOpen();
    checkLease(leaseMs);
    const held = snapshotIds.map((id) => [id, this.snapshots.get(id)] as const);
    const missing = held.filter(([, h]) => h === undefined).map(([id]) => truncateForMessage(id));
    if (missing.length > 0) {
      const named = missing.length > 3 ? `${missing.slice(0, 3).join(', ')} and ${missing.length - 3} more` : missing.join(', ');
      throw new StoreError('STORE_SNAPSHOT_NOT_FOUND', `snapshot ${named} is not held by ${this.address}: its lease ran out, it was released, or the node restarted`);
    }
    return held.map(([snapshotId, h]) => {
      clearTimeout(h!.timer);
      h!.expiresAtMs = Date.now() + leaseMs;
      h!.timer = this.expiryTimer(snapshotId, leaseMs);
      return { snapshotId, partitionId: h!.partitionId, count: h!.snapshot.count, takenAtMs: h!.snapshot.takenAtMs, expiresAtMs: h!.expiresAtMs, chain: h!.snapshot.chain };
    });
  }

  /** Releases held snapshots; returns how many were still held. */
  async releaseSnapshots(snapshotIds: readonly string[]): Promise<number> {
    let released = 0;
    for (const id of snapshotIds) if (await this.dropSnapshot(id)) released++;
    return released;
  }

  /**
   * Checks a range request and clamps it to the partition that owns `start` (empty = the
   * beginning of the keyspace), which this node must own.
   */
  clampRange(mapVersion: number, start: Buffer, end: Buffer): ClampedRange {
    if (start.length > 0) {
      const problem = Key.problem(start, this.maxKeyBytes);
      if (problem !== undefined) throw new StoreError('STORE_INVALID_KEY', `range start: ${problem}`);
    }
    if (end.length > 0 && Buffer.compare(start, end) >= 0) {
      throw new StoreError('STORE_INVALID_ARGUMENT', `empty range: start "${displayBytes(start)}" is not below end "${displayBytes(end)}"`);
    }
    const { partition } = this.route(mapVersion, start, 'read');
    const endsInside = partition.end.length === 0 || (end.length > 0 && Buffer.compare(end, partition.end) <= 0);
    return endsInside
      ? { partition, start, end, next: Buffer.alloc(0) }
      : { partition, start, end: partition.end, next: partition.end };
  }

  async stats(partitionIds: readonly number[] = []): Promise<Array<{ partition: Partition; stats: PartitionStoreStats }>> {
    this.checkOpen();
    const owned = this.ownedPartitions().filter((p) => partitionIds.length === 0 || partitionIds.includes(p.id));
    return Promise.all(owned.map(async (partition) => ({ partition, stats: await this.storeOf(partition).stats() })));
  }

  /**
   * Installs a newer map: persists it first, then opens partitions newly assigned here and closes
   * those no longer assigned (their folders stay on disk until object GC deletes them after the grace: store/partition-gc.ts). An identical map is a no-op; an older one,
   * a different one under the same version, or one more than MAX_MAP_VERSION_STEP versions ahead
   * is refused — unless `force` (admin recovery), which installs any other map.
   */
  setMap(next: PartitionMap, options: { force?: boolean; fromEtcd?: boolean } = {}): Promise<boolean> {
    if (this.mapFromEtcd && !options.fromEtcd) {
      return Promise.reject(
        new StoreError('STORE_MAP_MANAGED_BY_ETCD', `node ${this.address} takes its partition map from etcd: change the map there (shardpipe coordinator, cluster init), not with SetPartitionMap`, {
          mapVersion: this.currentMap.version,
        }),
      );
    }
    const change = this.mapChange.then(async () => {
      this.checkOpen();
      const current = this.currentMap;
      if (next.equals(current)) return false;
      if (options.force) {
        if (next.version <= current.version || next.version - current.version > MAX_MAP_VERSION_STEP) {
          this.logger?.warn({ from: current.version, to: next.version }, 'forced install of a partition map outside the normal version step');
        }
      } else if (next.version === current.version) {
        throw new StoreError('STORE_MAP_CONFLICT', `a different map with version ${next.version} is already installed: give the new map a higher version`, {
          mapVersion: current.version,
        });
      } else if (next.version < current.version) {
        throw new StoreError('STORE_MAP_NOT_NEWER', `map version ${next.version} is older than the installed version ${current.version}`, {
          mapVersion: current.version,
        });
      } else if (next.version - current.version > MAX_MAP_VERSION_STEP) {
        throw new StoreError(
          'STORE_MAP_VERSION_JUMP',
          `map version ${next.version} is ${next.version - current.version} ahead of the installed version ${current.version}: a map may move at most ${MAX_MAP_VERSION_STEP} versions per install (an admin can override with cluster install --force)`,
          { mapVersion: current.version },
        );
      }
      // Recorded before the map is persisted: a crash in between leaves an entry the map explains, never an unexplained folder.
      await this.gc.left(leftBetween(current, next, this.address));
      // A split this map commits: the new partition's LevelDB is made complete before the map is persisted.
      await this.splits.beforeInstall(current, next, this.address, (id) => this.stores.get(id), (id, start, end) => this.clearNow(id, start, end));
      await this.persistMap(next);
      await this.openOwnedPartitions(next);
      this.currentMap = next;
      await this.gc.reconcile();
      for (const p of next.replicasOf(this.address)) this.replicas.get(p.id)?.setPartition(p);
      // Writes held for a cut go on under the new map (routed by it: see admit).
      for (const p of current.partitions) {
        const now = next.byId(p.id);
        if (this.writePause.isHeld(p.id) && (now === undefined || now.epoch !== p.epoch || now.node !== this.address)) this.writePause.release(p.id, 'the map changed');
      }
      const keep = new Set(next.replicasOf(this.address).map((p) => p.id));
      for (const [id, store] of this.stores) {
        if (!keep.has(id)) {
          this.stores.delete(id);
          const replica = this.replicas.get(id);
          if (replica !== undefined) {
            this.replicas.delete(id);
            replica.leave();
            replica.close();
          }
          await this.dropSnapshotsOf(id);
          await store.close();
        }
      }
      this.logger?.info({ from: current.version, to: next.version }, 'installed partition map');
      this.cleanOutsideRanges();
      this.onHealthChange?.();
      return true;
    });
    this.mapChange = change.catch(() => undefined);
    return change;
  }

  /**
   * Fencing (etcd mode): from now on every data request gets the retryable STORE_FENCED, because
   * this node cannot tell whether its map is still current. `reason` goes into the message.
   */
  fence(reason: string): void {
    if (this.fencedReason === undefined) this.logger?.warn({ reason }, 'fenced: refusing reads and writes until the current map is read from etcd again');
    this.fencedReason = reason;
    this.onHealthChange?.();
  }

  /** Ends fencing: called once the node has installed the current map from etcd again. */
  unfence(): void {
    if (this.fencedReason !== undefined) this.logger?.info({ mapVersion: this.currentMap.version }, 'unfenced: serving again');
    this.fencedReason = undefined;
    this.onHealthChange?.();
  }

  get isFenced(): boolean {
    return this.fencedReason !== undefined;
  }

  /** From now on every request gets UNAVAILABLE; calls already running finish. */
  startDraining(): void {
    this.draining = true;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Drains and closes every partition (queued writes are finished first). Idempotent. */
  close(): Promise<void> {
    this.draining = true;
    this.closed ??= (async () => {
      await this.mapChange;
      const errors: unknown[] = [];
      await this.gc.close().catch((err: unknown) => errors.push(err));
      await this.dropSnapshotsOf(undefined).catch((err: unknown) => errors.push(err));
      for (const p of this.writePause.heldPartitions()) this.writePause.release(p, 'the node is closing');
      this.cleanupStop.abort();
      await Promise.all(this.cleanups.values());
      await this.splits.close().catch((err: unknown) => errors.push(err));
      for (const replica of this.replicas.values()) replica.close();
      this.replicas.clear();
      for (const store of this.stores.values()) {
        await store.close().catch((err: unknown) => errors.push(err));
      }
      this.stores.clear();
      if (errors.length > 0) throw new AggregateError(errors, 'closing partitions failed');
    })();
    return this.closed;
  }

  private checkVersion(mapVersion: number): void {
    this.checkOpen();
    if (this.fencedReason !== undefined) {
      throw new StoreError('STORE_FENCED', `node ${this.address} is fenced (${this.fencedReason}): it serves again once it has the current partition map from etcd; retry, or use another replica`, {
        mapVersion: this.currentMap.version,
      });
    }
    const map = this.currentMap;
    if (mapVersion < map.version) {
      throw new StoreError('STORE_STALE_MAP', `caller's partition map version ${mapVersion} is older than this node's ${map.version}: refresh the map`, {
        mapVersion: map.version,
      });
    }
    if (mapVersion > map.version) {
      throw new StoreError('STORE_NODE_MAP_BEHIND', `this node has partition map version ${map.version}, older than the caller's ${mapVersion}`, {
        mapVersion: map.version,
      });
    }
  }

  /**
   * The map version a write routes by. While its partition's writes are held (a split's cut,
   * WritePause), it waits; once released it routes by the map current then, not the caller's: it
   * was sent to the right head, and the map changed under it while it waited (held writes of keys a
   * split moved go to the new partition, which this node heads too, or get STORE_NOT_OWNER).
   */
  private admit(mapVersion: number, key: Buffer): number | Promise<number> {
    if (!this.writePause.active) return mapVersion;
    const { partition } = this.route(mapVersion, key, 'write');
    const wait = this.writePause.wait(partition.id);
    if (wait === undefined) return mapVersion;
    return wait.then(() => this.admit(this.currentMap.version, key));
  }

  /** The ops of a Multi with the map version each routes by (admit), once none of their partitions is held. */
  private async admitMulti(ops: readonly PointOp[]): Promise<readonly PointOp[]> {
    const out = [...ops];
    for (let i = 0; i < out.length; i++) {
      const op = out[i]!;
      if (op.kind === 'get') continue;
      try {
        const admitted = this.admit(op.mapVersion, op.key);
        if (typeof admitted !== 'number') out[i] = { ...op, mapVersion: await admitted };
      } catch {
        // Refused: the op's own routing below says why.
      }
    }
    return out;
  }

  /** Writes go to the chain head, reads to its last serving replica (its tail); anything else is STORE_NOT_OWNER (retryable: refresh the map). */
  private route(mapVersion: number, key: Buffer, access: 'read' | 'write'): { partition: Partition; store: PartitionStore } {
    this.checkVersion(mapVersion);
    const map = this.currentMap;
    const partition = map.lookup(key);
    const serves = access === 'write' ? partition.node === this.address : readNodeOf(partition) === this.address;
    const store = serves ? this.stores.get(partition.id) : undefined;
    if (store === undefined) {
      const target = access === 'write' ? partition.node : readNodeOf(partition);
      const role = partition.chain.length < 2 ? '' : access === 'write' ? ' (writes go to its chain\'s head)' : ' (reads go to its chain\'s tail)';
      throw new StoreError('STORE_NOT_OWNER', `key "${displayBytes(key)}" belongs to partition ${partition.id} on ${target}, not to ${this.address}${role}`, {
        mapVersion: map.version,
        context: { partition: partition.id },
      });
    }
    return { partition, store };
  }

  /** Partitions that left this node and wait for GC (store/partition-gc.ts), oldest first. */
  gcPending(): GcPendingPartition[] {
    return this.gc.pending();
  }

  gcFigures(): GcFigures {
    return this.gc.figures();
  }

  /** Deletes what is due for GC now (the GC's own timer does this too). */
  sweepGc(): Promise<void> {
    return this.gc.sweep();
  }

  private storeOf(partition: Partition): PartitionStore {
    const store = this.stores.get(partition.id);
    if (store === undefined) throw new StoreError('STORE_NOT_OWNER', `partition ${partition.id} is not served by ${this.address}`, { mapVersion: this.currentMap.version });
    return store;
  }

  private heldSnapshot(snapshotId: string | undefined, partition: Partition): PartitionSnapshot | undefined {
    if (snapshotId === undefined || snapshotId === '') return undefined;
    const held = this.snapshots.get(snapshotId);
    if (held === undefined) {
      throw new StoreError('STORE_SNAPSHOT_NOT_FOUND', `snapshot ${truncateForMessage(snapshotId)} is not held by ${this.address}: its lease ran out, it was released, or the node restarted`);
    }
    if (held.partitionId !== partition.id) {
      throw new StoreError('STORE_INVALID_ARGUMENT', `snapshot ${snapshotId} is of partition ${held.partitionId}, but the range starts in partition ${partition.id}`);
    }
    return held.snapshot;
  }

  private expiryTimer(snapshotId: string, leaseMs: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.logger?.warn({ snapshotId }, 'snapshot lease ran out; releasing it');
      this.dropSnapshot(snapshotId).catch((err: unknown) => this.logger?.error({ err, snapshotId }, 'releasing an expired snapshot failed'));
    }, leaseMs);
    timer.unref();
    return timer;
  }

  private async dropSnapshot(snapshotId: string): Promise<boolean> {
    const held = this.snapshots.get(snapshotId);
    if (held === undefined) return false;
    this.snapshots.delete(snapshotId);
    clearTimeout(held.timer);
    await held.snapshot.close();
    return true;
  }

  private async dropSnapshotsOf(partitionId: number | undefined): Promise<void> {
    for (const [id, held] of [...this.snapshots]) {
      if (partitionId === undefined || held.partitionId === partitionId) await this.dropSnapshot(id);
    }
  }

  private checkOpen(): void {
    if (this.draining) throw new StoreError('STORE_UNAVAILABLE', `node ${this.address} is shutting down: retry on another replica or after restart`);
  }

  private checkKey(key: Buffer): void {
    const problem = Key.problem(key, this.maxKeyBytes);
    if (problem !== undefined) throw new StoreError('STORE_INVALID_KEY', problem, { context: { keyHex: Key.preview(key) } });
  }

  private checkValue(value: Buffer, key: Buffer, row?: number): void {
    if (value.length > this.maxValueBytes) {
      const where = row === undefined ? '' : `row ${row}: `;
      throw new StoreError('STORE_VALUE_TOO_LARGE', `${where}value of key "${displayBytes(key.subarray(0, 64))}" is ${value.length} bytes, over the limit of ${this.maxValueBytes} bytes`, {
        context: { row, bytes: value.length, limit: this.maxValueBytes },
      });
    }
  }

  private openStore(id: number): Promise<PartitionStore> {
    return PartitionStore.open(partitionFolder(this.dataDir, id), {
      syncWrites: this.syncWrites,
      sweepIntervalMs: this.sweepIntervalMs,
      writeBufferBytes: this.writeBufferBytes,
      name: `partition ${id}`,
      faultRetryBaseMs: this.faultRetryBaseMs,
      faultRetryMaxMs: this.faultRetryMaxMs,
      ...(this.changeLogRetention === undefined ? {} : { changeLogRetention: this.changeLogRetention }),
      onServingChange: () => this.onHealthChange?.(),
      logger: this.logger?.child({ partition: id }),
    });
  }

  // Every replica this node holds gets its LevelDB (a syncing one copies into it; see replica-sync.ts).
  private async openOwnedPartitions(map: PartitionMap): Promise<void> {
    for (const partition of map.replicasOf(this.address)) {
      if (this.stores.has(partition.id)) continue;
      // A partition a split just made here comes complete from the split (SplitParticipant).
      const store = this.splits.take(partition.id) ?? (await this.openStore(partition.id));
      this.stores.set(partition.id, store);
      this.replicas.set(
        partition.id,
        new ChainReplica({
          node: this.address,
          store,
          partition,
          transport: this.transport ?? noTransport(this.address),
          forwardTimeoutMs: this.forwardTimeoutMs,
          // A batched call stays within what a node configured like this one receives (maxBatchBytes + 1 MiB).
          forwardBatchMaxBytes: this.maxBatchBytes,
          onForwardRetry: this.onForwardRetry,
          // etcd mode: the agent compares a restarted head with its successor (EtcdNodeAgent).
          checkRestartAsHead: this.mapFromEtcd,
          retryLog: this.forwardRetryLog,
          logger: this.logger?.child({ partition: partition.id }),
        }),
      );
    }
  }

  private async persistMap(map: PartitionMap): Promise<void> {
    const path = join(this.dataDir, MAP_FILE);
    const tmp = `${path}.tmp`;
    const file = await open(tmp, 'w');
    try {
      await file.writeFile(JSON.stringify(map.toJson(), null, 2));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
  }
}

async function readMapFile(path: string): Promise<PartitionMap | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return PartitionMap.fromJson(JSON.parse(text));
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new StoreError('STORE_INVALID_MAP', `the persisted partition map ${path} is unreadable (${reason}): restore it or start with --map FILE after moving it away`, { cause: err });
  }
}

/** Partitions `from` gave `node` that `to` does not. */
function leftBetween(from: PartitionMap, to: PartitionMap, node: string): number[] {
  const kept = new Set(to.replicasOf(node).map((p) => p.id));
  return from.replicasOf(node).map((p) => p.id).filter((id) => !kept.has(id));
}

/** A node started without a transport (a static map of one replica per chain) cannot forward. */
function noTransport(node: string): ForwardTransport {
  return {
    send: () => Promise.reject(new StoreError('STORE_UNAVAILABLE', `node ${node} has no forward transport: chains of more than one replica need a node started with one (store start --etcd)`)),
  };
}

/** The kept etag and times of a bulk row lie in their ranges (store/field-limits.ts). */
function checkRowMetadata(row: Pick<BulkRowInput, 'etag' | 'updatedAtMs' | 'expiresAtMs'>, i: number): void {
  checkRowField(i, 'etag', row.etag, MAX_KEPT_ETAG);
  checkRowField(i, 'updated_at_ms', row.updatedAtMs, MAX_TIME_MS);
  checkRowField(i, 'expires_at_ms', row.expiresAtMs, MAX_TIME_MS);
}

function checkRowField(i: number, name: string, value: number | undefined, max: number): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < 0 || value > max)) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `row ${i}: ${name} is ${value}, out of range: allowed 0–${max}`, { context: { row: i, field: name } });
  }
}

/** The gets of a Multi in `slots` of one partition, read with one getManyNow, each outcome in its slot. */
function readSlots(store: PartitionStore, slots: readonly number[], ops: readonly PointOp[], outcomes: Array<PointOutcome | Promise<PointOutcome>>): void {
  let records: Array<StoredRecord | undefined>;
  try {
    records = store.getManyNow(slots.map((i) => ops[i]!.key));
  } catch (error) {
    for (const slot of slots) outcomes[slot] = { ok: false, error };
    return;
  }
  slots.forEach((slot, j) => {
    const op = ops[slot] as Extract<PointOp, { kind: 'get' }>;
    try {
      outcomes[slot] = { ok: true, kind: 'get', record: project(op.key, records[j], op.fields ?? []) };
    } catch (error) {
      outcomes[slot] = { ok: false, error };
    }
  });
}

/** A record with its value reduced to `fields` (a partial get); as it is without fields. */
function project(key: Buffer, record: StoredRecord | undefined, fields: readonly string[]): StoredRecord | undefined {
  return record === undefined || fields.length === 0 ? record : { ...record, value: projectDocument(key, record.value, fields) };
}

function checkTtl(ttlMs: number | undefined): void {
  if (ttlMs !== undefined && (!Number.isSafeInteger(ttlMs) || ttlMs < 0 || ttlMs > MAX_TTL_MS)) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `ttl must be a whole number of milliseconds 0–${MAX_TTL_MS}, got ${ttlMs}`);
  }
}

function checkLease(leaseMs: number): void {
  if (!Number.isSafeInteger(leaseMs) || leaseMs < MIN_LEASE_MS || leaseMs > MAX_LEASE_MS) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `a snapshot lease must be ${MIN_LEASE_MS}–${MAX_LEASE_MS} ms, got ${leaseMs}`);
  }
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a whole number ≥ 1, got ${value}`);
  return value;
}

/** A point write's timing in a chain of one: durable is done. */
function timedLocally(timing: PointWriteTiming, startedMs: number): void {
  timing.writeMs = performance.now() - startedMs;
  timing.forwardMs = 0;
  timing.hops = [];
}

/** A point write's timing at a head: queued → durable, then durable → the tail's ack. */
function timedInChain(timing: PointWriteTiming, startedMs: number, durableMs: number, hops: HopTiming[]): void {
  timing.writeMs = durableMs - startedMs;
  timing.forwardMs = performance.now() - durableMs;
  timing.hops = hops;
}
