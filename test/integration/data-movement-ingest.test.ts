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
/** Each command is killed after this (below the test's timeout, so the failure shows where they stood). */
const DEADLINE_MS = 220_000;

describe('data movement during a real ingest', () => {
  it('drain-node and split while `shardpipe ingest` writes: the ingest finishes with every row, both operations complete, the tails hold every row and cluster check is consistent', async () => {
    // No node dies: the nodes' default lease. Short leases on a loaded machine get nodes dropped from
    // chains (data-movement.test.ts at 1 s and load 10-16: moves failed on it), which would fail the drain.
    cluster = await EtcdTestCluster.start({ lease: '5s' });
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
    const ingest = runCli(['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', '--wait', '--json', '--log-format', 'json', '--log-level', 'warn'], env, { timeoutMs: DEADLINE_MS });

    // Both operations are submitted while the ingest runs; each command waits for its operation.
    const victim = [...seeds].sort().find((n) => map.replicasOf(n).length > 0)!;
    const drain = runCli(['cluster', 'drain-node', victim, '--etcd', c.etcd.url, '--max-movements', '2', '--json'], {}, { timeoutMs: DEADLINE_MS });
    const hot = map.partitions.find((p) => p.end.length > 0 && p.end[0]! - (p.start[0] ?? 0) >= 2)!;
    const at = Buffer.from([((hot.start[0] ?? 0) + hot.end[0]!) >> 1]).toString('hex');
    const split = runCli(['cluster', 'split', String(hot.id), '--at-hex', at, '--etcd', c.etcd.url, '--json'], {}, { timeoutMs: DEADLINE_MS });

    const [ingested, drained, splitDone] = await Promise.all([ingest, drain, split]);
    if (ingested.code !== 0 || drained.code !== 0 || splitDone.code !== 0) {
      // Say which command did not finish and where each operation and node stood.
      const ops = await runCli(['cluster', 'operations', '--all', '--json', '--etcd', c.etcd.url]);
      const nodeLogs = [...c.nodes.entries()].map(([n, p]) => `${n}: ${p.stderr.split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-15).join('\n')}`);
      const tail = (r: { code: number | null; stdout: string; stderr: string; timedOut: boolean }): string => `code ${r.code}${r.timedOut ? ' (killed at the deadline)' : ''}\n${r.stdout.slice(-2500)}\n${r.stderr.slice(-2500)}`;
      const coordinator = c.coordinators.map((p) => p.stderr.split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-20).join('\n'));
      expect.fail(`ingest: ${tail(ingested)}\n\ndrain-node: ${tail(drained)}\n\nsplit: ${tail(splitDone)}\n\noperations: ${ops.stdout}${ops.stderr}\n\ncoordinator warnings: ${coordinator.join('\n')}\n\nnode warnings:\n${nodeLogs.join('\n')}`);
    }
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
