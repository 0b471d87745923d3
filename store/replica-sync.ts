import { setTimeout as sleep } from 'node:timers/promises';
import type { Partition } from './partition-map.js';
import type { CopyGuard } from './chain-replica.js';
import type { ChainPosition, PartitionStore, StoredEntry } from './partition-store.js';
import { RangeDigest } from './range-digest.js';
import { CHECKSUM_PAGE_ENTRIES } from './checksum-page.js';
import { RECORD_EXPIRY_BYTES, RECORD_HEADER_BYTES } from './record.js';
import type { BulkRowInput } from './bulk-row.js';
import type { NodeConnection } from './node-connection.js';
import { StoreError } from './store-errors.js';
import type { SyncThrottle } from './sync-throttle.js';
import type { ChangedKeysBatch } from './proto/gen/shardpipe/store/v1/store.js';

/** Keys per ChangedKeys call when a verification reads back the snapshot rows of keys forwards touched. */
const READ_BACK_KEYS = 5000;

/** Progress of one replica sync, as reported to etcd and shown by `cluster status`. */
export interface SyncProgress {
  /** Rows copied (written or already equal) so far. */
  rows: number;
  /**
   * Bytes copied so far, counted as PartitionStats `logicalBytes` counts a stored row (key, record
   * header, expiry, value): an operation's step shows them against the partition's size.
   */
  bytes: number;
  /** Rows in the source's snapshot (expired ones count until swept). */
  totalRows: number;
  /** Local rows removed because the snapshot does not hold them (a returning replica's deleted keys). */
  deleted: number;
  /** The last key up to which the local replica is done (copied, and local extras deleted): where a copy from another source can resume. */
  copiedThrough?: Buffer;
  /** `fast`: only the keys the source's change log holds as changed since the replica's position; `full`: the whole partition. */
  mode: SyncMode;
  /** Fast mode: why the source's log could not be used (the sync then copied the whole partition). */
  fastSkipped?: string;
}

/** How a sync copies: the keys changed since the replica's position (its source's change log), or the whole partition. */
export type SyncMode = 'fast' | 'full';

/** Options of one sync of a local replica from a source replica. */
export interface ReplicaSyncOptions {
  /** The partition (its range) under the map the sync runs at. */
  partition: Partition;
  /** The caller's map version, sent on every call to the source. */
  mapVersion: number;
  /** The local replica written into. */
  target: PartitionStore;
  /** The source replica's node. */
  source: NodeConnection;
  /** Lease of the source's snapshot, ms; renewed as the copy runs. Default 60000. */
  snapshotLeaseMs?: number;
  /** Deadline of each unary call to the source, ms. Default 10000. */
  rpcDeadlineMs?: number;
  /**
   * Resume: the local replica is already done up to and including this key (a copy from the
   * chain's previous tail got that far; its rows there equal this snapshot's, or were written by
   * forwards since, which it applies too), so the copy starts after it. The verification still
   * covers the whole partition.
   */
  startAfter?: Buffer;
  /** Entries per scan batch asked for. Default 1000. */
  batchSize?: number;
  /** Entries per Checksum call of the verification. Default CHECKSUM_PAGE_ENTRIES. */
  checksumPageEntries?: number;
  /**
   * Fast sync: the local replica's persisted position from before this sync (its data is the
   * stream's at that position). When the source's change log covers every write after it up to the
   * snapshot, only the keys those writes changed are copied (their snapshot rows, or deleted when
   * the snapshot lacks them); the verification is the full one either way. Ignored with `startAfter`.
   */
  fastFrom?: ChainPosition;
  /** Keeps the bytes applied at or under a rate (throttle/P/NODE in etcd). Default: unthrottled. */
  throttle?: SyncThrottle;
  /** The connection ChangedKeys goes over (role `replica`: the node's replica token when it has tokens). Default: `source`. */
  changesSource?: NodeConnection;
  /**
   * Called once the source's snapshot is open, with the last chain write it holds: the local
   * replica applies forwards after it and takes the ones up to it as copied (ChainReplica.startAt).
   */
  onSnapshot?: (position: ChainPosition) => CopyGuard | undefined;
  /** Called just before the snapshot is opened; the function it returns is called if opening fails. */
  beforeSnapshot?: () => () => void;
  /** Called after every copied batch. */
  onProgress?: (progress: SyncProgress) => void;
  signal?: AbortSignal;
}

/** What a finished sync copied and the digest both sides agreed on. */
export interface SyncResult extends SyncProgress {
  digest: string;
}

/**
 * Copies one partition into a local replica from a leased snapshot of a source replica (streaming
 * Scan), then proves the copy. Live forwards keep arriving meanwhile, and the replica applies every
 * one after the snapshot's position (`onSnapshot`); the keys they write are newer than the
 * snapshot, so (through the replica's CopyGuard) the copy neither writes over them nor deletes them
 * — a forwarded delete acts as a tombstone — and every other key becomes exactly the snapshot's
 * row (local rows the snapshot lacks are deleted). The proof: the local replica without the touched
 * keys digests (etags included) to the snapshot's digest without its rows of those keys.
 *
 * Fails with STORE_SYNC_MISMATCH when the digests differ (the caller starts again).
 */
export async function syncReplica(options: ReplicaSyncOptions): Promise<SyncResult> {
  const { partition, mapVersion, target, source, signal } = options;
  const leaseMs = options.snapshotLeaseMs ?? 60_000;
  const rpcDeadlineMs = options.rpcDeadlineMs ?? 10_000;
  const limits = (): { deadline: number; signal?: AbortSignal } => ({ deadline: Date.now() + rpcDeadlineMs, signal });
  const release = options.beforeSnapshot?.();
  let opened;
  try {
    opened = await source.unary('openSnapshot', { mapVersion, partitionIds: [partition.id], leaseMs }, limits());
  } catch (err) {
    release?.();
    throw err;
  }
  const snapshot = opened.snapshots.find((s) => s.partitionId === partition.id);
  if (snapshot === undefined) {
    release?.();
    throw new StoreError('STORE_NOT_OWNER', `${source.address} pinned no snapshot of partition ${partition.id}`, { context: { partition: partition.id } });
  }
  const snapshotId = snapshot.snapshotId;
  const guard = options.onSnapshot?.({ stream: snapshot.chainStream, seq: snapshot.chainSeq }) ?? NO_FORWARDS;
  const progress: SyncProgress = { rows: 0, bytes: 0, totalRows: snapshot.count, deleted: 0, mode: 'full' };
  // The snapshot's rows of keys already touched when their batch was read, and where each batch
  // ended with the guard's clock then: what the verification takes out of the snapshot's digest.
  const touchedRows = new RangeDigest();
  const accounted = new Set<string>();
  const batchEnds: Array<{ lastKey: Buffer; clock: number }> = [];
  let renewedAt = Date.now();
  const renew = async (): Promise<void> => {
    if (Date.now() - renewedAt <= leaseMs / 3) return;
    await source.unary('renewSnapshot', { snapshotIds: [snapshotId], leaseMs }, limits());
    renewedAt = Date.now();
  };
  try {
    if (options.fastFrom !== undefined && options.startAfter === undefined) {
      const skipped = await copyChanged({ ...options, source, snapshotId, guard, progress, touchedRows, accounted, renew, fastFrom: options.fastFrom });
      if (skipped !== undefined) progress.fastSkipped = skipped;
    }
    if (progress.mode === 'full') await copyAll();
    const theirs = await snapshotDigest(source, { mapVersion, partition, snapshotId, pageEntries: options.checksumPageEntries ?? CHECKSUM_PAGE_ENTRIES }, limits);
    const mine = await untouchedDigest(target, partition, guard);
    if (guard.overflowed) {
      throw new StoreError('STORE_SYNC_MISMATCH', `the copy of partition ${partition.id} from ${source.address} cannot be verified: forwards wrote more keys during it than the replica tracks; starting again`, {
        context: { partition: partition.id },
      });
    }
    // Keys first touched after their batch was read: their snapshot rows (if any) are read back.
    const expected = theirs.subtract(touchedRows);
    const readBack: Buffer[] = [];
    for (const [id, touchedAt] of mine.touched) {
      if (accounted.has(id)) continue;
      const key = Buffer.from(id, 'latin1');
      if (progress.mode === 'fast') {
        // A fast copy read no batch in key order: every touched key it did not see is read back.
        readBack.push(key);
        continue;
      }
      const covering = firstEndingAtOrAfter(batchEnds, key);
      // Past the last row streamed, or touched before the batch that would hold it was read (and
      // not in it): the snapshot has no row of it.
      if (covering === undefined || touchedAt <= covering.clock) continue;
      expected.subtract(await snapshotRow(source, mapVersion, snapshotId, key, limits));
    }
    const readRows = new RangeDigest();
    for (let at = 0; at < readBack.length; at += READ_BACK_KEYS) {
      const keys = readBack.slice(at, at + READ_BACK_KEYS);
      for await (const batch of (options.changesSource ?? source).changedKeys({ mapVersion, snapshotId, afterStream: '', afterSeq: 0, keys, batchSize: 0 }, { deadline: Date.now() + rpcDeadlineMs, signal })) {
        for (const e of batch.entries) readRows.add(e.key, e.value, e.expiresAtMs, e.etag);
        if (batch.last) break;
      }
    }
    expected.subtract(readRows);
    if (expected.toHex() !== mine.digest.toHex() || expected.count !== mine.digest.count) {
      throw new StoreError(
        'STORE_SYNC_MISMATCH',
        `the ${progress.mode} copy of partition ${partition.id} from ${source.address} does not match its snapshot: ${mine.digest.count} rows, digest ${mine.digest.toHex().slice(0, 16)}… here vs ${expected.count} rows, digest ${expected.toHex().slice(0, 16)}… there (rows written by forwards during the copy left out of both)`,
        { context: { partition: partition.id } },
      );
    }
    options.onProgress?.({ ...progress });
    return { ...progress, digest: mine.digest.toHex() };
  } finally {
    await source.unary('releaseSnapshot', { snapshotIds: [snapshotId] }, limits()).catch(() => undefined);
  }

  /** The full copy: the whole partition streamed from the snapshot, local extras deleted. */
  async function copyAll(): Promise<void> {
    // Local rows as they were before the copy wrote anything: a lockstep merge with the source's
    // sorted stream finds the local keys the snapshot lacks.
    const from = options.startAfter === undefined ? partition.start : Buffer.concat([options.startAfter, Buffer.from([0])]);
    const local = localRows(target, from, partition.end, guard, signal);
    const stream = source.scan({ mapVersion, start: from, end: partition.end, limit: 0, batchSize: options.batchSize ?? 1000, snapshotId }, { deadline: Infinity, signal });
    for await (const batch of stream) {
      signal?.throwIfAborted();
      if (batch.entries.length > 0) {
        const entries = batch.entries;
        const current = await target.getMany(entries.map((e) => e.key));
        // From here to the bulkInsert call nothing awaits: no forward is queued in between.
        const rows: BulkRowInput[] = [];
        for (let i = 0; i < entries.length; i++) {
          const e = entries[i]!;
          progress.bytes += storedBytes(e);
          if (guard.touchedAt(e.key) !== undefined) {
            touchedRows.add(e.key, e.value, e.expiresAtMs, e.etag);
            accounted.add(e.key.toString('latin1'));
            continue;
          }
          const mine = current[i];
          const equal = mine !== undefined && mine.etag === e.etag && mine.expiresAtMs === e.expiresAtMs && mine.updatedAtMs === e.updatedAtMs && mine.value.equals(e.value);
          if (!equal) rows.push({ key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs });
        }
        batchEnds.push({ lastKey: entries[entries.length - 1]!.key, clock: guard.clock });
        const written = rows.length > 0 ? target.bulkInsert(rows) : undefined;
        await options.throttle?.take(batchBytes(entries), signal);
        await written;
        progress.rows += entries.length;
        progress.deleted += await local.dropMissingBefore(entries);
        progress.copiedThrough = entries[entries.length - 1]!.key;
        options.onProgress?.({ ...progress });
        await renew();
      }
      if (batch.last) break;
    }
    progress.deleted += await local.dropRest();
  }
}

/**
 * A row's size as PartitionStats counts it (key, separator, record header, expiry, value): what
 * progress and the throttle count, so bytes done compare with the bytes total a movement reads
 * from the source's stats, and the rate a throttle keeps is the rate the report shows.
 */
function storedBytes(e: { key: Buffer; value: Buffer; expiresAtMs: number }): number {
  return e.key.length + 1 + RECORD_HEADER_BYTES + (e.expiresAtMs > 0 ? RECORD_EXPIRY_BYTES : 0) + e.value.length;
}

function batchBytes(entries: readonly { key: Buffer; value: Buffer; expiresAtMs: number }[]): number {
  let bytes = 0;
  for (const e of entries) bytes += storedBytes(e);
  return bytes;
}

/**
 * The fast copy: asks the source for the keys its change log (as the snapshot sees it) holds as
 * changed after `fastFrom`, with their snapshot rows, and applies each batch (rows written exactly,
 * absent keys deleted) except keys forwards wrote since the snapshot (newer; their snapshot rows
 * leave the verification, as in the full copy). Resolves undefined when done, or why the log could
 * not be used (nothing was copied then).
 */
async function copyChanged(o: ReplicaSyncOptions & {
  snapshotId: string;
  guard: CopyGuard;
  progress: SyncProgress;
  touchedRows: RangeDigest;
  accounted: Set<string>;
  renew: () => Promise<void>;
  fastFrom: ChainPosition;
}): Promise<string | undefined> {
  const { target, guard, progress, signal } = o;
  const changes = o.changesSource ?? o.source;
  const stream = changes.changedKeys({ mapVersion: o.mapVersion, snapshotId: o.snapshotId, afterStream: o.fastFrom.stream, afterSeq: o.fastFrom.seq, keys: [], batchSize: o.batchSize ?? 1000 }, { deadline: Infinity, signal });
  const iterator = (stream as AsyncGenerator<ChangedKeysBatch>)[Symbol.asyncIterator]();
  let opening: IteratorResult<ChangedKeysBatch>;
  try {
    opening = await iterator.next();
  } catch (err) {
    signal?.throwIfAborted();
    // Nothing copied yet: a source that cannot answer (an older node, a token without role
    // replica) is copied in full instead; if it is gone, the full copy fails and the sync retries.
    return `the source did not answer ChangedKeys: ${(err as Error).message}`;
  }
  if (opening.done === true) return 'the source sent no ChangedKeys answer';
  if (!opening.value.covered) {
    await iterator.return?.(undefined);
    return opening.value.reason || 'the source\'s change log does not cover the replica\'s position';
  }
  progress.totalRows = opening.value.changedKeys;
  progress.mode = 'fast';
  const batches = async function* (): AsyncGenerator<ChangedKeysBatch> {
    yield opening.value as ChangedKeysBatch;
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) return;
      yield next.value;
    }
  };
  for await (const batch of batches()) {
    signal?.throwIfAborted();
    // A piece of a range a bulk batch changed: the local rows in it that the snapshot lacks go.
    const absent = batch.rangeEnd.length > 0 ? await localOnly(target, batch.rangeStart, batch.rangeEnd, batch.entries, signal) : batch.absent;
    const rows: BulkRowInput[] = [];
    const deletes: Buffer[] = [];
    let bytes = 0;
    // From the guard checks to the queued writes nothing awaits: no forward is queued in between.
    for (const e of batch.entries) {
      bytes += storedBytes(e);
      if (guard.touchedAt(e.key) !== undefined) {
        o.touchedRows.add(e.key, e.value, e.expiresAtMs, e.etag);
        o.accounted.add(e.key.toString('latin1'));
        continue;
      }
      rows.push({ key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs });
    }
    for (const key of absent) {
      bytes += key.length;
      if (guard.touchedAt(key) !== undefined) o.accounted.add(key.toString('latin1'));
      else deletes.push(key);
    }
    const written = [rows.length > 0 ? target.bulkInsert(rows) : undefined, ...target.writeMany(deletes.map((key) => ({ kind: 'delete' as const, key })))];
    await o.throttle?.take(bytes, signal);
    const outcomes = await Promise.all(written);
    progress.deleted += outcomes.filter((d) => d === true).length;
    progress.rows += batch.entries.length + absent.length;
    progress.bytes += bytes;
    o.onProgress?.({ ...progress });
    await o.renew();
    if (batch.last) break;
  }
  return undefined;
}

/** The keys of the local rows in `[start, end)` that are not among `entries` (the snapshot's rows there). */
async function localOnly(target: PartitionStore, start: Buffer, end: Buffer, entries: readonly { key: Buffer }[], signal: AbortSignal | undefined): Promise<Buffer[]> {
  const theirs = new Set(entries.map((e) => e.key.toString('latin1')));
  const out: Buffer[] = [];
  for await (const batch of target.scan(start, end, { batchSize: 1000, signal })) for (const e of batch) if (!theirs.has(e.key.toString('latin1'))) out.push(e.key);
  return out;
}

/** The first batch (in key order) whose last key is at or after `key`. */
function firstEndingAtOrAfter(ends: ReadonlyArray<{ lastKey: Buffer; clock: number }>, key: Buffer): { lastKey: Buffer; clock: number } | undefined {
  let lo = 0;
  let hi = ends.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (Buffer.compare(ends[mid]!.lastKey, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return ends[lo];
}

/** A sync without live forwards (no replica to guard): nothing is touched. */
const NO_FORWARDS: CopyGuard = { touchedAt: () => undefined, clock: 0, overflowed: false, touched: () => new Map<string, number>().entries() };

/**
 * The digest (etags included) of the local replica without the keys forwards touched, read from one
 * local snapshot, and the touched keys as of that snapshot (a superset of those it holds writes of).
 */
async function untouchedDigest(target: PartitionStore, partition: Partition, guard: CopyGuard): Promise<{ digest: RangeDigest; touched: Map<string, number> }> {
  const snapshot = await target.openSnapshot();
  // Taken right after the snapshot: every forward the snapshot holds was marked before it was queued.
  const touched = new Map(guard.touched());
  try {
    const digest = new RangeDigest();
    for await (const batch of target.scan(partition.start, partition.end, { batchSize: 1000, snapshot })) {
      for (const e of batch) if (!touched.has(e.key.toString('latin1'))) digest.add(e.key, e.value, e.expiresAtMs, e.etag);
    }
    return { digest, touched };
  } finally {
    await snapshot.close();
  }
}

/** The source snapshot's row of one key, as a digest of zero or one entry. */
async function snapshotRow(source: NodeConnection, mapVersion: number, snapshotId: string, key: Buffer, limits: () => { deadline: number; signal?: AbortSignal }): Promise<RangeDigest> {
  const digest = new RangeDigest();
  const end = Buffer.concat([key, Buffer.from([0])]);
  const rows = source.scan({ mapVersion, start: key, end, limit: 1, batchSize: 1, snapshotId }, limits());
  for await (const batch of rows) {
    for (const e of batch.entries) if (e.key.equals(key)) digest.add(e.key, e.value, e.expiresAtMs, e.etag);
    if (batch.last) break;
  }
  return digest;
}

/**
 * The local replica's rows in key order, read from one iterator opened before the copy writes, and
 * deleted (CAS on their etag) when the source's stream passes them without holding them — unless a
 * forward wrote them since the snapshot (they are newer than it).
 */
function localRows(target: PartitionStore, start: Buffer, end: Buffer, guard: CopyGuard, signal: AbortSignal | undefined): {
  dropMissingBefore: (entries: readonly { key: Buffer }[]) => Promise<number>;
  dropRest: () => Promise<number>;
} {
  const iterator = target.scan(start, end, { batchSize: 1000, signal });
  let buffered: StoredEntry[] = [];
  let done = false;
  const seen = new Set<string>();
  const fill = async (): Promise<boolean> => {
    while (buffered.length === 0 && !done) {
      const next = await iterator.next();
      if (next.done) done = true;
      else buffered = next.value;
    }
    return buffered.length > 0;
  };
  const drop = async (entry: StoredEntry): Promise<number> => {
    if (guard.touchedAt(entry.key) !== undefined) return 0;
    return (await target.delete(entry.key, entry.etag).catch((err: unknown) => {
      // A forward changed it meanwhile: it is newer than the snapshot, so it stays.
      if (err instanceof StoreError && err.code === 'STORE_ETAG_MISMATCH') return false;
      throw err;
    }))
      ? 1
      : 0;
  };
  return {
    async dropMissingBefore(entries) {
      for (const e of entries) seen.add(e.key.toString('latin1'));
      const last = entries[entries.length - 1]!.key;
      let deleted = 0;
      while (await fill()) {
        const head = buffered[0]!;
        if (Buffer.compare(head.key, last) > 0) break;
        buffered.shift();
        if (!seen.has(head.key.toString('latin1'))) deleted += await drop(head);
      }
      // Only keys at or after the next batch's first key can still match.
      seen.clear();
      return deleted;
    },
    async dropRest() {
      let deleted = 0;
      while (await fill()) deleted += await drop(buffered.shift()!);
      return deleted;
    },
  };
}

/** The digest (with etags) of the source's snapshot of the whole partition, a page per call. */
async function snapshotDigest(
  source: NodeConnection,
  { mapVersion, partition, snapshotId, pageEntries }: { mapVersion: number; partition: Partition; snapshotId: string; pageEntries: number },
  limits: () => { deadline: number; signal?: AbortSignal },
): Promise<RangeDigest> {
  const total = new RangeDigest();
  let start = partition.start;
  for (;;) {
    const page = await source.unary('checksum', { mapVersion, start, end: partition.end, includeEtag: true, snapshotId, replica: false, maxEntries: pageEntries }, limits());
    total.merge(RangeDigest.fromHex(page.digest, page.count));
    if (page.next.length === 0 || (partition.end.length > 0 && Buffer.compare(page.next, partition.end) >= 0)) return total;
    start = Buffer.from(page.next);
  }
}
