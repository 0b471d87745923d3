import { afterEach, describe, expect, it } from 'vitest';
import { writeSampleDrop } from '../../ingest/index.js';
import { PrivateRedis } from '../../jobs/index.js';
import { StoreClient } from '../../store/index.js';
import { EtcdTestCluster } from '../helpers/etcd-cluster.js';
import { runCli } from '../helpers/store-cluster.js';

// The operator's view of data movement under load: a real `shardpipe ingest` (BullMQ on a private
// redis-server, a local worker) into a 4-node RF=2 cluster of `store start --etcd` processes with a
// coordinator, while `cluster drain-node` and `cluster split` run through the CLI.
let cluster: EtcdTestCluster | undefined;
let redis: PrivateRedis | undefined;
let client: StoreClient | undefined;
afterEach(async () => {
  client?.close();
  await cluster?.close();
  await redis?.stop();
  client = cluster = redis = undefined;
});

const ROWS = 60_000;

describe('data movement during a real ingest', () => {
  it('drain-node and split while `shardpipe ingest` writes: the ingest finishes with every row, both operations complete, the tails hold every row and cluster check is consistent', async () => {
    cluster = await EtcdTestCluster.start({ lease: '2s' });
    const c = cluster;
    redis = await PrivateRedis.start({ dataDir: c.dir.sub('redis') });
    await Promise.all([c.startNode(), c.startNode(), c.startNode(), c.startNode()]);
    await c.startCoordinator();
    const init = await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--partitions', '4', '--replicas', '2']);
    expect(init.code, init.stderr).toBe(0);
    await Promise.all([...c.nodes.values()].map((n) => n.event('ready')));
    const seeds = [...c.nodes.keys()];
    const map = (await c.store.read())!.map;

    const drop = await writeSampleDrop(c.dir.sub('drop'), { rows: ROWS, files: 6, prefix: 'k-', rowGroupRows: 2000 });
    const env = { SHARDPIPE_SEEDS: seeds.join(','), SHARDPIPE_REDIS_URL: redis.url, SHARDPIPE_TOKEN: '' };
    const ingest = runCli(['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', '--wait', '--json', '--log-format', 'json', '--log-level', 'warn'], env);

    // Both operations are submitted while the ingest runs; each command waits for its operation.
    const victim = [...seeds].sort().find((n) => map.replicasOf(n).length > 0)!;
    const drain = runCli(['cluster', 'drain-node', victim, '--etcd', c.etcd.url, '--max-movements', '2']);
    const hot = map.partitions.find((p) => p.end.length > 0 && p.end[0]! - (p.start[0] ?? 0) >= 2)!;
    const at = Buffer.from([((hot.start[0] ?? 0) + hot.end[0]!) >> 1]).toString('hex');
    const split = runCli(['cluster', 'split', String(hot.id), '--at-hex', at, '--etcd', c.etcd.url]);

    const [ingested, drained, splitDone] = await Promise.all([ingest, drain, split]);
    expect(ingested.code, ingested.stderr.slice(-3000)).toBe(0);
    const report = JSON.parse(ingested.stdout.trim().split('\n').pop()!) as { rowsIngested: number; rowsRejected: number };
    expect(report.rowsIngested).toBe(ROWS);
    expect(report.rowsRejected).toBe(0);
    expect(drained.code, drained.stderr.slice(-3000)).toBe(0);
    expect(splitDone.code, splitDone.stderr.slice(-3000)).toBe(0);

    const after = (await c.store.read())!.map;
    expect(after.replicasOf(victim)).toEqual([]);
    expect(after.partitions).toHaveLength(map.partitions.length + 1);

    client = new StoreClient({ seeds: seeds.filter((n) => n !== victim) });
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(ROWS);
    const check = await runCli(['cluster', 'check', '--json', '--seeds', seeds.join(',')]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect((JSON.parse(check.stdout) as { consistent: boolean }).consistent).toBe(true);
  }, 300_000);
});
