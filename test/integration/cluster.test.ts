import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Key, RangeDigest, StoreClient, StoreError, StoreRouter } from '../../store/index.js';
import { StoreCluster, runCli, sortedRows } from '../helpers/store-cluster.js';

describe('a 3-node cluster of real node processes', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  /** The client's routing core: its channels, for raw calls. */
  let router: StoreRouter;
  const ROWS = 30_000;
  const expected = new RangeDigest();

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 3, partitions: 6 });
    router = new StoreRouter({ seeds: [cluster.seeds[1]!] });
    client = new StoreClient(router);
  });

  afterAll(async () => {
    client?.close();
    await cluster?.close();
  });

  it('bulk-loads sorted rows across partitions and reads back exactly them', async () => {
    const chunks = sortedRows(ROWS);
    for (const chunk of chunks) for (const r of chunk) expected.add(r.key, r.value, 0);
    let lastAck = 0;
    const result = await client.bulkPutAll(chunks, {
      maxInFlight: 8,
      onAck: (rows) => {
        expect(rows).toBeGreaterThan(lastAck);
        lastAck = rows;
      },
    });
    expect(result.rows).toBe(ROWS);
    expect(lastAck).toBe(ROWS);
    expect(result.partialAccepts).toBe(0);

    const scanned = new RangeDigest();
    let previous: Buffer | undefined;
    for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0), { batchSize: 700 })) {
      for (const e of batch) {
        if (previous) expect(Buffer.compare(previous, e.key)).toBeLessThan(0);
        previous = e.key;
        scanned.add(e.key, e.value, e.expiresAtMs);
      }
    }
    expect(scanned.count).toBe(ROWS);
    expect(scanned.toHex()).toBe(expected.toHex());
    const checksum = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));
    expect(checksum.count).toBe(ROWS);
    expect(checksum.toHex()).toBe(expected.toHex());
  });

  it('re-sending the same rows is harmless: same contents, same count', async () => {
    await client.bulkPutAll(sortedRows(ROWS));
    const checksum = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));
    expect(checksum.toHex()).toBe(expected.toHex());
    const stats = await client.stats();
    const total = stats.reduce((s, n) => s + (n.result.ok ? n.result.partitions.reduce((a, p) => a + p.approxCount, 0) : 0), 0);
    expect(total).toBe(ROWS);
  });

  it('a batch that spans partitions is accepted as a prefix and the client resends the rest', async () => {
    // Send straight to the node a batch that crosses from partition 0 into partition 1.
    const map = await client.map();
    const boundary = map.partitions[1]!.start;
    const before = Buffer.from([0x00, 0x01]);
    const after = Buffer.concat([boundary, Buffer.from('after')]);
    const conn = router.connection(map.partitions[0]!.node);
    const response = await conn.unary(
      'bulkInsert',
      { mapVersion: map.version, rows: [before, after].map((key) => ({ key, value: Buffer.from('v'), etag: 0, updatedAtMs: 0, expiresAtMs: 0 })) },
      { deadline: Date.now() + 5000 },
    );
    expect(response.accepted).toBe(1);
    expect(response.nextKey.equals(after)).toBe(true);
    expect(response.timing).toBeDefined();
  });

  it('scans a sub-range with a limit across a partition boundary', async () => {
    const map = await client.map();
    const start = map.partitions[2]!.start;
    const entries = [];
    for await (const batch of client.scanAll(start, Buffer.alloc(0), { limit: 12_000, batchSize: 1000 })) entries.push(...batch);
    expect(entries.length).toBe(12_000);
    expect(Buffer.compare(entries[0]!.key, start)).toBeGreaterThanOrEqual(0);
    const crossed = entries.some((e) => Buffer.compare(e.key, map.partitions[3]!.start) >= 0);
    expect(crossed).toBe(true);
  });

  it('kv CLI: put, get --json, CAS conflict exit 4, del, missing key exit 3, scan --json, stats --json', async () => {
    const seeds = ['--seeds', cluster.seeds.join(',')];
    const put = await runCli(['kv', 'put', 'cli:key', 'hello', '--json', ...seeds]);
    expect(put.code, put.stderr).toBe(0);
    const etag = JSON.parse(put.stdout).etag as number;
    const get = await runCli(['kv', 'get', 'cli:key', '--json', ...seeds]);
    expect(get.code).toBe(0);
    const doc = JSON.parse(get.stdout);
    expect(Object.keys(doc).sort()).toEqual(['etag', 'expiresAt', 'key', 'updatedAt', 'value']);
    expect(doc).toMatchObject({ key: 'cli:key', value: 'hello', etag, expiresAt: null });

    const conflict = await runCli(['kv', 'put', 'cli:key', 'x', '--etag', String(etag + 1000), ...seeds]);
    expect(conflict.code).toBe(4);
    expect(conflict.stderr).toContain(`current etag is ${etag}`);
    const cas = await runCli(['kv', 'put', 'cli:key', 'world', '--etag', String(etag), ...seeds]);
    expect(cas.code, cas.stderr).toBe(0);

    const b64 = await runCli(['kv', 'get', Buffer.from('cli:key').toString('base64'), '--encoding', 'base64', ...seeds]);
    expect(b64.stdout.trim()).toBe(Buffer.from('world').toString('base64'));

    const scan = await runCli(['kv', 'scan', '--start', 'cli:', '--end', 'cli;', '--json', ...seeds]);
    expect(scan.code).toBe(0);
    expect(scan.stdout.trim().split('\n').map((l) => JSON.parse(l).key)).toEqual(['cli:key']);

    expect((await runCli(['kv', 'del', 'cli:key', ...seeds])).code).toBe(0);
    const missing = await runCli(['kv', 'get', 'cli:key', ...seeds]);
    expect(missing.code).toBe(3);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);

    const stats = await runCli(['stats', '--json'], { SHARDPIPE_SEEDS: cluster.seeds[0]! });
    expect(stats.code, stats.stderr).toBe(0);
    const table = JSON.parse(stats.stdout);
    expect(table.mapVersion).toBe(1);
    expect(table.partitions).toHaveLength(6);
    expect(Object.keys(table.partitions[0]).sort()).toEqual(['approxCount', 'bytes', 'end', 'id', 'node', 'start']);
    // The bulk rows plus the one row the prefix test wrote; the CLI's key was deleted again.
    expect(table.partitions.reduce((s: number, p: { approxCount: number }) => s + p.approxCount, 0)).toBe(ROWS + 1);
  });

  it('an invalid key typed on the command line is a usage error (exit 64) with the reason', async () => {
    const r = await runCli(['kv', 'get', '', '--seeds', cluster.seeds[0]!]);
    expect(r.code).toBe(64);
    expect(r.stderr).toContain('key is empty');
  });

  it('CAS holds under concurrency: 40 clients doing read-modify-write increments end at exactly 40', async () => {
    const key = Key.fromUtf8('cas:counter');
    const clients = Array.from({ length: 40 }, (_, i) => new StoreClient({ seeds: [cluster.seeds[i % 3]!] }));
    try {
      await Promise.all(
        clients.map(async (c) => {
          for (;;) {
            const current = await c.get(key);
            const n = current ? Number(current.value.toString()) : 0;
            try {
              await c.put(key, Buffer.from(String(n + 1)), { expectedEtag: current?.etag ?? 0 });
              return;
            } catch (err) {
              if (!(err instanceof StoreError && err.code === 'STORE_ETAG_MISMATCH')) throw err;
            }
          }
        }),
      );
    } finally {
      for (const c of clients) c.close();
    }
    const final = await client.get(key);
    expect(final?.value.toString()).toBe('40');
  });
});
