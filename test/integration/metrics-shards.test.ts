import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/index.js';
import { MetricsServer, type ClusterView, type ShardPlanView } from '../../metrics-server/index.js';
import { StoreClient } from '../../store/index.js';
import { keysPerShard } from '../helpers/shard-tiling.js';
import { StoreCluster } from '../helpers/store-cluster.js';

const logger = createLogger({ level: 'warn', pretty: false });
const SKEWED_ROWS = 40_000;
const OTHER_ROWS_EACH = 1_700;

/** `count` sorted 16-byte keys spread over the 2-byte prefix range [from, to), 64-byte values. */
function rowsIn(from: number, to: number, count: number): Array<{ key: Buffer; value: Buffer }> {
  return Array.from({ length: count }, (_, i) => {
    const key = Buffer.alloc(16);
    key.writeUInt16BE(from + Math.floor((i * (to - from)) / count), 0);
    key.writeUInt32BE(i, 2);
    return { key, value: Buffer.alloc(64, 0x61 + (i % 26)) };
  });
}

describe('shard plans from the metrics server on a skewed cluster (one partition holds most keys)', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  let server: MetricsServer;
  const total = SKEWED_ROWS + 3 * OTHER_ROWS_EACH;

  beforeAll(async () => {
    // 4 partitions split at 0x4000, 0x8000, 0xc000.
    cluster = await StoreCluster.start({ nodes: 2, partitions: 4 });
    client = new StoreClient({ seeds: cluster.seeds });
    const rows = [rowsIn(0x0000, 0x4000, SKEWED_ROWS), rowsIn(0x4000, 0x8000, OTHER_ROWS_EACH), rowsIn(0x8000, 0xc000, OTHER_ROWS_EACH), rowsIn(0xc000, 0x10000, OTHER_ROWS_EACH)];
    await client.bulkPutAll(rows.flat().reduce<Array<Array<{ key: Buffer; value: Buffer }>>>((chunks, row, i) => {
      if (i % 5000 === 0) chunks.push([]);
      chunks[chunks.length - 1]!.push(row);
      return chunks;
    }, []));
    server = await MetricsServer.start({ seeds: cluster.seeds, port: 0, intervalMs: 3_600_000, logger });
    await server.poller.waitUntilReady();
    await server.poller.poll();
  });

  afterAll(async () => {
    await server?.close();
    client?.close();
    await cluster?.close();
  });

  async function plan(query: string): Promise<ShardPlanView> {
    const res = await fetch(new URL(`api/shards?${query}`, server.url));
    expect(res.status, await res.clone().text()).toBe(200);
    return (await res.json()) as ShardPlanView;
  }

  /** Exact rows per shard, counted by the store (Checksum), after checking the shards tile the keyspace. */
  async function exactRows(shards: ShardPlanView['shards']): Promise<number[]> {
    expect(shards.length).toBeGreaterThan(1);
    expect(shards[0]!.start).toBe('');
    expect(shards[shards.length - 1]!.end).toBe('');
    shards.forEach((s, i) => {
      expect(s.index).toBe(i);
      if (i > 0) expect(s.start, `shard ${i} starts where shard ${i - 1} ends`).toBe(shards[i - 1]!.end);
      if (s.end !== '') expect(Buffer.compare(Buffer.from(s.start, 'hex'), Buffer.from(s.end, 'hex')), `shard ${i} is not empty or reversed`).toBeLessThan(0);
    });
    const counts: number[] = [];
    for (const s of shards) counts.push((await client.checksum(Buffer.from(s.start, 'hex'), Buffer.from(s.end, 'hex'))).count);
    // Tiling means every row is in exactly one shard.
    expect(counts.reduce((a, b) => a + b, 0)).toBe(total);
    return counts;
  }

  it('cuts the big partition at node-computed split keys and groups the small ones: every shard within ±25% of targetRows', async () => {
    const target = 5000;
    const result = await plan(`targetRows=${target}`);
    expect(result).toMatchObject({ target: { targetRows: target }, mapVersion: 1, stalePartitions: [] });
    const counts = await exactRows(result.shards);
    for (const [i, n] of counts.entries()) expect(Math.abs(n - target), `shard ${i} has ${n} rows`).toBeLessThanOrEqual(target * 0.25);
    // Partition 0 alone is cut into pieces; the three small partitions form one shard.
    expect(result.shards.filter((s) => s.partitions.length === 1 && s.partitions[0] === 0).length).toBe(SKEWED_ROWS / target);
    expect(result.shards[result.shards.length - 1]!.partitions).toEqual([1, 2, 3]);
  });

  it('plans by bytes too: every shard within ±25% of targetBytes', async () => {
    const { body: cluster } = await fetch(new URL('api/cluster', server.url)).then(async (r) => ({ body: (await r.json()) as ClusterView }));
    const bytesPerRow = cluster.logicalBytes / total;
    const target = Math.round(cluster.logicalBytes / 9);
    const result = await plan(`targetBytes=${target}`);
    const counts = await exactRows(result.shards);
    for (const [i, n] of counts.entries()) expect(Math.abs(n * bytesPerRow - target), `shard ${i} has ${n} rows`).toBeLessThanOrEqual(target * 0.25);
    expect(result.shards.reduce((s, x) => s + x.approxBytes, 0)).toBeCloseTo(cluster.logicalBytes, -3);
  });

  it('one shard for everything when the target exceeds the data; one per partition-sized piece when it is tiny', async () => {
    const whole = await plan(`targetRows=${total * 10}`);
    expect(whole.shards).toEqual([expect.objectContaining({ start: '', end: '', partitions: [0, 1, 2, 3], approxRows: total })]);
    const fine = await plan('targetRows=1000');
    const counts = await exactRows(fine.shards);
    expect(fine.shards.length).toBeGreaterThanOrEqual(40);
    for (const [i, n] of counts.entries()) expect(Math.abs(n - 1000), `shard ${i} has ${n} rows`).toBeLessThanOrEqual(1000 * 0.25);
  });
  it('targetRows=10 (the big partition needs 4,000 pieces, over SplitKeys\' 1,000 per call): a valid plan, split in stages, never 502', async () => {
    const res = await fetch(new URL('api/shards?targetRows=10', server.url));
    expect(res.status, await res.clone().text()).toBe(200);
    const { shards } = (await res.json()) as ShardPlanView;
    expect(shards.filter((s) => s.partitions.length === 1 && s.partitions[0] === 0).length).toBeGreaterThan(1000);
    // Tiling, checked by one scan instead of a checksum per shard: each key is in exactly one shard.
    const { counts, seen } = await keysPerShard(client, shards);
    expect(seen).toBe(total);
    expect(counts.filter((n) => n === 0)).toEqual([]);
    expect(Math.max(...counts)).toBeLessThanOrEqual(40);
  });

  it('a target no plan can meet (more shards than the cap) is answered 400 METRICS_PLAN_TOO_LARGE with the reason', async () => {
    const capped = await MetricsServer.start({ seeds: cluster.seeds, port: 0, intervalMs: 3_600_000, maxPlanShards: 500, logger });
    try {
      await capped.poller.waitUntilReady();
      await capped.poller.poll();
      const res = await fetch(new URL('api/shards?targetRows=10', capped.url));
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('METRICS_PLAN_TOO_LARGE');
      expect(body.error.message).toContain('more than the 500 a plan may have');
      expect(body.error.message).toMatch(/targetRows=\d+ or more/);
    } finally {
      await capped.close();
    }
  });
});
