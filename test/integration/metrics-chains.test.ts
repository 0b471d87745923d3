import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/index.js';
import { MetricsServer, type PartitionView } from '../../metrics-server/index.js';
import { Key, StoreClient } from '../../store/index.js';
import { EtcdTestCluster } from '../helpers/etcd-cluster.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';

// Real etcd, three `store start --etcd` processes, a coordinator, and the metrics server polling them.
const logger = createLogger({ level: 'warn', pretty: false });
let cluster: EtcdTestCluster | undefined;
let server: MetricsServer | undefined;
let client: StoreClient | undefined;
afterEach(async () => {
  client?.close();
  await server?.close();
  await cluster?.close();
  client = server = cluster = undefined;
});

/** Polls the metrics server's API until `test` holds for its partitions (a readiness wait with a deadline). */
async function partitionsWhen(url: string, test: (ps: PartitionView[]) => boolean, timeoutMs = 20_000): Promise<PartitionView[]> {
  const deadline = Date.now() + timeoutMs;
  let last: PartitionView[] = [];
  while (Date.now() < deadline) {
    last = ((await (await fetch(new URL('api/partitions', url))).json()) as { partitions: PartitionView[] }).partitions;
    if (test(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the metrics server's partitions did not match within ${timeoutMs} ms: ${JSON.stringify(last.map((p) => p.chain))}`);
}

describe('metrics server on a replicated cluster', () => {
  it('shows every chain with replica states, sequence numbers and lag (page API and /metrics); a SIGKILLed node leaves the chains there; a fresh node joins every chain as tail, serves, and is at the head sequence number once written to', async () => {
    cluster = await EtcdTestCluster.start({ lease: '1s' });
    await Promise.all([cluster.startNode(), cluster.startNode(), cluster.startNode()]);
    await cluster.startCoordinator();
    const init = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '3', '--replicas', '3']);
    expect(init.code, init.stderr).toBe(0);
    await Promise.all([...cluster.nodes.values()].map((n) => n.event('ready')));
    const seeds = [...cluster.nodes.keys()];
    client = new StoreClient({ seeds });
    const rows = Array.from({ length: 3000 }, (_, i) => {
      const key = Buffer.alloc(6);
      key.writeUInt16BE(Math.floor((i * 65536) / 3000));
      key.writeUInt32BE(i, 2);
      return { key, value: Buffer.from(`v${i}`) };
    });
    await client.bulkPutAll([rows], { batchMaxRows: 100 });
    for (let i = 0; i < 30; i++) await client.put(Key.fromBytes(rows[i * 100]!.key), Buffer.from(`point ${i}`));

    server = await MetricsServer.start({ seeds, port: 0, intervalMs: 300, logger });
    const url = server.url;
    // Every replica reported, each at the head's sequence number once the writes are acknowledged.
    const settled = await partitionsWhen(url, (ps) => ps.length === 3 && ps.every((p) => p.chain.length === 3 && p.chain.every((r) => r.lastSeq !== null && r.lastSeq > 0 && r.lagSequences === 0)));
    for (const p of settled) {
      expect(p.chain.map((r) => r.state)).toEqual(['serving', 'serving', 'serving']);
      expect(new Set(p.chain.map((r) => r.node)).size).toBe(3);
      expect(new Set(p.chain.map((r) => r.lastSeq)).size).toBe(1);
      expect(p.chain.every((r) => r.up === true && r.sync === null)).toBe(true);
    }
    const text = await (await fetch(new URL('metrics', url))).text();
    const families = parsePrometheusText(text);
    const series = (name: string) => families.get(name)?.samples ?? [];
    expect(series('shardpipe_cluster_replica_state').filter((s) => s.labels.state === 'serving')).toHaveLength(9);
    expect(series('shardpipe_cluster_replica_lag_sequences')).toHaveLength(9);
    expect(series('shardpipe_cluster_replica_lag_sequences').every((s) => s.value === 0)).toBe(true);
    expect(series('shardpipe_cluster_chain_replicas').map((s) => s.value)).toEqual([3, 3, 3]);

    // A dead node leaves every chain; the page shows chains of two.
    const victim = settled[0]!.chain[0]!.node;
    await cluster.nodes.get(victim)!.kill('SIGKILL');
    await partitionsWhen(url, (ps) => ps.every((p) => p.chain.length === 2 && !p.chain.some((r) => r.node === victim)));
    expect(parsePrometheusText(await (await fetch(new URL('metrics', url))).text()).get('shardpipe_cluster_chain_replicas')!.samples.map((s) => s.value)).toEqual([2, 2, 2]);

    // A fresh node joins every chain as a syncing tail, then serves.
    const fresh = await cluster.startNode();
    const freshAddress = [...cluster.nodes.entries()].find(([, n]) => n === fresh)![0];
    const seen = new Set<string>();
    await partitionsWhen(url, (ps) => {
      for (const p of ps) for (const r of p.chain) if (r.node === freshAddress) seen.add(r.state);
      return ps.every((p) => p.chain.length === 3 && p.chain[2]!.node === freshAddress && p.chain[2]!.state === 'serving');
    }, 30_000);
    expect(seen.has('serving')).toBe(true);
    // Writes after the change reach the new chain's every replica: lag 0 again, at one sequence number.
    await client.refreshMap();
    for (let i = 0; i < 30; i++) await client.put(Key.fromBytes(rows[i * 100 + 1]!.key), Buffer.from(`after ${i}`));
    const after = await partitionsWhen(url, (ps) => ps.every((p) => p.chain.length === 3 && p.chain.every((r) => r.lagSequences === 0 && r.lastSeq !== null && r.lastSeq > 0)));
    for (const p of after) expect(new Set(p.chain.map((r) => r.lastSeq)).size).toBe(1);
  }, 120_000);
});
