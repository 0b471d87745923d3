import { Key, successor } from './key.js';
import { readNodeOf, type PartitionMap, type Partition } from './partition-map.js';
import type { BulkRowInput, StoredEntry } from './partition-store.js';
import { bulkPutAll, type BulkPutOptions, type BulkPutResult, type BulkPutter, type BulkSource } from './bulk-writer.js';
import { RangeDigest } from './range-digest.js';
import { planShards, type PartitionSize, type ShardRange, type ShardTarget } from './shard-planner.js';
import type { StoredRecord } from './record.js';
import { StoreError } from './store-errors.js';
import { PATCH_MODES, type PatchMode } from './json-document.js';
import { StoreRouter, toStoreError, type CallOptions, type StoreRouterOptions } from './store-router.js';
import type { ScanBatch, ScanRequest, ServerTiming } from './proto/gen/shardpipe/store/v1/store.js';
import { PackedRows } from './packed-rows.js';
import { CHECKSUM_PAGE_ENTRIES } from './checksum-page.js';

/** Options of the thick client: those of its routing core (see StoreRouterOptions). */
export type StoreClientOptions = StoreRouterOptions;

export interface ClientPutOptions extends CallOptions {
  /** Compare-and-set against this etag (0 = the key must not exist). */
  expectedEtag?: number;
  /** Time to live in ms. */
  ttlMs?: number;
}

export interface ClientGetOptions extends CallOptions {
  /**
   * Partial get of a JSON document: JSON Pointers (RFC 6901, `/a`, `/b/c`, `/tags/0`); the value
   * read is a JSON document holding only those paths (missing ones left out). Default: the whole value.
   */
  fields?: readonly string[];
}

export interface ClientPatchOptions extends CallOptions {
  /** `merge` (JSON Merge Patch, RFC 7396) or `json-patch` (JSON Patch, RFC 6902). Default `merge`. */
  mode?: PatchMode;
  /** Compare-and-set: patch only if the document's etag is this. */
  ifEtag?: number;
  /** Absent = keep the document's expiry; 0 = no expiry; otherwise expire this many ms from now. */
  ttlMs?: number;
  /** Also return the patched document. Default false. */
  returnDocument?: boolean;
}

/**
 * Where a write's time went, as its head reported it (absent when the node predates the field).
 * In a chain the head answers only after the tail's ack: `forwardMs` is that wait, `hops` each
 * replica below the head (nearest first) with its own durable write and its wait for the rest.
 */
export interface WriteReplyTiming {
  /** The head's write, from queued to durable (ms). */
  writeMs: number;
  /** From the head's write being durable to the tail's ack (ms; 0 for a chain of one). */
  forwardMs: number;
  hops: Array<{ node: string; writeMs: number; forwardMs: number }>;
}

/** The outcome of a put: the stored record, and the write's timing. */
export interface PutResult extends StoredRecord {
  timing?: WriteReplyTiming;
}

/** The outcome of a patch: the new record's etag and times, and the document when asked for. */
export interface PatchResult {
  etag: number;
  updatedAtMs: number;
  expiresAtMs: number;
  /** The patched document (UTF-8 JSON), with `returnDocument`. */
  document?: Buffer;
  timing?: WriteReplyTiming;
}

export interface ScanOptions extends CallOptions {
  /** Most entries in all; 0 or absent = no limit. */
  limit?: number;
  /** Entries per streamed batch. Default 1000. */
  batchSize?: number;
  /** Read each partition from its snapshot (see openSnapshots); every partition touched needs one. */
  snapshots?: readonly SnapshotLease[];
  /**
   * How long one step may keep failing (retries after a broken stream or a map change) before the
   * scan gives up, counted again after every batch received; the whole scan is then bounded only by
   * `timeoutMs`, if set. Default: `timeoutMs`, else the client's operation budget.
   */
  retryBudgetMs?: number;
}

/** A snapshot one node holds of one partition for a lease (see `openSnapshots`). */
export interface SnapshotLease {
  partitionId: number;
  node: string;
  snapshotId: string;
  /** Entries in the partition at the snapshot (expired entries count until swept). */
  rows: number;
  /** When the node releases it unless renewed (Unix ms, node clock). */
  expiresAtMs: number;
}

export interface SnapshotSet {
  mapVersion: number;
  /** When the first node was asked (Unix ms); every snapshot was taken after it. */
  takenAtMs: number;
  leases: SnapshotLease[];
}

export interface NodeStats {
  node: string;
  /** The node's answer, or why it gave none. */
  result:
    | {
        ok: true;
        mapVersion: number;
        partitions: Array<{ id: number; approxCount: number; logicalBytes: number; diskBytes: number; lastWriteMs: number; reads: number; writes: number }>;
        /** Every replica the node holds (any place in its chain): state, epoch, last sequence applied, unacknowledged forwards, sync progress. */
        replicas: Array<{ partitionId: number; state: string; epoch: number; lastSeq: number; unacked: number; syncRows: number; syncBytes: number; syncTotalRows: number }>;
      }
    | { ok: false; error: StoreError };
}

/**
 * The thick client: the store's operations over its routing core (StoreRouter), which fetches the
 * partition map from the seeds, routes each key to its owner over one channel per node, refreshes
 * the map on FAILED_PRECONDITION and retries UNAVAILABLE (node down, partition recovering from a
 * write fault) and STORE_OVERLOADED (after the node's retry hint) with backoff and jitter within
 * the operation's deadline. Concurrent get/put/delete calls to one node travel together in Multi
 * calls (see PointCoalescer), each answered as its plain call would be.
 */
export class StoreClient implements BulkPutter {
  private readonly router: StoreRouter;

  /** A client over its own router, or over `router` (sharing its channels and map; `close()` closes it). */
  constructor(options: StoreClientOptions | StoreRouter) {
    this.router = options instanceof StoreRouter ? options : new StoreRouter(options);
  }

  /** The map in use, fetching it first if needed. */
  map(options: CallOptions = {}): Promise<PartitionMap> {
    return this.router.map(options);
  }

  /**
   * Fetches the newest map any reachable node has: seeds first, then nodes of the known map.
   * Concurrent callers share one fetch.
   */
  refreshMap(options: CallOptions = {}): Promise<PartitionMap> {
    return this.router.refreshMap(options);
  }

  /** The live record of a key, or undefined; with `fields`, its JSON document reduced to them (STORE_NOT_JSON if it is not JSON). */
  async get(key: Key, options: ClientGetOptions = {}): Promise<StoredRecord | undefined> {
    const fields = options.fields === undefined ? [] : [...options.fields];
    const response = await this.router.routed(key.bytes, options, (conn, mapVersion, limits) =>
      conn.point('get', { mapVersion, key: key.bytes, fields }, limits),
      'read',
    );
    return response.found && response.entry ? fromEntry(response.entry) : undefined;
  }

  /** Writes a value; rejects with STORE_ETAG_MISMATCH (carrying `currentEtag`) when a CAS fails. */
  async put(key: Key, value: Buffer, options: ClientPutOptions = {}): Promise<PutResult> {
    const cas = casAttempts(options.expectedEtag);
    const response = await this.router.routed(key.bytes, options, (conn, mapVersion, limits) =>
      cas(conn.point('put', { mapVersion, key: key.bytes, value, expectedEtag: options.expectedEtag, ttlMs: options.ttlMs ?? 0 }, limits)),
    );
    const result: PutResult = { value, etag: response.etag, updatedAtMs: response.updatedAtMs, expiresAtMs: response.expiresAtMs };
    if (response.timing !== undefined) result.timing = replyTiming(response.timing);
    return result;
  }

  /**
   * Patches the JSON document of a key on its head, atomically (README "JSON documents"); routed
   * and retried as put is. A JSON Patch without `ifEtag` is not idempotent: if an attempt got no
   * answer and the retry applied it again, it ran twice — pass `ifEtag` where that matters.
   */
  async patch(key: Key, patch: Buffer | string | object, options: ClientPatchOptions = {}): Promise<PatchResult> {
    const mode = options.mode ?? 'merge';
    if (!PATCH_MODES.includes(mode)) throw new TypeError(`patch mode must be ${PATCH_MODES.join(' or ')}, got ${String(mode)}`);
    const body = Buffer.isBuffer(patch) ? patch : Buffer.from(typeof patch === 'string' ? patch : JSON.stringify(patch));
    const cas = casAttempts(options.ifEtag);
    const response = await this.router.routed(key.bytes, options, (conn, mapVersion, limits) =>
      cas(
        conn.unary(
          'patch',
          { mapVersion, key: key.bytes, patch: body, mode: PATCH_MODES.indexOf(mode), ifEtag: options.ifEtag, ttlMs: options.ttlMs, returnDocument: options.returnDocument ?? false },
          limits,
        ),
      ),
    );
    return {
      etag: response.etag,
      updatedAtMs: response.updatedAtMs,
      expiresAtMs: response.expiresAtMs,
      ...(options.returnDocument ? { document: response.document } : {}),
      ...(response.timing === undefined ? {} : { timing: replyTiming(response.timing) }),
    };
  }

  /** Deletes a key; resolves whether a live entry was deleted. */
  async delete(key: Key, options: CallOptions & { expectedEtag?: number } = {}): Promise<boolean> {
    const cas = casAttempts(options.expectedEtag);
    const response = await this.router.routed(key.bytes, options, (conn, mapVersion, limits) =>
      cas(conn.point('delete', { mapVersion, key: key.bytes, expectedEtag: options.expectedEtag }, limits)),
    );
    return response.deleted;
  }

  /**
   * Streams the live entries of `[start, end)` (empty = unbounded) in key order across partitions
   * and nodes, until `limit` or the end. Each partition's part reads one snapshot; a failed stream
   * resumes after the last entry received.
   */
  scanAll(start: Buffer, end: Buffer, options: ScanOptions = {}): AsyncGenerator<StoredEntry[]> {
    return this.scanRange(start, end, options, false, (batch) => {
      if (batch.entries.length === 0) return undefined;
      const entries = batch.entries.map((e) => ({ key: e.key, ...fromEntry(e) }));
      return { out: entries, count: entries.length, lastKey: entries[entries.length - 1]!.key };
    });
  }

  /**
   * `scanAll` with each batch as one PackedRows (format 1, with etag, updated_at_ms and
   * expires_at_ms in its metadata) whose keys and values are views of the received message: no
   * object per entry. Nodes that answer per entry (from before `ScanRequest.packed`) are packed here.
   */
  scanAllPacked(start: Buffer, end: Buffer, options: ScanOptions = {}): AsyncGenerator<PackedRows> {
    return this.scanRange(start, end, options, true, (batch) => {
      let rows: PackedRows;
      if (batch.packed !== undefined) rows = PackedRows.fromMessage(batch.packed, 'ScanBatch.packed');
      else if (batch.entries.length > 0) rows = PackedRows.fromRows(batch.entries);
      else return undefined;
      if (rows.count === 0) return undefined;
      return { out: rows, count: rows.count, lastKey: rows.key(rows.count - 1) };
    });
  }

  /**
   * The scan loop behind scanAll and scanAllPacked: streams partition after partition, each part
   * from one snapshot, resuming after the last entry handed out when a stream breaks.
   */
  private async *scanRange<T>(start: Buffer, end: Buffer, options: ScanOptions, packed: boolean, take: (batch: ScanBatch) => { out: T; count: number; lastKey: Buffer } | undefined): AsyncGenerator<T> {
    let cursor: Buffer | undefined = start;
    let remaining = options.limit && options.limit > 0 ? options.limit : Infinity;
    // Streams run as long as the reader pulls: no per-RPC deadline unless the caller sets a budget.
    const streamDeadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    const stepOptions = options.retryBudgetMs === undefined ? options : { ...options, timeoutMs: options.retryBudgetMs };
    let retryDeadline = this.router.deadline(stepOptions);
    for (let tries = 0; cursor !== undefined && remaining > 0; ) {
      let map: PartitionMap | undefined;
      let node = 'seeds';
      let next: Buffer | undefined = cursor;
      try {
        map = await this.map(options);
        const partition = map.lookup(cursor);
        node = readNodeOf(partition);
        const request: ScanRequest = {
          mapVersion: map.version,
          start: cursor,
          end,
          limit: Number.isFinite(remaining) ? remaining : 0,
          batchSize: options.batchSize ?? 1000,
          snapshotId: snapshotFor(options.snapshots, partition),
          ...(packed ? { packed: true } : {}),
        };
        for await (const batch of this.router.connection(node).scan(request, { deadline: streamDeadline, signal: options.signal })) {
          const got = take(batch);
          if (got !== undefined) {
            // Resume after what was handed out if the stream breaks.
            next = successor(got.lastKey);
            cursor = next;
            remaining -= got.count;
            tries = 0;
            retryDeadline = this.router.deadline(stepOptions);
            yield got.out;
          }
          if (batch.last) {
            next = batch.next.length > 0 ? batch.next : undefined;
            break;
          }
        }
        cursor = next;
      } catch (err) {
        await this.router.afterFailure(toStoreError(err), { map, node, tries: tries++, deadline: retryDeadline }, options);
      }
    }
  }

  /** Writes a sorted stream of row chunks with pipelined BulkInsert calls (see `bulkPutAll`). */
  bulkPutAll(source: BulkSource, options: BulkPutOptions = {}): Promise<BulkPutResult> {
    return bulkPutAll(this.router, source, options);
  }

  /** Order-independent digest and count of `[start, end)` across partitions (see RangeDigest). */
  async checksum(start: Buffer, end: Buffer, options: CallOptions & { includeEtag?: boolean; snapshots?: readonly SnapshotLease[]; pageEntries?: number } = {}): Promise<RangeDigest> {
    const total = new RangeDigest();
    let cursor: Buffer | undefined = start;
    while (cursor !== undefined) {
      const from: Buffer = cursor;
      const response = await this.router.routed(from, options, (conn, mapVersion, limits, partition) =>
        conn.unary('checksum', { mapVersion, start: from, end, includeEtag: options.includeEtag ?? false, snapshotId: snapshotFor(options.snapshots, partition), replica: false, maxEntries: options.pageEntries ?? CHECKSUM_PAGE_ENTRIES }, limits),
        'read',
      );
      total.merge(RangeDigest.fromHex(response.digest, response.count));
      cursor = response.next.length > 0 ? response.next : undefined;
    }
    return total;
  }

  /**
   * The digest (with etags) of `[start, end)` inside `partition` as held by the replica on `node`,
   * whatever its place in the chain, with the replica's state and the partition's epoch as that
   * node sees them (what `cluster check` compares). One call, no retries: a replica that does not
   * answer is the caller's finding.
   */
  async replicaChecksum(node: string, partition: Partition, start: Buffer, end: Buffer, options: CallOptions = {}): Promise<{ digest: RangeDigest; state: string; epoch: number; chain: { stream: string; seq: number } }> {
    const map = await this.map(options);
    const from = Buffer.compare(start, partition.start) < 0 ? partition.start : start;
    const r = await this.router.connection(node).unary('checksum', { mapVersion: map.version, start: from, end, includeEtag: true, snapshotId: '', replica: true, maxEntries: 0 }, this.router.limits(this.router.deadline(options), options));
    // The digest is of one snapshot of the replica: exactly its data at this chain position.
    return { digest: RangeDigest.fromHex(r.digest, r.count), state: r.replicaState, epoch: r.epoch, chain: { stream: r.chainStream, seq: r.chainSeq } };
  }

  /**
   * Up to `parts - 1` sorted keys cutting the part of `[start, end)` inside the partition that owns
   * `start` into pieces of about equal entry count, estimated by the node without a full scan.
   */
  async splitKeys(start: Buffer, end: Buffer, parts: number, options: CallOptions = {}): Promise<Buffer[]> {
    if (parts < 2) return [];
    const response = await this.router.routed(start, options, (conn, mapVersion, limits) => conn.unary('splitKeys', { mapVersion, start, end, parts }, limits), 'read');
    return response.keys;
  }

  /** A shard plan of the whole keyspace from live partition stats (see `planShards`). */
  async planShards(target: ShardTarget, options: CallOptions = {}): Promise<ShardRange[]> {
    const map = await this.map(options);
    const rows = new Map<number, { rows: number; bytes: number }>();
    for (const { node, result } of await this.stats(options)) {
      if (!result.ok) throw new StoreError(result.error.code, `cannot plan shards: store node ${node} did not report its partitions: ${result.error.message}`, { cause: result.error });
      for (const p of result.partitions) rows.set(p.id, { rows: p.approxCount, bytes: p.logicalBytes });
    }
    const sizes: PartitionSize[] = map.partitions.map((p) => ({ id: p.id, start: p.start, end: p.end, node: p.node, rows: rows.get(p.id)?.rows ?? 0, bytes: rows.get(p.id)?.bytes ?? 0 }));
    return planShards(sizes, target, (p, parts) => this.splitKeys(p.start, p.end, parts, options), options);
  }

  /**
   * Pins a snapshot of every partition of the current map for `leaseMs`, asking all nodes at
   * once so the snapshots are as close in time as the nodes allow. All or nothing: when one node
   * fails, the snapshots already taken are released.
   */
  async openSnapshots(options: CallOptions & { leaseMs: number }): Promise<SnapshotSet> {
    const map = await this.map(options);
    const deadline = this.router.deadline(options);
    const takenAtMs = Date.now();
    const answers = await Promise.allSettled(
      map.readNodes().map(async (node) => {
        const r = await this.router.connection(node).unary('openSnapshot', { mapVersion: map.version, partitionIds: [], leaseMs: options.leaseMs }, this.router.limits(deadline, options));
        return r.snapshots.map((s): SnapshotLease => ({ partitionId: s.partitionId, node, snapshotId: s.snapshotId, rows: s.count, expiresAtMs: s.expiresAtMs }));
      }),
    );
    const leases = answers.flatMap((a) => (a.status === 'fulfilled' ? a.value : []));
    const failed = answers.find((a): a is PromiseRejectedResult => a.status === 'rejected');
    const missing = map.partitions.filter((p) => !leases.some((l) => l.partitionId === p.id));
    if (failed !== undefined || missing.length > 0) {
      await this.releaseSnapshots(leases, options);
      if (failed !== undefined) throw toStoreError(failed.reason);
      throw new StoreError('STORE_NOT_OWNER', `no node pinned partition(s) ${missing.map((p) => p.id).join(', ')}: the partition map changed meanwhile, retry`, { mapVersion: map.version });
    }
    return { mapVersion: map.version, takenAtMs, leases };
  }

  /** Extends every lease; fails with STORE_SNAPSHOT_NOT_FOUND when a node no longer holds one. */
  async renewSnapshots(leases: readonly SnapshotLease[], leaseMs: number, options: CallOptions = {}): Promise<void> {
    const deadline = this.router.deadline(options);
    await Promise.all(
      [...groupByNode(leases)].map(([node, ids]) => this.router.connection(node).unary('renewSnapshot', { snapshotIds: ids, leaseMs }, this.router.limits(deadline, options))),
    );
  }

  /** Releases leases, best effort: a node that is gone lets them run out on their own. */
  async releaseSnapshots(leases: readonly SnapshotLease[], options: CallOptions = {}): Promise<void> {
    const deadline = Math.min(this.router.deadline(options), Date.now() + this.router.rpcDeadlineMs);
    await Promise.all(
      [...groupByNode(leases)].map(([node, ids]) =>
        this.router.connection(node)
          .unary('releaseSnapshot', { snapshotIds: ids }, this.router.limits(deadline, options))
          .catch((err: unknown) => this.router.logger?.warn({ err, node }, 'could not release snapshots; their leases will run out')),
      ),
    );
  }

  /** Every node's partition stats; a node that does not answer is reported, not dropped. */
  async stats(options: CallOptions = {}): Promise<NodeStats[]> {
    const map = await this.map(options);
    return Promise.all(
      // Every replica's node, not only the tails: replica states and sync progress live on each.
      map.replicaNodes().map(async (node): Promise<NodeStats> => {
        try {
          const r = await this.router.connection(node).unary('partitionStats', { partitionIds: [] }, this.router.limits(this.router.deadline(options), options));
          return { node, result: { ok: true, mapVersion: r.mapVersion, partitions: r.partitions, replicas: r.replicas } };
        } catch (err) {
          return { node, result: { ok: false, error: err as StoreError } };
        }
      }),
    );
  }

  /**
   * Installs `map` on every node it names (admin). Nodes that already have it are fine; each
   * node's outcome is returned. Afterwards the client uses the new map. `force` installs it even
   * when its version is not 1–1,000 ahead of a node's (recovering a node whose version is wrong).
   */
  async installMap(map: PartitionMap, options: CallOptions & { force?: boolean } = {}): Promise<Array<{ node: string; installed: boolean; error?: StoreError }>> {
    const deadline = this.router.deadline(options);
    const results = await Promise.all(
      map.nodes().map(async (node) => {
        try {
          const r = await this.router.connection(node).unary('setPartitionMap', { map: map.toProto(), force: options.force ?? false }, this.router.limits(deadline, options));
          return { node, installed: r.installed };
        } catch (err) {
          return { node, installed: false, error: err as StoreError };
        }
      }),
    );
    this.router.adoptMap(map, results.find((r) => r.error === undefined)?.node, options.force);
    return results;
  }

  /** Closes every channel. Idempotent. */
  close(): void {
    this.router.close();
  }
}

/**
 * Watches the attempts of one CAS write. An attempt that ended without an answer (deadline, or the
 * node gone mid-call) may have been applied; if a later attempt then finds the etag changed, that
 * change may be this very write — so the outcome is STORE_AMBIGUOUS, not a plain mismatch (and it
 * is never applied twice: the etag check of the retry sees the first one).
 */
function casAttempts(expectedEtag: number | undefined): <T>(attempt: Promise<T>) => Promise<T> {
  if (expectedEtag === undefined) return (attempt) => attempt;
  let unknown: StoreError | undefined;
  return async (attempt) => {
    try {
      return await attempt;
    } catch (err) {
      if (!(err instanceof StoreError)) throw err;
      if (err.code === 'STORE_DEADLINE_EXCEEDED' || err.code === 'STORE_UNAVAILABLE') unknown ??= err;
      if (err.code === 'STORE_ETAG_MISMATCH' && unknown !== undefined) {
        throw new StoreError(
          'STORE_AMBIGUOUS',
          `compare-and-set with etag ${expectedEtag}: an earlier attempt got no answer (${unknown.code}) and the etag is now ${err.currentEtag ?? 'different'}: the earlier attempt may have applied it; read the key to find out`,
          { cause: err, currentEtag: err.currentEtag },
        );
      }
      throw err;
    }
  };
}

/** The snapshot id to read `partition` from, when reading snapshots at all. */
function snapshotFor(leases: readonly SnapshotLease[] | undefined, partition: Partition): string {
  if (leases === undefined) return '';
  const node = readNodeOf(partition);
  const lease = leases.find((l) => l.partitionId === partition.id && l.node === node);
  if (lease === undefined) {
    throw new StoreError('STORE_SNAPSHOT_NOT_FOUND', `no snapshot of partition ${partition.id} on ${node}: the partition map changed since the snapshots were taken`);
  }
  return lease.snapshotId;
}

function groupByNode(leases: readonly SnapshotLease[]): Map<string, string[]> {
  const byNode = new Map<string, string[]>();
  for (const l of leases) byNode.set(l.node, [...(byNode.get(l.node) ?? []), l.snapshotId]);
  return byNode;
}

function fromEntry(e: { value: Buffer; etag: number; updatedAtMs: number; expiresAtMs: number }): StoredRecord {
  return { value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs };
}

function replyTiming(t: ServerTiming): WriteReplyTiming {
  return { writeMs: t.writeMs, forwardMs: t.forwardMs, hops: t.hops.map((h) => ({ node: h.node, writeMs: h.writeMs, forwardMs: h.forwardMs })) };
}
