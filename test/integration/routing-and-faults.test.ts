import { Client, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { Key, PartitionMap, StoreClient, StoreError, StoreRouter, checkHealth, type BulkRowInput } from '../../store/index.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { StoreCluster, runCli, sortedRows } from '../helpers/store-cluster.js';

let cluster: StoreCluster | undefined;
let client: StoreClient | undefined;
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  client?.close();
  client = undefined;
  for (const c of cleanups.splice(0)) await c();
  await cluster?.close();
  cluster = undefined;
});

describe('bad requests get the right status and the node keeps serving', () => {
  it('invalid keys, oversized batch, stale map version, a key the node does not own, random bytes', async () => {
    cluster = await StoreCluster.start({ nodes: 2, partitions: 2, extraArgs: ['--max-batch-bytes', '20000', '--max-key-bytes', '64'] });
    const router = new StoreRouter({ seeds: cluster.seeds });
    client = new StoreClient(router);
    const map = await client.map();
    const owner = map.partitions[0]!.node;
    const conn = router.connection(owner);
    const limits = () => ({ deadline: Date.now() + 5000 });
    const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as StoreError);

    const empty = await failure(conn.unary('get', { mapVersion: 1, key: Buffer.alloc(0), fields: [] }, limits()));
    expect(empty?.code).toBe('STORE_INVALID_KEY');
    expect(empty?.message).toContain('key is empty');
    expect((empty?.cause as ServiceError).code).toBe(status.INVALID_ARGUMENT);

    const long = await failure(conn.unary('put', { mapVersion: 1, key: Buffer.alloc(65, 1), value: Buffer.from('v'), ttlMs: 0 }, limits()));
    expect(long?.code).toBe('STORE_INVALID_KEY');
    expect(long?.message).toContain('65 bytes, over the limit of 64');

    const rows = Array.from({ length: 300 }, (_, i) => ({ key: Buffer.from([0, 0, i >> 8, i & 255]), value: Buffer.alloc(100), etag: 0, updatedAtMs: 0, expiresAtMs: 0 }));
    const big = await failure(conn.unary('bulkInsert', { mapVersion: 1, rows }, limits()));
    expect(big?.code).toBe('STORE_BATCH_TOO_LARGE');
    expect((big?.cause as ServiceError).code).toBe(status.RESOURCE_EXHAUSTED);
    expect(big?.message).toContain('limit of 20000 bytes');

    const badRow = await failure(conn.unary('bulkInsert', { mapVersion: 1, rows: [rows[0]!, { ...rows[1]!, key: Buffer.alloc(0) }] }, limits()));
    expect(badRow?.code).toBe('STORE_INVALID_KEY');
    expect(badRow?.message).toContain('BulkInsertRequest.rows[1].key');

    const stale = await failure(conn.unary('get', { mapVersion: 0, key: Buffer.from([0, 1]), fields: [] }, limits()));
    expect(stale?.code).toBe('STORE_STALE_MAP');
    expect(stale?.mapVersion).toBe(1);
    expect((stale?.cause as ServiceError).code).toBe(status.FAILED_PRECONDITION);

    const foreignKey = map.partitions[1]!.start;
    const notOwner = await failure(conn.unary('get', { mapVersion: 1, key: foreignKey, fields: [] }, limits()));
    expect(notOwner?.code).toBe('STORE_NOT_OWNER');
    expect(notOwner?.mapVersion).toBe(1);
    expect((notOwner?.cause as ServiceError).code).toBe(status.FAILED_PRECONDITION);

    const raw = new Client(owner, credentials.createInsecure());
    const garbage = await new Promise<ServiceError | null>((resolve) =>
      raw.makeUnaryRequest('/shardpipe.store.v1.Store/BulkInsert', (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x12, 0x99]), (err) => resolve(err)),
    );
    raw.close();
    expect(garbage).not.toBeNull();
    expect([status.INTERNAL, status.INVALID_ARGUMENT]).toContain(garbage!.code);

    expect(await checkHealth(owner)).toBe('SERVING');
    await client.put(Key.fromUtf8('still-serving'), Buffer.from('yes'));
    expect((await client.get(Key.fromUtf8('still-serving')))?.value.toString()).toBe('yes');
  });
});

describe('partition map changes mid-traffic', () => {
  it('clients refresh on a stale map, bring a lagging node up to date, and nothing is lost', async () => {
    cluster = await StoreCluster.start({ nodes: 3, partitions: 6 });
    client = new StoreClient({ seeds: [cluster.seeds[0]!] });
    const v1 = await client.map();
    // v2 moves the (unwritten) last partition to another node and bumps the version.
    const last = v1.partitions[5]!;
    const v2 = PartitionMap.create(2, v1.partitions.map((p) => (p.id === last.id ? { id: p.id, start: p.start, end: p.end, node: v1.partitions[0]!.node } : p)));
    const rows: BulkRowInput[][] = sortedRows(24_000, 7, 500).map((chunk) => chunk.filter((r) => Buffer.compare(r.key, last.start) < 0));
    const total = rows.reduce((s, c) => s + c.length, 0);

    const admin = new StoreRouter({ seeds: cluster.seeds });
    cleanups.push(async () => admin.close());
    let installed = false;
    const load = client.bulkPutAll(
      (async function* () {
        for (const [i, chunk] of rows.entries()) {
          if (i === Math.floor(rows.length / 3) && !installed) {
            installed = true;
            // Install on one node only: the others lag until a client hands them the map.
            await admin.connection(v1.partitions[1]!.node).unary('setPartitionMap', { map: v2.toProto(), force: false }, { deadline: Date.now() + 5000 });
          }
          yield chunk;
        }
      })(),
      { maxInFlight: 4 },
    );
    const result = await load;
    expect(result.rows).toBe(total);
    expect((await client.map()).version).toBe(2);

    const digest = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));
    expect(digest.count).toBe(total);
    const mapOut = await runCli(['cluster', 'map', '--json', '--seeds', cluster.seeds.join(',')]);
    expect(JSON.parse(mapOut.stdout).version).toBe(2);
    for (const node of cluster.seeds) {
      const m = await admin.connection(node).unary('getPartitionMap', {}, { deadline: Date.now() + 5000 });
      expect(m.version, node).toBe(2);
    }
  });

  it('a node refuses an older map and a different map under the same version', async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
    const router = new StoreRouter({ seeds: cluster.seeds });
    client = new StoreClient(router);
    const v1 = await client.map();
    const node = cluster.seeds[0]!;
    const same = await router.connection(node).unary('setPartitionMap', { map: v1.toProto(), force: false }, { deadline: Date.now() + 5000 });
    expect(same.installed).toBe(false);
    const other = PartitionMap.evenlySplit(1, [node], 3);
    const conflict = await router.connection(node).unary('setPartitionMap', { map: other.toProto(), force: false }, { deadline: Date.now() + 5000 }).catch((e: StoreError) => e);
    expect((conflict as StoreError).code).toBe('STORE_MAP_CONFLICT');
    await client.installMap(PartitionMap.evenlySplit(3, [node], 3));
    const older = await router.connection(node).unary('setPartitionMap', { map: PartitionMap.evenlySplit(2, [node], 2).toProto(), force: false }, { deadline: Date.now() + 5000 }).catch((e: StoreError) => e);
    expect((older as StoreError).code).toBe('STORE_MAP_NOT_NEWER');
    expect((older as StoreError).message).toContain('older than the installed version 3');
  });
});

describe('client behaviour with a node stopped, slow or unavailable', () => {
  it('a stopped node: calls fail with STORE_UNAVAILABLE naming it after the budget; a restart within the budget succeeds', async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 1 });
    const node = cluster.nodes[0]!;
    client = new StoreClient({ seeds: cluster.seeds, operationTimeoutMs: 800, retryBaseMs: 20 });
    await client.put(Key.fromUtf8('k'), Buffer.from('v'));
    await node.stop();
    const started = Date.now();
    const err = (await client.get(Key.fromUtf8('k')).catch((e: unknown) => e)) as StoreError;
    expect(err.code).toBe('STORE_UNAVAILABLE');
    expect(err.message).toContain(node.address);
    expect(Date.now() - started).toBeLessThan(3000);

    const patient = new StoreClient({ seeds: cluster.seeds, operationTimeoutMs: 15_000, retryBaseMs: 20, retryMaxMs: 200 });
    cleanups.push(async () => patient.close());
    const pending = patient.get(Key.fromUtf8('k'));
    await new Promise((r) => setTimeout(r, 300));
    await node.start();
    expect((await pending)?.value.toString()).toBe('v');
  });

  it('fault injection (proxy): connections reset for a while, then the client gets through', async () => {
    const { proxy, address } = await nodeBehindProxy(2);
    client = new StoreClient({ seeds: [address], operationTimeoutMs: 10_000, retryBaseMs: 20, retryMaxMs: 100 });
    await client.put(Key.fromUtf8('a'), Buffer.from('1'));
    proxy.setMode({ kind: 'reset' });
    setTimeout(() => proxy.setMode({ kind: 'pass' }), 400);
    const result = await client.bulkPutAll(sortedRows(3000));
    expect(result.rows).toBe(3000);
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(3001);
  });

  it('fault injection (proxy): a slow node makes calls time out as retryable, and they succeed once it is fast again', async () => {
    const { proxy, address } = await nodeBehindProxy(1);
    client = new StoreClient({ seeds: [address], rpcDeadlineMs: 150, operationTimeoutMs: 600, retryBaseMs: 20 });
    await client.put(Key.fromUtf8('slow'), Buffer.from('v'));
    proxy.setMode({ kind: 'delay', ms: 400 });
    const err = (await client.get(Key.fromUtf8('slow')).catch((e: unknown) => e)) as StoreError;
    expect(err).toBeInstanceOf(StoreError);
    expect(err.retryable).toBe(true);
    expect(err.message).toContain(address);
    proxy.setMode({ kind: 'pass' });
    const patient = new StoreClient({ seeds: [address], rpcDeadlineMs: 2000 });
    cleanups.push(async () => patient.close());
    expect((await patient.get(Key.fromUtf8('slow')))?.value.toString()).toBe('v');
  });
});

/** One node process that clients reach only through a FaultProxy: the map names the proxy. */
async function nodeBehindProxy(partitions: number): Promise<{ proxy: FaultProxy; address: string }> {
  const realPort = await findFreePort();
  const proxyPort = await findFreePort();
  const proxy = await FaultProxy.start(proxyPort, { host: '127.0.0.1', port: realPort });
  cleanups.push(() => proxy.close());
  const address = `127.0.0.1:${proxyPort}`;
  cluster = await StoreCluster.start({ nodes: 1, partitions, addresses: [address], extraArgs: ['--listen', `127.0.0.1:${realPort}`] });
  return { proxy, address };
}
