import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../common/index.js';
import { Key, successor } from './key.js';
import { METADATA_CALLER_MAP_VERSION, METADATA_MAP_FROM } from './grpc-errors.js';
import { NodeConnection, type CallLimits, type StoreCredentials } from './node-connection.js';
import { PartitionMap, type Partition } from './partition-map.js';
import type { BulkRowInput, StoredEntry } from './partition-store.js';
import { bulkPutAll, type BulkPutOptions, type BulkPutResult } from './bulk-writer.js';
import { RangeDigest } from './range-digest.js';
import { planShards, type PartitionSize, type ShardRange, type ShardTarget } from './shard-planner.js';
import type { StoredRecord } from './record.js';
import { StoreError } from './store-errors.js';
import type { ScanRequest } from './proto/gen/shardpipe/store/v1/store.js';

/** Options of the thick client. Times in milliseconds. */
export interface StoreClientOptions {
  /** Addresses (HOST:PORT) of nodes to fetch the partition map from. At least one. */
  seeds: readonly string[];
  /** Deadline of one RPC attempt. Default 10000. */
  rpcDeadlineMs?: number;
  /** Budget of a whole operation including retries and map refreshes. Default 30000. */
  operationTimeoutMs?: number;
  /** First retry delay; doubles per attempt, with full jitter. Default 50. */
  retryBaseMs?: number;
  /** Cap of one retry delay. Default 2000. */
  retryMaxMs?: number;
  /** Token and TLS for every node (see StoreCredentials). Default: plaintext, no token. */
  credentials?: StoreCredentials;
  logger?: Logger;
}

/** Options every call takes. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Overrides the client's operation budget for this call. */
  timeoutMs?: number;
}

export interface ClientPutOptions extends CallOptions {
  /** Compare-and-set against this etag (0 = the key must not exist). */
  expectedEtag?: number;
  /** Time to live in ms. */
  ttlMs?: number;
}

export interface ScanOptions extends CallOptions {
  /** Most entries in all; 0 or absent = no limit. */
  limit?: number;
  /** Entries per streamed batch. Default 1000. */
  batchSize?: number;
  /** Read each partition from its snapshot (see openSnapshots); every partition touched needs one. */
  snapshots?: readonly SnapshotLease[];
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
    | { ok: true; mapVersion: number; partitions: Array<{ id: number; approxCount: number; logicalBytes: number; diskBytes: number; lastWriteMs: number; reads: number; writes: number }> }
    | { ok: false; error: StoreError };
}

/** Where to continue an operation after a failed attempt. */
type Recovery = 'retry-now' | 'retry-after-backoff' | 'fail';

/**
 * The thick client: fetches the partition map from the seeds, routes each key to its owner over one
 * channel per node, refreshes the map on FAILED_PRECONDITION and retries UNAVAILABLE (node down,
 * partition recovering from a write fault) and STORE_OVERLOADED (after the node's retry hint) with
 * backoff and jitter within the operation's deadline.
 */
export class StoreClient {
  private readonly seeds: readonly string[];
  private readonly rpcDeadlineMs: number;
  private readonly operationTimeoutMs: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly logger: Logger | undefined;
  private readonly credentials: StoreCredentials;
  private readonly connections = new Map<string, NodeConnection>();
  private currentMap: PartitionMap | undefined;
  /** A node known to hold `currentMap` (it answered with it, or installed it): named to lagging nodes. */
  private mapSource: string | undefined;
  private refreshing: Promise<PartitionMap> | undefined;
  private closed = false;

  constructor(options: StoreClientOptions) {
    if (options.seeds.length === 0) throw new TypeError('StoreClient needs at least one seed node (HOST:PORT)');
    this.seeds = [...options.seeds];
    this.rpcDeadlineMs = options.rpcDeadlineMs ?? 10_000;
    this.operationTimeoutMs = options.operationTimeoutMs ?? 30_000;
    this.retryBaseMs = options.retryBaseMs ?? 50;
    this.retryMaxMs = options.retryMaxMs ?? 2000;
    this.logger = options.logger;
    this.credentials = { ...options.credentials };
  }

  /** The map in use, fetching it first if needed. */
  async map(options: CallOptions = {}): Promise<PartitionMap> {
    return this.currentMap ?? this.refreshMap(options);
  }

  /**
   * Fetches the newest map any reachable node has: seeds first, then nodes of the known map.
   * Concurrent callers share one fetch.
   */
  refreshMap(options: CallOptions = {}): Promise<PartitionMap> {
    this.refreshing ??= this.fetchMap(options).finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  async get(key: Key, options: CallOptions = {}): Promise<StoredRecord | undefined> {
    const response = await this.routed(key.bytes, options, (conn, mapVersion, limits) =>
      conn.unary('get', { mapVersion, key: key.bytes }, limits),
    );
    return response.found && response.entry ? fromEntry(response.entry) : undefined;
  }

  /** Writes a value; rejects with STORE_ETAG_MISMATCH (carrying `currentEtag`) when a CAS fails. */
  async put(key: Key, value: Buffer, options: ClientPutOptions = {}): Promise<StoredRecord> {
    const response = await this.routed(key.bytes, options, (conn, mapVersion, limits) =>
      conn.unary('put', { mapVersion, key: key.bytes, value, expectedEtag: options.expectedEtag, ttlMs: options.ttlMs ?? 0 }, limits),
    );
    return { value, etag: response.etag, updatedAtMs: response.updatedAtMs, expiresAtMs: response.expiresAtMs };
  }

  /** Deletes a key; resolves whether a live entry was deleted. */
  async delete(key: Key, options: CallOptions & { expectedEtag?: number } = {}): Promise<boolean> {
    const response = await this.routed(key.bytes, options, (conn, mapVersion, limits) =>
      conn.unary('delete', { mapVersion, key: key.bytes, expectedEtag: options.expectedEtag }, limits),
    );
    return response.deleted;
  }

  /**
   * Streams the live entries of `[start, end)` (empty = unbounded) in key order across partitions
   * and nodes, until `limit` or the end. Each partition's part reads one snapshot; a failed stream
   * resumes after the last entry received.
   */
  async *scanAll(start: Buffer, end: Buffer, options: ScanOptions = {}): AsyncGenerator<StoredEntry[]> {
    let cursor: Buffer | undefined = start;
    let remaining = options.limit && options.limit > 0 ? options.limit : Infinity;
    // Streams run as long as the reader pulls: no per-RPC deadline unless the caller sets a budget.
    const streamDeadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    let retryDeadline = Date.now() + this.budget(options);
    for (let tries = 0; cursor !== undefined && remaining > 0; ) {
      let map: PartitionMap | undefined;
      let node = 'seeds';
      let next: Buffer | undefined = cursor;
      try {
        map = await this.map(options);
        const partition = map.lookup(cursor);
        node = partition.node;
        const request: ScanRequest = {
          mapVersion: map.version,
          start: cursor,
          end,
          limit: Number.isFinite(remaining) ? remaining : 0,
          batchSize: options.batchSize ?? 1000,
          snapshotId: snapshotFor(options.snapshots, partition),
        };
        for await (const batch of this.connection(node).scan(request, { deadline: streamDeadline, signal: options.signal })) {
          if (batch.entries.length > 0) {
            const entries = batch.entries.map((e) => ({ key: e.key, ...fromEntry(e) }));
            // Resume after what was handed out if the stream breaks.
            next = successor(entries[entries.length - 1]!.key);
            cursor = next;
            remaining -= entries.length;
            tries = 0;
            retryDeadline = Date.now() + this.budget(options);
            yield entries;
          }
          if (batch.last) {
            next = batch.next.length > 0 ? batch.next : undefined;
            break;
          }
        }
        cursor = next;
      } catch (err) {
        await this.afterFailure(toStoreError(err), map, node, tries++, retryDeadline, options);
      }
    }
  }

  /** Writes a sorted stream of row chunks with pipelined BulkInsert calls (see `bulkPutAll`). */
  bulkPutAll(source: AsyncIterable<readonly BulkRowInput[]> | Iterable<readonly BulkRowInput[]>, options: BulkPutOptions = {}): Promise<BulkPutResult> {
    return bulkPutAll(this, source, options);
  }

  /** Order-independent digest and count of `[start, end)` across partitions (see RangeDigest). */
  async checksum(start: Buffer, end: Buffer, options: CallOptions & { includeEtag?: boolean; snapshots?: readonly SnapshotLease[] } = {}): Promise<RangeDigest> {
    const total = new RangeDigest();
    let cursor: Buffer | undefined = start;
    while (cursor !== undefined) {
      const from: Buffer = cursor;
      const response = await this.routed(from, options, (conn, mapVersion, limits, partition) =>
        conn.unary('checksum', { mapVersion, start: from, end, includeEtag: options.includeEtag ?? false, snapshotId: snapshotFor(options.snapshots, partition) }, limits),
      );
      total.merge(RangeDigest.fromHex(response.digest, response.count));
      cursor = response.next.length > 0 ? response.next : undefined;
    }
    return total;
  }

  /**
   * Up to `parts - 1` sorted keys cutting the part of `[start, end)` inside the partition that owns
   * `start` into pieces of about equal entry count, estimated by the node without a full scan.
   */
  async splitKeys(start: Buffer, end: Buffer, parts: number, options: CallOptions = {}): Promise<Buffer[]> {
    if (parts < 2) return [];
    const response = await this.routed(start, options, (conn, mapVersion, limits) => conn.unary('splitKeys', { mapVersion, start, end, parts }, limits));
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
    const deadline = Date.now() + this.budget(options);
    const takenAtMs = Date.now();
    const answers = await Promise.allSettled(
      map.nodes().map(async (node) => {
        const r = await this.connection(node).unary('openSnapshot', { mapVersion: map.version, partitionIds: [], leaseMs: options.leaseMs }, this.limits(deadline, options));
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
    const deadline = Date.now() + this.budget(options);
    await Promise.all(
      [...groupByNode(leases)].map(([node, ids]) => this.connection(node).unary('renewSnapshot', { snapshotIds: ids, leaseMs }, this.limits(deadline, options))),
    );
  }

  /** Releases leases, best effort: a node that is gone lets them run out on their own. */
  async releaseSnapshots(leases: readonly SnapshotLease[], options: CallOptions = {}): Promise<void> {
    const deadline = Date.now() + Math.min(this.budget(options), this.rpcDeadlineMs);
    await Promise.all(
      [...groupByNode(leases)].map(([node, ids]) =>
        this.connection(node)
          .unary('releaseSnapshot', { snapshotIds: ids }, this.limits(deadline, options))
          .catch((err: unknown) => this.logger?.warn({ err, node }, 'could not release snapshots; their leases will run out')),
      ),
    );
  }

  /** Every node's partition stats; a node that does not answer is reported, not dropped. */
  async stats(options: CallOptions = {}): Promise<NodeStats[]> {
    const map = await this.map(options);
    return Promise.all(
      map.nodes().map(async (node): Promise<NodeStats> => {
        try {
          const r = await this.connection(node).unary('partitionStats', { partitionIds: [] }, this.limits(Date.now() + this.budget(options), options));
          return { node, result: { ok: true, mapVersion: r.mapVersion, partitions: r.partitions } };
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
    const deadline = Date.now() + this.budget(options);
    const results = await Promise.all(
      map.nodes().map(async (node) => {
        try {
          const r = await this.connection(node).unary('setPartitionMap', { map: map.toProto(), force: options.force ?? false }, this.limits(deadline, options));
          return { node, installed: r.installed };
        } catch (err) {
          return { node, installed: false, error: err as StoreError };
        }
      }),
    );
    if (!this.currentMap || this.currentMap.version < map.version || options.force) {
      this.currentMap = map;
      this.mapSource = results.find((r) => r.error === undefined)?.node;
    }
    return results;
  }

  /** Closes every channel. Idempotent. */
  close(): void {
    this.closed = true;
    for (const conn of this.connections.values()) conn.close();
    this.connections.clear();
  }

  /** The channel to `address`, created once and reused. */
  connection(address: string): NodeConnection {
    if (this.closed) throw new StoreError('STORE_CLOSED', 'the store client is closed');
    let conn = this.connections.get(address);
    if (!conn) {
      conn = new NodeConnection(address, this.credentials);
      this.connections.set(address, conn);
    }
    return conn;
  }

  /**
   * Runs `attempt` against the owner of `key` under the current map, recovering from stale maps,
   * nodes behind on the map, and unavailable nodes until the operation's deadline.
   */
  async routed<T>(
    key: Buffer,
    options: CallOptions,
    attempt: (conn: NodeConnection, mapVersion: number, limits: CallLimits, partition: Partition) => Promise<T>,
  ): Promise<T> {
    const deadline = Date.now() + this.budget(options);
    for (let tries = 0; ; tries++) {
      let map: PartitionMap | undefined;
      let node = 'seeds';
      try {
        map = await this.map(options);
        const partition = map.lookup(key);
        node = partition.node;
        return await attempt(this.connection(node), map.version, this.limits(deadline, options), partition);
      } catch (err) {
        await this.afterFailure(toStoreError(err), map, node, tries, deadline, options);
      }
    }
  }

  /** Decides after a failed attempt: rethrows when final, otherwise recovers and waits as needed. */
  private async afterFailure(error: StoreError, map: PartitionMap | undefined, node: string, tries: number, deadline: number, options: CallOptions): Promise<void> {
    const recovery = await this.recover(error, map, node, options);
    if (recovery === 'fail' || options.signal?.aborted) throw error;
    if (Date.now() >= deadline) throw givingUp(error, node, tries + 1);
    if (recovery === 'retry-after-backoff') {
      const backoff = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.min(tries, 16)) * Math.random();
      // An overloaded node says when it expects room; spread the callers around that time.
      const delay = error.retryAfterMs === undefined ? backoff : Math.max(backoff, error.retryAfterMs * (0.5 + Math.random()));
      this.logger?.debug({ node, code: error.code, delayMs: Math.round(delay) }, 'retrying store call');
      await sleep(Math.min(delay, Math.max(0, deadline - Date.now())), undefined, { signal: options.signal });
    }
  }

  private async recover(error: StoreError, map: PartitionMap | undefined, node: string, options: CallOptions): Promise<Recovery> {
    switch (error.code) {
      case 'STORE_STALE_MAP':
      case 'STORE_NOT_OWNER':
        // The node knows a newer map (or the key moved): take the newest map around.
        await this.refreshMap(options).catch(() => undefined);
        return this.currentMap && map && this.currentMap.version > map.version ? 'retry-now' : 'retry-after-backoff';
      case 'STORE_NODE_MAP_BEHIND':
        return map === undefined ? 'retry-after-backoff' : this.healLaggingNode(node, map, options);
      case 'STORE_UNAVAILABLE':
      case 'STORE_PARTITION_UNAVAILABLE':
      case 'STORE_OVERLOADED':
      case 'STORE_DEADLINE_EXCEEDED':
        return 'retry-after-backoff';
      default:
        return 'fail';
    }
  }

  /**
   * A node missed a map install: name a node of the map that has our map, and the node fetches it
   * from there itself, so a data client needs no admin role to heal it.
   */
  private async healLaggingNode(node: string, map: PartitionMap, options: CallOptions): Promise<Recovery> {
    const others = map.nodes().filter((n) => n !== node);
    const source = this.mapSource !== undefined && others.includes(this.mapSource) ? this.mapSource : others[0];
    if (source === undefined) return 'retry-after-backoff';
    const headers = { [METADATA_MAP_FROM]: source, [METADATA_CALLER_MAP_VERSION]: String(map.version) };
    const theirs = await this.connection(node)
      .unary('getPartitionMap', {}, this.limits(Date.now() + this.rpcDeadlineMs, options), headers)
      .catch((err: unknown) => this.logger?.warn({ err, node, source }, 'could not bring a node up to the current map'));
    return theirs !== undefined && theirs.version >= map.version ? 'retry-now' : 'retry-after-backoff';
  }

  private async fetchMap(options: CallOptions): Promise<PartitionMap> {
    const candidates = [...new Set([...this.seeds, ...(this.currentMap?.nodes() ?? [])])];
    const deadline = Date.now() + Math.min(this.budget(options), this.rpcDeadlineMs);
    const answers = await Promise.all(
      candidates.map(async (address) => {
        try {
          return PartitionMap.fromProto(await this.connection(address).unary('getPartitionMap', {}, this.limits(deadline, options)));
        } catch (err) {
          return err as StoreError;
        }
      }),
    );
    const maps = answers.filter((a): a is PartitionMap => a instanceof PartitionMap);
    if (maps.length === 0) {
      const reasons = answers.map((a, i) => `${candidates[i]}: ${(a as Error).message}`).join('; ');
      // Refused credentials will not pass on a retry: say so with their code.
      const refused = (answers as StoreError[]).find((e) => e.code === 'STORE_UNAUTHENTICATED' || e.code === 'STORE_PERMISSION_DENIED');
      if (refused !== undefined) throw new StoreError(refused.code, `the store nodes refused to give the partition map (${reasons})`, { cause: refused });
      throw new StoreError('STORE_UNAVAILABLE', `no store node answered for the partition map (${reasons})`);
    }
    const newest = maps.reduce((a, b) => (b.version > a.version ? b : a));
    if (!this.currentMap || newest.version > this.currentMap.version) {
      if (this.currentMap) this.logger?.info({ from: this.currentMap.version, to: newest.version }, 'partition map refreshed');
      this.currentMap = newest;
      this.mapSource = candidates[answers.indexOf(newest)];
    }
    return this.currentMap;
  }

  private budget(options: CallOptions): number {
    return options.timeoutMs ?? this.operationTimeoutMs;
  }

  private limits(deadline: number, options: CallOptions): CallLimits {
    return { deadline: Math.min(deadline, Date.now() + this.rpcDeadlineMs), signal: options.signal };
  }
}

/**
 * The error for an operation whose retry budget ran out. A last attempt cut short by the budget
 * says DEADLINE_EXCEEDED even when the node was simply down; both say which node and how often.
 */
function givingUp(error: StoreError, node: string, attempts: number): StoreError {
  if (!error.retryable) return error;
  const code = error.code === 'STORE_DEADLINE_EXCEEDED' ? 'STORE_UNAVAILABLE' : error.code;
  return new StoreError(code, `store node ${node} did not complete the call after ${attempts} attempt(s): ${error.message}`, {
    cause: error,
    context: { node, attempts },
    mapVersion: error.mapVersion,
  });
}

/** The snapshot id to read `partition` from, when reading snapshots at all. */
function snapshotFor(leases: readonly SnapshotLease[] | undefined, partition: Partition): string {
  if (leases === undefined) return '';
  const lease = leases.find((l) => l.partitionId === partition.id && l.node === partition.node);
  if (lease === undefined) {
    throw new StoreError('STORE_SNAPSHOT_NOT_FOUND', `no snapshot of partition ${partition.id} on ${partition.node}: the partition map changed since the snapshots were taken`);
  }
  return lease.snapshotId;
}

function groupByNode(leases: readonly SnapshotLease[]): Map<string, string[]> {
  const byNode = new Map<string, string[]>();
  for (const l of leases) byNode.set(l.node, [...(byNode.get(l.node) ?? []), l.snapshotId]);
  return byNode;
}

function toStoreError(err: unknown): StoreError {
  return err instanceof StoreError ? err : new StoreError('STORE_UNKNOWN', String(err), { cause: err });
}

function fromEntry(e: { value: Buffer; etag: number; updatedAtMs: number; expiresAtMs: number }): StoredRecord {
  return { value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs };
}
