import type { Partition } from './partition-map.js';
import type { ChainPosition, PartitionStore, StoredEntry } from './partition-store.js';
import type { BulkRowInput } from './bulk-row.js';
import type { NodeConnection } from './node-connection.js';
import { StoreError } from './store-errors.js';

/** Progress of one replica sync, as reported to etcd and shown by `cluster status`. */
export interface SyncProgress {
  /** Rows copied (written or already equal) so far. */
  rows: number;
  /** Key + value bytes copied so far. */
  bytes: number;
  /** Rows in the source's snapshot (expired ones count until swept). */
  totalRows: number;
  /** Local rows removed because the snapshot does not hold them (a returning replica's deleted keys). */
  deleted: number;
}

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
  /** Entries per scan batch asked for. Default 1000. */
  batchSize?: number;
  /**
   * Called once the source's snapshot is open, with the last chain write it holds: the local
   * replica applies forwards after it and takes the ones up to it as copied (ChainReplica.startAt).
   */
  onSnapshot?: (position: ChainPosition) => void;
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
 * Scan), then proves the copy by comparing the Checksum (with etags) of the same snapshot with the
 * local replica's. The apply rule keeps live forwarded writes: a copied row never replaces a local
 * row with a higher etag (etags of a partition only grow, at its head), and a local row the snapshot
 * lacks is deleted only when its etag is not above the snapshot's highest (it was deleted at the
 * source before the snapshot, not written after it), by a CAS delete on that etag.
 *
 * Fails with STORE_SYNC_MISMATCH when the digests differ (the caller starts again).
 */
export async function syncReplica(options: ReplicaSyncOptions): Promise<SyncResult> {
  const { partition, mapVersion, target, source, signal } = options;
  const leaseMs = options.snapshotLeaseMs ?? 60_000;
  const rpcDeadlineMs = options.rpcDeadlineMs ?? 10_000;
  const limits = (): { deadline: number; signal?: AbortSignal } => ({ deadline: Date.now() + rpcDeadlineMs, signal });
  const opened = await source.unary('openSnapshot', { mapVersion, partitionIds: [partition.id], leaseMs }, limits());
  const snapshot = opened.snapshots.find((s) => s.partitionId === partition.id);
  if (snapshot === undefined) throw new StoreError('STORE_NOT_OWNER', `${source.address} pinned no snapshot of partition ${partition.id}`, { context: { partition: partition.id } });
  const snapshotId = snapshot.snapshotId;
  options.onSnapshot?.({ stream: snapshot.chainStream, seq: snapshot.chainSeq });
  const progress: SyncProgress = { rows: 0, bytes: 0, totalRows: snapshot.count, deleted: 0 };
  let renewedAt = Date.now();
  try {
    // Local rows as they were before the copy wrote anything: a lockstep merge with the source's
    // sorted stream finds the local keys the snapshot lacks.
    const local = localRows(target, partition, signal);
    let highestEtag = 0;
    const stream = source.scan({ mapVersion, start: partition.start, end: partition.end, limit: 0, batchSize: options.batchSize ?? 1000, snapshotId }, { deadline: Infinity, signal });
    for await (const batch of stream) {
      signal?.throwIfAborted();
      if (batch.entries.length > 0) {
        const entries = batch.entries;
        for (const e of entries) if (e.etag > highestEtag) highestEtag = e.etag;
        const current = await target.getMany(entries.map((e) => e.key));
        const rows: BulkRowInput[] = [];
        for (let i = 0; i < entries.length; i++) {
          const e = entries[i]!;
          const mine = current[i];
          const equal = mine !== undefined && mine.etag === e.etag && mine.expiresAtMs === e.expiresAtMs && mine.value.equals(e.value);
          // Apply rule: a newer local row (a live forward) wins over the snapshot's.
          if (!equal && (mine === undefined || mine.etag <= e.etag)) rows.push({ key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs });
          progress.bytes += e.key.length + e.value.length;
        }
        if (rows.length > 0) await target.bulkInsert(rows);
        progress.rows += entries.length;
        progress.deleted += await local.dropMissingBefore(entries, highestEtag);
        options.onProgress?.({ ...progress });
        if (Date.now() - renewedAt > leaseMs / 3) {
          await source.unary('renewSnapshot', { snapshotIds: [snapshotId], leaseMs }, limits());
          renewedAt = Date.now();
        }
      }
      if (batch.last) break;
    }
    progress.deleted += await local.dropRest(highestEtag);
    const theirs = await source.unary('checksum', { mapVersion, start: partition.start, end: partition.end, includeEtag: true, snapshotId, replica: false }, limits());
    const mine = await target.checksum(partition.start, partition.end, { includeEtag: true });
    if (theirs.digest !== mine.toHex() || theirs.count !== mine.count) {
      throw new StoreError(
        'STORE_SYNC_MISMATCH',
        `the copy of partition ${partition.id} from ${source.address} does not match its snapshot: ${mine.count} rows, digest ${mine.toHex().slice(0, 16)}… here vs ${theirs.count} rows, digest ${theirs.digest.slice(0, 16)}… there`,
        { context: { partition: partition.id } },
      );
    }
    options.onProgress?.({ ...progress });
    return { ...progress, digest: mine.toHex() };
  } finally {
    await source.unary('releaseSnapshot', { snapshotIds: [snapshotId] }, limits()).catch(() => undefined);
  }
}

/**
 * The local replica's rows in key order, read from one iterator opened before the copy writes, and
 * deleted (CAS on their etag) when the source's stream passes them without holding them.
 */
function localRows(target: PartitionStore, partition: Partition, signal: AbortSignal | undefined): {
  dropMissingBefore: (entries: readonly { key: Buffer }[], highestEtag: number) => Promise<number>;
  dropRest: (highestEtag: number) => Promise<number>;
} {
  const iterator = target.scan(partition.start, partition.end, { batchSize: 1000, signal });
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
  const drop = async (entry: StoredEntry, highestEtag: number): Promise<number> => {
    if (entry.etag > highestEtag) return 0;
    return (await target.delete(entry.key, entry.etag).catch((err: unknown) => {
      // A forward changed it meanwhile: it is newer than the snapshot, so it stays.
      if (err instanceof StoreError && err.code === 'STORE_ETAG_MISMATCH') return false;
      throw err;
    }))
      ? 1
      : 0;
  };
  return {
    async dropMissingBefore(entries, highestEtag) {
      for (const e of entries) seen.add(e.key.toString('latin1'));
      const last = entries[entries.length - 1]!.key;
      let deleted = 0;
      while (await fill()) {
        const head = buffered[0]!;
        if (Buffer.compare(head.key, last) > 0) break;
        buffered.shift();
        if (!seen.has(head.key.toString('latin1'))) deleted += await drop(head, highestEtag);
      }
      // Only keys at or after the next batch's first key can still match.
      seen.clear();
      return deleted;
    },
    async dropRest(highestEtag) {
      let deleted = 0;
      while (await fill()) deleted += await drop(buffered.shift()!, highestEtag);
      return deleted;
    },
  };
}

