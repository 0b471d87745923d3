import { writeFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { writeSampleDrop } from '../../ingest/index.js';
import { PrivateRedis } from '../../jobs/index.js';
import { StoreClient, type PartitionMap } from '../../store/index.js';
import { EtcdTestCluster } from '../helpers/etcd-cluster.js';
import { runCli } from '../helpers/store-cluster.js';

// The operator's view: real `shardpipe ingest` (BullMQ on a private redis-server, a local worker)
// into an RF=3 cluster of `store start --etcd` processes with a coordinator; SIGKILL mid-ingest.
let cluster: EtcdTestCluster | undefined;
let redis: PrivateRedis | undefined;
let client: StoreClient | undefined;
afterEach(async () => {
  client?.close();
  await cluster?.close();
  await redis?.stop();
  client = cluster = redis = undefined;
});

const ROWS = 40_000;

interface CheckReport {
  consistent: boolean;
  partitions: Array<{ id: number; consistent: boolean; replicas: Array<{ node: string; count: number; state: string; error?: string }> }>;
}

/** Rows at the chains' tails now (PartitionStats of every node). */
async function rowsAtTails(c: StoreClient): Promise<number> {
  const stats = await c.stats({ timeoutMs: 2000 });
  return stats.reduce((n, s) => n + (s.result.ok ? s.result.partitions.reduce((m, p) => m + p.approxCount, 0) : 0), 0);
}

/** Resolves once the tails hold at least `rows` (a readiness wait on the data, with a deadline). */
async function untilRows(c: StoreClient, rows: number, ingest: Promise<unknown>, timeoutMs = 60_000): Promise<void> {
  let done = false;
  void ingest.finally(() => (done = true));
  const deadline = Date.now() + timeoutMs;
  while ((await rowsAtTails(c).catch(() => 0)) < rows) {
    if (done) throw new Error(`the ingest ended before ${rows} rows were at the tails: the kill would not be mid-ingest`);
    if (Date.now() > deadline) throw new Error(`fewer than ${rows} rows at the tails after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('RF=3 ingest through SIGKILLs, CLI level', () => {
  it('SIGKILL of the head, then (after it synced back) the middle, then the tail of the chain an ingest writes, each mid-ingest: every ingest finishes, rows lost 0, every surviving replica holds every row (cluster check); a fourth node started during a fourth ingest syncs in and becomes tail', async () => {
    cluster = await EtcdTestCluster.start({ lease: '1s' });
    const c = cluster;
    redis = await PrivateRedis.start({ dataDir: c.dir.sub('redis') });
    await Promise.all([c.startNode(), c.startNode(), c.startNode()]);
    await c.startCoordinator();
    // One partition per round: round r writes keys "kr-…", which partition r-1 holds ("k4-" goes to the last).
    const splitFile = c.dir.sub('split-keys');
    await writeFile(splitFile, 'k2-\nk3-\n');
    const init = await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--split-keys', splitFile, '--replicas', '3']);
    expect(init.code, init.stderr).toBe(0);
    await Promise.all([...c.nodes.values()].map((n) => n.event('ready')));
    const seeds = () => [...c.nodes.entries()].filter(([, n]) => n.child!.exitCode === null && n.child!.signalCode === null).map(([a]) => a);
    client = new StoreClient({ seeds: seeds() });
    const env = () => ({ SHARDPIPE_SEEDS: seeds().join(','), SHARDPIPE_REDIS_URL: redis!.url, SHARDPIPE_TOKEN: '' });
    const allServing = (m: PartitionMap): boolean => m.partitions.every((p) => p.chain.length === 3 && p.chain.every((r) => r.state === 'serving'));
    /** Waits for chains of 3 serving replicas; a timeout says where the chains and syncs stood. */
    const untilAllServing = async (what: string): Promise<PartitionMap> => {
      try {
        return await c.waitForMap(allServing, 60_000);
      } catch (err) {
        const status = await c.cli(['cluster', 'status', '--etcd', c.etcd.url]);
        throw new Error(`${what}: ${(err as Error).message}\n${status.stdout}`);
      }
    };

    let total = 0;
    const ingestRound = async (round: number, duringIngest: (ingest: Promise<unknown>) => Promise<void>): Promise<void> => {
      const drop = await writeSampleDrop(c.dir.sub(`drop-${round}`), { rows: ROWS, files: 4, prefix: `k${round}-`, rowGroupRows: 2000 });
      const ingest = runCli(['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', '--wait', '--json', '--log-format', 'json', '--log-level', 'warn'], env());
      await duringIngest(ingest);
      const r = await ingest;
      expect(r.code, `round ${round}: ${r.stderr.slice(-3000)}`).toBe(0);
      const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { rowsIngested: number; rowsRejected: number };
      expect(report.rowsIngested, `round ${round}`).toBe(ROWS);
      expect(report.rowsRejected).toBe(0);
      total += ROWS;
    };
    /** cluster check: consistent, and every serving replica of every partition holds all of its rows. */
    const checkAll = async (expected: number[]): Promise<CheckReport> => {
      await nodesOn((await c.store.read())!.map);
      const r = await runCli(['cluster', 'check', '--json', '--seeds', seeds().join(',')]);
      const check = JSON.parse(r.stdout) as CheckReport;
      expect(r.code, r.stdout).toBe(0);
      expect(check.consistent).toBe(true);
      check.partitions.forEach((p, i) => {
        for (const replica of p.replicas.filter((x) => x.state === 'serving')) expect(replica.count, `partition ${p.id} on ${replica.node}`).toBe(expected[i]);
      });
      // Rows lost: what the tails hold against what was ingested.
      expect(await rowsAtTails(client!)).toBe(total);
      return check;
    };
    const killDuring = (round: number, role: 'head' | 'middle' | 'tail') => async (ingest: Promise<unknown>): Promise<void> => {
      const map = (await c.store.read())!.map;
      const chain = map.partitions[round - 1]!.chain;
      const victim = chain[role === 'head' ? 0 : role === 'middle' ? 1 : chain.length - 1]!.node;
      await untilRows(client!, total + ROWS / 4, ingest);
      await c.nodes.get(victim)!.kill('SIGKILL');
      victims.push(victim);
    };
    const victims: string[] = [];
    const restartLast = async (): Promise<void> => {
      const victim = victims[victims.length - 1]!;
      await c.waitForMap((m) => m.partitions.every((p) => !p.chain.some((r) => r.node === victim)), 20_000);
      await c.startNode(victim);
      await nodesOn(await untilAllServing(`${victim} restarted with its data`));
    };
    /** Resolves once every live node serves `map` (nodes learn it by watching etcd, a moment after it is written). */
    const nodesOn = async (map: PartitionMap): Promise<void> => {
      await client!.refreshMap();
      const deadline = Date.now() + 20_000;
      for (;;) {
        const stats = await client!.stats({ timeoutMs: 2000 });
        if (stats.every((s) => s.result.ok && s.result.mapVersion === map.version)) return;
        if (Date.now() > deadline) throw new Error(`nodes did not all install map version ${map.version}: ${JSON.stringify(stats.map((s) => [s.node, s.result.ok ? s.result.mapVersion : s.result.error.message]))}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };

    await ingestRound(1, killDuring(1, 'head'));
    await checkAll([ROWS, 0, 0]);
    await restartLast();
    await checkAll([ROWS, 0, 0]);

    await ingestRound(2, killDuring(2, 'middle'));
    await checkAll([ROWS, ROWS, 0]);
    await restartLast();

    await ingestRound(3, killDuring(3, 'tail'));
    const afterThird = await checkAll([ROWS, ROWS, ROWS]);
    expect(afterThird.partitions.every((p) => p.replicas.length === 2)).toBe(true);

    // Round 4: the chains are one short (the last victim stays dead); a fresh node started mid-ingest joins them.
    let fresh = '';
    await ingestRound(4, async (ingest) => {
      await untilRows(client!, total + ROWS / 4, ingest);
      const node = await c.startNode();
      fresh = [...c.nodes.entries()].find(([, n]) => n === node)![0];
    });
    const map = await untilAllServing(`fresh node ${fresh} started during round 4`);
    for (const p of map.partitions) expect(p.chain[2]!.node, `partition ${p.id}'s tail`).toBe(fresh);
    await nodesOn(map);
    const final = await checkAll([ROWS, ROWS, 2 * ROWS]);
    expect(final.partitions.every((p) => p.replicas.length === 3 && p.replicas.some((r) => r.node === fresh && r.state === 'serving'))).toBe(true);
    expect(new Set(victims).size).toBeGreaterThanOrEqual(2);
  }, 300_000);
});
