import { Key, PartitionMap, RangeDigest, StoreClient, StoreNode, StoreRouter, type BulkRowInput, type SnapshotLease, type PatchMode, type StoredEntry, type StoredRecord } from '../../store/index.js';
import { StoreCluster } from './store-cluster.js';
import { makeTempDir } from './temp-dir.js';

/** Options of a contract read: a range's part may come from the target's snapshots. */
export interface TargetReadOptions<S> {
  snapshots?: S;
}

/**
 * What the store contract (test/integration/store-contract.test.ts) asks of a store: the same
 * operations whether it is one node in-process, a cluster over gRPC, or (later) chains of replicas.
 * Keys are raw bytes; errors are StoreError with the contract's codes.
 */
export interface StoreTarget<S = unknown> {
  /** The map served: at least three partitions cut by `PartitionMap.evenlySplit`. */
  readonly map: PartitionMap;
  /** With `fields` (JSON Pointers): a partial get of the JSON document. */
  get(key: Buffer, fields?: readonly string[]): Promise<StoredRecord | undefined>;
  /** Patches the JSON document of `key` (merge by default); the new record. */
  patch(key: Buffer, patch: Buffer, options?: { mode?: PatchMode; ifEtag?: number; ttlMs?: number }): Promise<StoredRecord>;
  put(key: Buffer, value: Buffer, options?: { expectedEtag?: number; ttlMs?: number }): Promise<StoredRecord>;
  delete(key: Buffer, options?: { expectedEtag?: number }): Promise<boolean>;
  /** One BulkInsert call: writes the longest prefix of `rows` inside the first row's partition. */
  bulkInsert(rows: readonly BulkRowInput[]): Promise<{ accepted: number }>;
  /** Live entries of `[start, end)` (empty = unbounded) in key order, across partitions. */
  scan(start: Buffer, end: Buffer, options?: TargetReadOptions<S> & { limit?: number; batchSize?: number }): Promise<StoredEntry[]>;
  checksum(start: Buffer, end: Buffer, options?: TargetReadOptions<S> & { includeEtag?: boolean }): Promise<RangeDigest>;
  /** Pins every partition for `leaseMs`; `rows` by partition id as the snapshots counted them. */
  openSnapshots(leaseMs: number): Promise<{ snapshots: S; rows: Map<number, number> }>;
  releaseSnapshots(snapshots: S): Promise<void>;
  /** Entries and logical bytes by partition id. */
  stats(): Promise<Map<number, { count: number; logicalBytes: number }>>;
  close(): Promise<void>;
}

const PARTITIONS = 3;

/** One StoreNode in this process owning every partition, on a fresh LevelDB folder. */
export async function nodeTarget(): Promise<StoreTarget<Map<number, string>>> {
  const dir = await makeTempDir('shardpipe-contract-');
  const address = '127.0.0.1:1';
  const node = await StoreNode.open({ node: address, dataDir: dir.path, initialMap: PartitionMap.evenlySplit(1, [address], PARTITIONS), syncWrites: false });
  const version = (): number => node.map.version;

  /** Walks `[start, end)` partition by partition, as the gRPC service's callers do. */
  async function* parts(start: Buffer, end: Buffer): AsyncGenerator<ReturnType<StoreNode['clampRange']>> {
    for (let cursor: Buffer | undefined = start; cursor !== undefined; ) {
      const range = node.clampRange(version(), cursor, end);
      yield range;
      cursor = range.next.length > 0 ? range.next : undefined;
    }
  }

  return {
    map: node.map,
    get: (key, fields) => node.get(version(), key, fields),
    patch: (key, patch, options = {}) => node.patch(version(), key, patch, { mode: options.mode ?? 'merge', ifEtag: options.ifEtag, ttlMs: options.ttlMs }),
    put: (key, value, options = {}) => node.put(version(), key, value, options),
    delete: (key, options = {}) => node.delete(version(), key, options.expectedEtag),
    bulkInsert: (rows) => node.bulkInsert(version(), rows),
    async scan(start, end, options = {}) {
      const out: StoredEntry[] = [];
      let remaining = options.limit ?? 0;
      for await (const range of parts(start, end)) {
        for await (const batch of node.scan(range, { limit: remaining, batchSize: options.batchSize, snapshotId: options.snapshots?.get(range.partition.id) })) out.push(...batch);
        if (options.limit !== undefined) {
          remaining = options.limit - out.length;
          if (remaining <= 0) break;
        }
      }
      return out;
    },
    async checksum(start, end, options = {}) {
      const total = new RangeDigest();
      for await (const range of parts(start, end)) {
        total.merge(await node.checksum(range, { includeEtag: options.includeEtag, snapshotId: options.snapshots?.get(range.partition.id) }));
      }
      return total;
    },
    async openSnapshots(leaseMs) {
      const leases = await node.openSnapshots(version(), [], leaseMs);
      return { snapshots: new Map(leases.map((l) => [l.partitionId, l.snapshotId])), rows: new Map(leases.map((l) => [l.partitionId, l.count])) };
    },
    async releaseSnapshots(snapshots) {
      await node.releaseSnapshots([...snapshots.values()]);
    },
    async stats() {
      return new Map((await node.stats()).map(({ partition, stats }) => [partition.id, { count: stats.count, logicalBytes: stats.logicalBytes }]));
    },
    async close() {
      await node.close();
      await dir.remove();
    },
  };
}

/**
 * A cluster of real node processes reached over gRPC through StoreClient (BulkInsert through its
 * routing core, so one call's longest-prefix answer is seen as is). `start` may start any cluster
 * whose nodes serve the Store service: another kind of cluster is one more line in the contract.
 */
export async function clientTarget(start: Promise<Pick<StoreCluster, 'seeds' | 'close'>> = StoreCluster.start({ nodes: 2, partitions: PARTITIONS, extraArgs: ['--no-sync'] })): Promise<StoreTarget<SnapshotLease[]>> {
  const cluster = await start;
  const router = new StoreRouter({ seeds: cluster.seeds });
  const client = new StoreClient(router);
  const map = await client.map();
  return {
    map,
    get: (key, fields) => client.get(keyOf(key), fields === undefined ? {} : { fields }),
    async patch(key, patch, options = {}) {
      const r = await client.patch(keyOf(key), patch, { ...options, returnDocument: true });
      return { value: r.document!, etag: r.etag, updatedAtMs: r.updatedAtMs, expiresAtMs: r.expiresAtMs };
    },
    async put(key, value, options = {}) {
      // The stored record only (the contract compares it with reads); the reply's timing is not part of it.
      const { timing: _timing, ...record } = await client.put(keyOf(key), value, options);
      return record;
    },
    delete: (key, options = {}) => client.delete(keyOf(key), options),
    bulkInsert: (rows) =>
      router.routed(rows[0]!.key, {}, (conn, mapVersion, limits) =>
        conn.unary('bulkInsert', { mapVersion, rows: rows.map((r) => ({ key: r.key, value: r.value, etag: r.etag ?? 0, updatedAtMs: r.updatedAtMs ?? 0, expiresAtMs: r.expiresAtMs ?? 0 })) }, limits),
      ),
    async scan(start, end, options = {}) {
      const out: StoredEntry[] = [];
      for await (const batch of client.scanAll(start, end, { limit: options.limit, batchSize: options.batchSize, snapshots: options.snapshots })) out.push(...batch);
      return out;
    },
    checksum: (start, end, options = {}) => client.checksum(start, end, { includeEtag: options.includeEtag, snapshots: options.snapshots }),
    async openSnapshots(leaseMs) {
      const set = await client.openSnapshots({ leaseMs });
      return { snapshots: set.leases, rows: new Map(set.leases.map((l) => [l.partitionId, l.rows])) };
    },
    releaseSnapshots: (leases) => client.releaseSnapshots(leases),
    async stats() {
      const out = new Map<number, { count: number; logicalBytes: number }>();
      for (const { node, result } of await client.stats()) {
        if (!result.ok) throw new Error(`node ${node} gave no stats: ${result.error.message}`);
        for (const p of result.partitions) out.set(p.id, { count: p.approxCount, logicalBytes: p.logicalBytes });
      }
      return out;
    },
    async close() {
      client.close();
      await cluster.close();
    },
  };
}

function keyOf(bytes: Buffer): Key {
  return Key.fromBytes(bytes);
}
