import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createLogger, findFreePort } from '../../common/index.js';
import { MetricsServer, type ClusterView, type JobsView, type NodeView, type PartitionView } from '../../metrics-server/index.js';
import { Key, StoreClient, StoreRouter } from '../../store/index.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';
import { StoreCluster, sortedRows } from '../helpers/store-cluster.js';

const logger = createLogger({ level: 'warn', pretty: false });

/** Runs `fn` over `items`, at most `width` at a time. */
async function bounded<T>(items: readonly T[], width: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += width) await Promise.all(items.slice(i, i + width).map(fn));
}

async function getJson<T>(base: string, path: string): Promise<{ status: number; body: T }> {
  const res = await fetch(new URL(path, base));
  return { status: res.status, body: (await res.json()) as T };
}

describe('metrics server against a real 3-node cluster (partition figures, rates, /metrics, unreachable nodes)', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  /** The client's routing core: its channels, for raw calls. */
  let router: StoreRouter;
  let server: MetricsServer;
  /** The keys that should be live, by hex. */
  const live = new Map<string, Buffer>();

  beforeAll(async () => {
    // A short sweep interval so expired entries leave the counts quickly.
    cluster = await StoreCluster.start({ nodes: 3, partitions: 6, extraArgs: ['--sweep-interval', '200ms', '--metrics-port', '0'] });
    // Plain calls, so the node's RPC counts name Get and Put (not MultiStream).
    router = new StoreRouter({ seeds: cluster.seeds, pointStreams: false });
    client = new StoreClient(router);
    // Polled by hand (the first poll runs at start), so every test knows which samples exist.
    server = await MetricsServer.start({ seeds: cluster.seeds, port: 0, intervalMs: 3_600_000, logger });
    await server.poller.waitUntilReady();
  });

  afterAll(async () => {
    await server?.close();
    client?.close();
    await cluster?.close();
  });

  const partitions = async (): Promise<PartitionView[]> => (await getJson<{ partitions: PartitionView[] }>(server.url, 'api/partitions')).body.partitions;

  it('reports per-partition counts within 1% of exact after inserts, overwrites, deletes and TTL expiry', async () => {
    const inserted = sortedRows(20_000);
    await client.bulkPutAll(inserted);
    const all = inserted.flat();
    for (const r of all) live.set(r.key.toString('hex'), r.key);

    // Overwrites: a quarter of the keys in bulk, some more one by one; neither changes the count.
    await client.bulkPutAll([all.filter((_, i) => i % 4 === 0).map((r) => ({ key: r.key, value: Buffer.alloc(50, 1) }))]);
    await bounded(all.filter((_, i) => i % 97 === 1), 32, (r) => client.put(Key.fromBytes(r.key), Buffer.from('overwritten')));

    // Deletes.
    const deleted = all.filter((_, i) => i % 7 === 3);
    await bounded(deleted, 32, (r) => client.delete(Key.fromBytes(r.key)));
    for (const r of deleted) live.delete(r.key.toString('hex'));

    // TTL: new keys in bulk and by put, and live keys overwritten with a TTL — all expire.
    // (A bulk row already expired when it arrives is skipped, so each batch gets its expiry just before it is sent.)
    const fresh = Array.from({ length: 3000 }, () => randomBytes(16)).filter((k) => !live.has(k.toString('hex'))).sort(Buffer.compare);
    await client.bulkPutAll([fresh.map((key) => ({ key, value: Buffer.from('short-lived'), expiresAtMs: Date.now() + 1000 }))]);
    await bounded(Array.from({ length: 300 }, () => randomBytes(12)), 32, (key) => client.put(Key.fromBytes(key), Buffer.from('ttl'), { ttlMs: 400 }));
    const doomed = all.filter((r, i) => i % 11 === 5 && live.has(r.key.toString('hex')));
    const doomedExpiry = Date.now() + 1000;
    await client.bulkPutAll([doomed.map((r) => ({ key: r.key, value: r.value, expiresAtMs: doomedExpiry }))]);
    expect(Date.now(), 'the TTL overwrite took longer than the TTL').toBeLessThan(doomedExpiry);
    for (const r of doomed) live.delete(r.key.toString('hex'));

    const map = await client.map();
    const exact = new Map<number, number>(map.partitions.map((p) => [p.id, 0]));
    for (const key of live.values()) exact.set(map.lookup(key).id, exact.get(map.lookup(key).id)! + 1);
    // Expired entries count until the sweeper (every 200 ms here) removes them: wait for that.
    await vi.waitFor(
      async () => {
        await server.poller.poll();
        const seen = await partitions();
        expect(seen.map((p) => p.id).sort()).toEqual([...exact.keys()].sort());
        for (const p of seen) {
          const want = exact.get(p.id)!;
          expect(p.status).toBe('ok');
          expect(Math.abs(p.entries! - want), `partition ${p.id}: reported ${p.entries}, exact ${want}`).toBeLessThanOrEqual(Math.floor(want * 0.01));
        }
      },
      { timeout: 20_000, interval: 250 },
    );
    const { body: totals } = await getJson<ClusterView>(server.url, 'api/cluster');
    expect(Math.abs(totals.entries - live.size)).toBeLessThanOrEqual(Math.floor(live.size * 0.01));
    expect(totals).toMatchObject({ ready: true, mapVersion: 1, partitions: 6, nodes: 3, nodesUp: 3, stalePartitions: 0, unknownPartitions: 0 });
    expect(totals.logicalBytes).toBeGreaterThan(live.size * 100);
  });

  it('derives write rates from the last two polls: only the written partition moved', async () => {
    await server.poller.poll();
    // 1000 new keys inside one partition (evenly split: partition 2 starts at 0x5555).
    const map = await client.map();
    const target = map.lookup(Buffer.from([0x60, 0x00]));
    const rows = Array.from({ length: 1000 }, (_, i) => ({ key: Buffer.concat([Buffer.from([0x60, 0x00, 0xab]), Buffer.from(String(i).padStart(6, '0'))]), value: Buffer.alloc(20, 7) }));
    await client.bulkPutAll([rows]);
    for (const r of rows) live.set(r.key.toString('hex'), r.key);
    let read = 0;
    for await (const batch of client.scanAll(target.start, target.end)) read += batch.length;
    await server.poller.poll();
    for (const p of await partitions()) {
      expect(p.rates, `partition ${p.id}`).not.toBeNull();
      if (p.id === target.id) {
        expect(p.rates).toMatchObject({ wrote: true });
        expect(p.rates!.entriesPerSecond).toBeCloseTo((1000 * 1000) / p.rates!.intervalMs, 0);
        expect(p.rates!.writesPerSecond).toBeCloseTo((1000 * 1000) / p.rates!.intervalMs, 0);
        expect(read).toBeGreaterThanOrEqual(1000);
        expect(p.rates!.readsPerSecond).toBeCloseTo((read * 1000) / p.rates!.intervalMs, 0);
        expect(p.lastWriteMs).toBeGreaterThan(Date.now() - 60_000);
      } else {
        expect(p.rates).toMatchObject({ wrote: false, entriesPerSecond: 0, logicalBytesPerSecond: 0, writesPerSecond: 0, readsPerSecond: 0 });
      }
    }
  });

  it('/metrics is valid Prometheus text whose partition gauges match the JSON', async () => {
    await server.poller.poll();
    const text = await (await fetch(new URL('metrics', server.url))).text();
    const families = parsePrometheusText(text);
    const parts = await partitions();
    const entries = families.get('shardpipe_partition_entries')!;
    expect(entries.type).toBe('gauge');
    expect(entries.samples).toHaveLength(6);
    for (const p of parts) {
      expect(sampleValue(families, 'shardpipe_partition_entries', { partition: String(p.id), node: p.node })).toBe(p.entries);
      expect(sampleValue(families, 'shardpipe_partition_logical_bytes', { partition: String(p.id) })).toBe(p.logicalBytes);
    }
    for (const node of cluster.seeds) expect(sampleValue(families, 'shardpipe_node_up', { node })).toBe(1);
    expect(sampleValue(families, 'shardpipe_cluster_entries')).toBe(parts.reduce((s, p) => s + p.entries!, 0));
    expect(sampleValue(families, 'shardpipe_cluster_map_version')).toBe(1);
    expect(families.get('shardpipe_metrics_poll_duration_seconds')!.type).toBe('histogram');
    expect(sampleValue(families, 'shardpipe_metrics_poll_duration_seconds_count', { outcome: 'ok' })).toBeGreaterThanOrEqual(3);
    expect(families.has('process_cpu_seconds_total')).toBe(true);
    expect(families.has('nodejs_eventloop_lag_seconds')).toBe(true);
  });

  it('caps partition labels: beyond maxPartitionSeries, partitions are summed per node into partition="_other"', async () => {
    const capped = await MetricsServer.start({ seeds: cluster.seeds, port: 0, intervalMs: 3_600_000, maxPartitionSeries: 2, logger });
    try {
      await capped.poller.waitUntilReady();
      const families = parsePrometheusText(await (await fetch(new URL('metrics', capped.url))).text());
      const samples = families.get('shardpipe_partition_entries')!.samples;
      expect(new Set(samples.map((s) => s.labels.partition))).toEqual(new Set(['0', '1', '_other']));
      // Partitions 2–5 live on all three nodes (round-robin), so "_other" has one series per node.
      expect(samples.filter((s) => s.labels.partition === '_other')).toHaveLength(3);
      expect(samples.reduce((s, x) => s + x.value, 0)).toBe(sampleValue(families, 'shardpipe_cluster_entries'));
      expect(sampleValue(families, 'shardpipe_partition_series_folded')).toBe(4);
    } finally {
      await capped.close();
    }
  });

  it('a store node serves its own /metrics: RPC counts and latencies by method and gRPC status', async () => {
    const node = cluster.nodes[0]!;
    const map = await client.map();
    const owned = map.partitionsOf(node.address)[0]!;
    // One refused call: a map version the node does not have yet.
    await expect(router.connection(node.address).unary('get', { mapVersion: 999, key: Buffer.concat([owned.start, Buffer.from('x')]), fields: [] }, { deadline: Date.now() + 5000 })).rejects.toMatchObject({
      code: 'STORE_NODE_MAP_BEHIND',
    });
    for await (const batch of client.scanAll(owned.start, owned.end, { limit: 10 })) expect(batch.length).toBeGreaterThan(0);
    const url = `http://127.0.0.1:${String(node.ready.metricsPort)}/metrics`;
    const families = parsePrometheusText(await (await fetch(url)).text());
    expect(families.get('shardpipe_store_rpc_total')!.type).toBe('counter');
    expect(sampleValue(families, 'shardpipe_store_rpc_total', { method: 'BulkInsert', code: 'OK' })).toBeGreaterThan(0);
    expect(sampleValue(families, 'shardpipe_store_rpc_total', { method: 'Put', code: 'OK' })).toBeGreaterThan(0);
    expect(sampleValue(families, 'shardpipe_store_rpc_total', { method: 'PartitionStats', code: 'OK' })).toBeGreaterThanOrEqual(3);
    expect(sampleValue(families, 'shardpipe_store_rpc_total', { method: 'Get', code: 'FAILED_PRECONDITION' })).toBe(1);
    expect(sampleValue(families, 'shardpipe_store_rpc_total', { method: 'Scan', code: 'OK' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(families, 'shardpipe_store_rpc_duration_seconds_count', { method: 'Get', code: 'FAILED_PRECONDITION' })).toBe(1);
    expect(families.has('process_resident_memory_bytes')).toBe(true);
  });

  it('answers bad shard queries with 400 and a message that says what to send', async () => {
    for (const query of ['', '?targetRows=abc', '?targetRows=0', '?targetRows=1.5', '?targetRows=10&targetBytes=10', '?rows=10', '?targetRows=1&targetRows=2']) {
      const { status, body } = await getJson<{ error: { code: string; message: string } }>(server.url, `api/shards${query}`);
      expect(status, query).toBe(400);
      expect(body.error.code).toBe('METRICS_INVALID_QUERY');
      expect(body.error.message).toContain('/api/shards?targetRows=');
    }
  });

  // Runs last: it stops a node.
  it('shows a stopped node as unreachable, with its partitions\' last figures and their age — not zeros', async () => {
    await server.poller.poll();
    const victim = cluster.nodes[1]!;
    const before = (await partitions()).filter((p) => p.node === victim.address);
    expect(before.length).toBe(2);
    expect(before.every((p) => p.status === 'ok' && p.entries! > 0)).toBe(true);
    const { body: totalsBefore } = await getJson<ClusterView>(server.url, 'api/cluster');
    await victim.stop();
    const stoppedAt = Date.now();

    const result = await server.poller.poll();
    expect(result).toMatchObject({ ok: true, nodesUp: 2, nodesDown: 1 });
    const after = (await partitions()).filter((p) => p.node === victim.address);
    for (const p of after) {
      const was = before.find((b) => b.id === p.id)!;
      expect(p).toMatchObject({ status: 'unreachable', entries: was.entries, logicalBytes: was.logicalBytes, sampledAtMs: was.sampledAtMs, rates: null });
      expect(p.ageMs!).toBeGreaterThanOrEqual(Date.now() - stoppedAt);
    }
    const { body: nodes } = await getJson<{ nodes: NodeView[] }>(server.url, 'api/nodes');
    const down = nodes.nodes.find((n) => n.node === victim.address)!;
    expect(down.up).toBe(false);
    expect(down.error).toBeTruthy();
    expect(nodes.nodes.filter((n) => n.up).length).toBe(2);

    const { body: totals } = await getJson<ClusterView>(server.url, 'api/cluster');
    expect(totals).toMatchObject({ nodesUp: 2, stalePartitions: 2, entries: totalsBefore.entries });
    const families = parsePrometheusText(await (await fetch(new URL('metrics', server.url))).text());
    expect(sampleValue(families, 'shardpipe_node_up', { node: victim.address })).toBe(0);
    for (const p of after) expect(sampleValue(families, 'shardpipe_partition_entries', { partition: String(p.id) })).toBe(p.entries);
    expect((await fetch(new URL('readyz', server.url))).status).toBe(200);
  });
});

describe('metrics server without store nodes or Redis', () => {
  it('is alive but not ready, and refuses shard plans with 503 METRICS_NOT_READY', async () => {
    const nowhere = `127.0.0.1:${await findFreePort()}`;
    const server = await MetricsServer.start({ seeds: [nowhere], port: 0, intervalMs: 3_600_000, pollTimeoutMs: 1000, logger });
    try {
      const result = await server.poller.poll();
      expect(result.ok).toBe(false);
      expect(result.error).toContain(nowhere);
      expect((await fetch(new URL('healthz', server.url))).status).toBe(200);
      const ready = await getJson<{ ready: boolean; reason: string }>(server.url, 'readyz');
      expect(ready.status).toBe(503);
      expect(ready.body.reason).toContain(nowhere);
      const plan = await getJson<{ error: { code: string } }>(server.url, 'api/shards?targetRows=10');
      expect(plan).toEqual({ status: 503, body: { error: expect.objectContaining({ code: 'METRICS_NOT_READY' }) } });
      const { body: totals } = await getJson<ClusterView>(server.url, 'api/cluster');
      expect(totals).toMatchObject({ ready: false, mapVersion: null, partitions: 0, entries: 0 });
      expect((await fetch(new URL('api/nope', server.url))).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('without Redis the jobs panel says so; with a Redis that is down it says unreachable, quickly', async () => {
    const nowhere = `127.0.0.1:${await findFreePort()}`;
    const plain = await MetricsServer.start({ seeds: [nowhere], port: 0, intervalMs: 3_600_000, pollTimeoutMs: 1000, logger });
    try {
      expect(await getJson(plain.url, 'api/jobs')).toEqual({ status: 200, body: { redis: 'not-configured', error: null, queues: [] } });
      const board = await fetch(new URL('queues', plain.url));
      expect(board.status).toBe(404);
      expect(await board.text()).toContain('no Redis configured');
    } finally {
      await plain.close();
    }
    const deadRedis = `redis://127.0.0.1:${await findFreePort()}`;
    const withDeadRedis = await MetricsServer.start({ seeds: [nowhere], port: 0, intervalMs: 3_600_000, pollTimeoutMs: 1000, redisUrl: deadRedis, logger });
    try {
      const started = Date.now();
      const { status, body } = await getJson<JobsView>(withDeadRedis.url, 'api/jobs');
      expect(Date.now() - started).toBeLessThan(5000);
      expect(status).toBe(200);
      expect(body.redis).toBe('unreachable');
      expect(body.error).toBeTruthy();
    } finally {
      await withDeadRedis.close();
    }
  });
});
