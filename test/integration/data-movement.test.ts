import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { fairShare, nodeLoads, partitionBytes } from '../../coordinator/index.js';
import { DEFAULT_MAX_PAUSE_MS, EtcdMovementMarks, EtcdOperationStore, StoreClient, isFinalOperationState, newOperationId, type OperationArgs, type OperationRecord, type PartitionMap } from '../../store/index.js';
import { CliProcess, EtcdTestCluster } from '../helpers/etcd-cluster.js';
import { Workload, keyOf, load } from '../helpers/movement-workload.js';

// Real etcd, real `store start --etcd` processes and coordinators; operations are submitted as
// records (EtcdOperationStore.create), the way `cluster move` and friends submit them.
let cluster: EtcdTestCluster | undefined;
let client: StoreClient | undefined;
afterEach(async () => {
  client?.close();
  client = undefined;
  await cluster?.close();
  cluster = undefined;
});

function operationsOf(c: EtcdTestCluster): EtcdOperationStore {
  return new EtcdOperationStore(c.etcdClient, c.etcd.url);
}

async function submit(c: EtcdTestCluster, args: OperationArgs, limits: Partial<OperationRecord['limits']> = {}): Promise<string> {
  const now = Date.now();
  const id = newOperationId(now);
  const created = await operationsOf(c).create({ id, args, state: 'pending', createdAtMs: now, updatedAtMs: now, requestedBy: 'test', limits: { maxMovements: 2, maxPauseMs: DEFAULT_MAX_PAUSE_MS, ...limits }, steps: [], pauses: [] });
  expect(created).toBe(true);
  return id;
}

/** Resolves with the record once `test` holds for it (watching the operations prefix). */
async function waitForOperation(c: EtcdTestCluster, id: string, test: (r: OperationRecord) => boolean = (r) => isFinalOperationState(r.state), timeoutMs = 60_000): Promise<OperationRecord> {
  const ops = operationsOf(c);
  const { revision } = await ops.list();
  let wake: () => void = () => undefined;
  const watcher = await ops.watch(revision, () => wake());
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rec = (await ops.get(id))?.record;
      if (rec !== undefined && test(rec)) return rec;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`operation ${id} did not match within ${timeoutMs} ms: ${JSON.stringify(rec)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    await watcher.cancel();
  }
}

async function startCoordinator(c: EtcdTestCluster, extra: string[] = [], lease = c.lease): Promise<CliProcess> {
  const coordinator = new CliProcess(['coordinator', '--etcd', c.etcd.url, '--lease', lease, ...extra]).start();
  c.coordinators.push(coordinator);
  await coordinator.event('ready');
  return coordinator;
}

async function init(c: EtcdTestCluster, partitions: number, replicas: number): Promise<PartitionMap> {
  const out = await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--partitions', String(partitions), '--replicas', String(replicas)]);
  expect(out.code, out.stderr).toBe(0);
  await Promise.all([...c.nodes.values()].map((n) => n.event('ready')));
  return (await c.store.read())!.map;
}

async function check(c: EtcdTestCluster): Promise<void> {
  const out = await c.cli(['cluster', 'check', '--seeds', [...c.nodes.keys()].join(','), '--json']);
  expect(out.code, out.stdout + out.stderr).toBe(0);
  expect((JSON.parse(out.stdout) as { consistent: boolean }).consistent).toBe(true);
}

/**
 * The scene of the kill tests: 3 nodes, one partition on a chain of two loaded with `rows` rows, a
 * move of its tail (`from`) to the third node (`to`) about to be submitted. `coordinators` starts
 * them (default: one, without automatic rebalance).
 */
async function chainOfTwo(lease: string, rows: number, coordinators: (c: EtcdTestCluster) => Promise<unknown> = (c) => startCoordinator(c, ['--no-auto-rebalance'])): Promise<{ c: EtcdTestCluster; head: string; from: string; to: string; client: StoreClient }> {
  const c = await EtcdTestCluster.start({ lease });
  cluster = c;
  await Promise.all([c.startNode(), c.startNode(), c.startNode()]);
  await coordinators(c);
  const p = (await init(c, 1, 2)).byId(0)!;
  const loaded = new StoreClient({ seeds: [...c.nodes.keys()], operationTimeoutMs: 30_000 });
  client = loaded;
  await load(loaded, rows);
  const to = [...c.nodes.keys()].find((n) => !p.chain.some((r) => r.node === n))!;
  return { c, head: p.node, from: p.chain[1]!.node, to, client: loaded };
}

/** Partition 0's chain as "NODE state" lines. */
async function chainOf0(c: EtcdTestCluster): Promise<string[]> {
  return (await c.store.read())!.map.byId(0)!.chain.map((r) => `${r.node} ${r.state}`);
}

/**
 * The lease of the tests that need none to run out soon (the nodes' default; the first test's drained
 * node, restarted on a new data folder, waits for its old one to go). With 1 s, on this
 * machine at load 10-16 (two CPU burners beside other work) nodes missed keep-alives, fenced, lost
 * their lease and were dropped from chains and refilled elsewhere: replicas moved that no operation
 * asked for (a move failed; the rebalance test's placement was not the rebalance's).
 */
const STEADY_LEASE = '5s';

const allServing = (m: PartitionMap): boolean => m.partitions.every((p) => p.chain.every((r) => r.state === 'serving'));

describe('live data movement (real etcd, real node processes)', () => {
  it('move (of a head, throttled) and drain-node on a live 4-node cluster under puts, CAS and a reader: nothing acknowledged lost, no read going back, replicas consistent; a drained node that comes back with a new data folder loses its drain mark', async () => {
    cluster = await EtcdTestCluster.start({ lease: STEADY_LEASE });
    await Promise.all([cluster.startNode(), cluster.startNode(), cluster.startNode(), cluster.startNode()]);
    await startCoordinator(cluster, ['--no-auto-rebalance']);
    const map = await init(cluster, 4, 2);
    client = new StoreClient({ seeds: [...cluster.nodes.keys()], operationTimeoutMs: 30_000 });
    await load(client, 20_000);
    const work = new Workload(client).start();

    // Move partition 0's head to a node outside its chain, throttled: the step writes throttle/0/TO.
    const p0 = map.byId(0)!;
    const from = p0.node;
    const to = [...cluster.nodes.keys()].find((n) => !p0.chain.some((r) => r.node === n))!;
    const marks = new EtcdMovementMarks(cluster.etcdClient, cluster.etcd.url);
    const throttles: Array<{ key: string; value: string }> = [];
    const watcher = await cluster.etcdClient.watch().prefix(marks.keys.throttle).create();
    watcher.on('put', (kv) => throttles.push({ key: kv.key.toString(), value: kv.value.toString() }));
    const move = await submit(cluster, { kind: 'move', partition: 0, from, to }, { maxBytesPerSecond: 50_000_000 });
    // A bulk load through the thick client while the move copies (keys of its own: the tag 'b').
    const bulk = client.bulkPutAll(
      [Array.from({ length: 10_000 }, (_, i) => ({ key: Buffer.from(keyOf(i, 'b').bytes), value: Buffer.from(`bulk-${i}`) })).sort((x, y) => Buffer.compare(x.key, y.key))],
      { maxInFlight: 2, batchMaxRows: 500 },
    );
    const moved = await waitForOperation(cluster, move);
    await watcher.cancel();
    expect((await bulk).rows).toBe(10_000);
    expect(moved.state, moved.error).toBe('completed');
    expect(moved.finishedAtMs).toBeGreaterThan(0);
    expect(moved.steps).toMatchObject([{ partition: 0, from, to, state: 'done' }]);
    expect(moved.steps[0]!.rowsTotal).toBeGreaterThan(0);
    expect(throttles).toEqual([{ key: marks.keys.throttleOf(0, to), value: JSON.stringify({ maxBytesPerSecond: 50_000_000, operation: move }) }]);
    expect((await cluster.etcdClient.get(marks.keys.throttleOf(0, to)).exec()).kvs).toHaveLength(0);
    let now = (await cluster.store.read())!.map;
    const chain0 = now.byId(0)!.chain;
    expect(chain0.map((r) => r.node)).toEqual([p0.chain[1]!.node, to]);
    expect(chain0.every((r) => r.state === 'serving')).toBe(true);

    // Drain a node: every replica it holds moves off, then it holds none; its mark stays.
    // One movement at a time (maxMovements 1): no map ever holds two syncing replicas.
    const victim = [...cluster.nodes.keys()].find((n) => n !== to && now.replicasOf(n).length > 1)!;
    let mostSyncing = 0;
    const mapWatch = await cluster.store.watch(undefined, (m) => {
      mostSyncing = Math.max(mostSyncing, m.partitions.reduce((n, p) => n + p.chain.filter((r) => r.state === 'syncing').length, 0));
    });
    const drain = await submit(cluster, { kind: 'drain-node', node: victim }, { maxMovements: 1 });
    const drained = await waitForOperation(cluster, drain);
    await mapWatch.cancel();
    expect(mostSyncing).toBe(1);
    expect(drained.state, drained.error).toBe('completed');
    expect(drained.steps.length).toBeGreaterThan(0);
    expect(drained.steps.every((s) => s.state === 'done' && s.from === victim && s.to !== undefined && s.to !== victim)).toBe(true);
    now = (await cluster.store.read())!.map;
    expect(now.replicasOf(victim)).toEqual([]);
    expect(now.partitions.every((p) => p.chain.length === 2)).toBe(true);
    expect(allServing(now)).toBe(true);
    expect((await marks.drainMarks()).get(victim)).toMatchObject({ node: victim, operation: drain });

    await work.stop();
    expect(work.problems).toEqual([]);
    expect(work.acked.size).toBeGreaterThan(20);
    expect(work.counter).toBeGreaterThan(10);
    expect(work.reads).toBeGreaterThan(10);
    await client.refreshMap();
    await work.verify();
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(20_000 + 10_000 + work.acked.size + 1);
    for (const i of [0, 4_321, 9_999]) expect((await client.get(keyOf(i, 'b')))?.value.toString()).toBe(`bulk-${i}`);
    await check(cluster);

    // Nothing is placed on the drained node while it runs; started again on a new data folder it is a new node: the mark goes.
    await cluster.nodes.get(victim)!.kill('SIGKILL');
    await rm(cluster.dir.sub(`node-${victim.replace(':', '-')}`), { recursive: true, force: true });
    await cluster.startNode(victim);
    await expect.poll(async () => (await marks.drainMarks()).has(victim), { timeout: 15_000, interval: 200 }).toBe(false);
  }, 240_000);

  it('set-replicas 2 → 3 → 2 under a writer, and refusals up front', async () => {
    cluster = await EtcdTestCluster.start({ lease: STEADY_LEASE });
    await Promise.all([cluster.startNode(), cluster.startNode(), cluster.startNode()]);
    await startCoordinator(cluster, ['--no-auto-rebalance']);
    await init(cluster, 3, 2);
    client = new StoreClient({ seeds: [...cluster.nodes.keys()], operationTimeoutMs: 30_000 });
    await load(client, 9_000);
    const work = new Workload(client).start();

    const up = await waitForOperation(cluster, await submit(cluster, { kind: 'set-replicas', replicas: 3 }));
    expect(up.state, up.error).toBe('completed');
    expect(up.steps).toHaveLength(3);
    let now = (await cluster.store.read())!.map;
    expect(now.replicas).toBe(3);
    expect(now.partitions.every((p) => p.chain.length === 3 && p.replicas === undefined)).toBe(true);
    expect(allServing(now)).toBe(true);

    const heads = now.partitions.map((p) => p.node);
    const down = await waitForOperation(cluster, await submit(cluster, { kind: 'set-replicas', replicas: 2 }));
    expect(down.state, down.error).toBe('completed');
    now = (await cluster.store.read())!.map;
    expect(now.replicas).toBe(2);
    expect(now.partitions.every((p) => p.chain.length === 2)).toBe(true);
    // Never the head: each chain's head is still the one from before.
    expect(now.partitions.map((p) => p.node)).toEqual(heads);
    expect(down.steps.every((s) => s.from !== undefined && s.to === undefined && s.state === 'done')).toBe(true);

    // Only some partitions: their own R is kept in the map, and the coordinator keeps them at it.
    const one = await waitForOperation(cluster, await submit(cluster, { kind: 'set-replicas', replicas: 3, partitions: [1] }));
    expect(one.state, one.error).toBe('completed');
    now = (await cluster.store.read())!.map;
    expect(now.partitions.map((p) => [p.chain.length, p.replicas])).toEqual([[2, undefined], [3, 3], [2, undefined]]);

    const stranger = '127.0.0.1:1';
    const refused = await waitForOperation(cluster, await submit(cluster, { kind: 'move', partition: 0, from: now.byId(0)!.node, to: stranger }));
    expect(refused.state).toBe('failed');
    expect(refused.error).toMatch(/^STORE_OPERATION_REFUSED: 127\.0\.0\.1:1 is not registered/);
    const tooMany = await waitForOperation(cluster, await submit(cluster, { kind: 'set-replicas', replicas: 4 }));
    expect(tooMany.error).toMatch(/^STORE_OPERATION_REFUSED: 4 replicas need 4 live nodes/);
    expect((await cluster.store.read())!.map.version).toBe(now.version);

    await work.stop();
    expect(work.problems).toEqual([]);
    await client.refreshMap();
    await work.verify();
    await check(cluster);
  }, 240_000);

  it('SIGKILL of the leading coordinator mid-move: the second one finishes the move', async () => {
    let first: CliProcess | undefined;
    let second: CliProcess | undefined;
    // Only the coordinators' lease is short (the leader's death is what this test waits out); no node dies.
    const { c, head, from, to, client } = await chainOfTwo(STEADY_LEASE, 30_000, async (c) => {
      first = await startCoordinator(c, ['--no-auto-rebalance'], '1s');
      await first.event('elected');
      second = await startCoordinator(c, ['--no-auto-rebalance'], '1s');
    });
    const id = await submit(c, { kind: 'move', partition: 0, from, to });
    // The moment the map holds the syncing destination the leader dies: before it writes the step's record, or just after.
    await c.waitForMap((m) => m.byId(0)!.chain.some((r) => r.node === to));
    await first!.kill('SIGKILL');
    await second!.event('elected');
    const done = await waitForOperation(c, id);
    expect(done.state, done.error).toBe('completed');
    expect(await chainOf0(c)).toEqual([`${head} serving`, `${to} serving`]);
    // --no-auto-rebalance: the node that held nothing since init got no rebalance of its own.
    expect((await operationsOf(c).list()).operations.map((o) => o.record.id)).toEqual([id]);
    await client.refreshMap();
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(30_000);
    await check(c);
  }, 180_000);

  it('SIGKILL of etcd mid-move (restarted from its data folder): the record and the map survive, the coordinator and nodes reconnect and the move completes', async () => {
    const { c, head, from, to, client } = await chainOfTwo('3s', 30_000);
    // Throttled so that the copy is still running when etcd dies.
    const id = await submit(c, { kind: 'move', partition: 0, from, to }, { maxBytesPerSecond: 1_000_000 });
    await c.waitForMap((m) => m.byId(0)!.chain.some((r) => r.node === to && r.state === 'syncing'));
    await c.etcd.kill();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await c.etcd.restart();
    const done = await waitForOperation(c, id, undefined, 120_000);
    expect(done.state, done.error).toBe('completed');
    expect(await chainOf0(c)).toEqual([`${head} serving`, `${to} serving`]);
    await client.refreshMap();
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(30_000);
    await check(c);
  }, 240_000);

  it('SIGKILL of the destination mid-sync: once its lease runs out the move fails, is rolled back and names the partition and node; the source keeps serving', async () => {
    const { c, head, from, to, client } = await chainOfTwo('1s', 60_000);
    const id = await submit(c, { kind: 'move', partition: 0, from, to });
    await c.waitForMap((m) => m.byId(0)!.chain.some((r) => r.node === to && r.state === 'syncing'));
    await c.nodes.get(to)!.kill('SIGKILL');
    const failed = await waitForOperation(c, id);
    expect(failed.state).toBe('failed');
    expect(failed.error).toMatch(new RegExp(`^STORE_MOVE_FAILED: partition 0: destination ${to.replaceAll('.', '\\.')} (left the chain|is not registered)`));
    expect(failed.steps[0]!.state).toBe('failed');
    expect(await chainOf0(c)).toEqual([`${head} serving`, `${from} serving`]);
    await client.refreshMap();
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(60_000);
  }, 180_000);

  it('SIGKILL of the source mid-move (the chain\'s tail, which the destination copies from): the copy starts again from the new tail and the move completes', async () => {
    const { c, head, from, to, client } = await chainOfTwo('1s', 60_000);
    const id = await submit(c, { kind: 'move', partition: 0, from, to });
    await c.waitForMap((m) => m.byId(0)!.chain.some((r) => r.node === to && r.state === 'syncing'));
    await c.nodes.get(from)!.kill('SIGKILL');
    const done = await waitForOperation(c, id);
    expect(done.state, done.error).toBe('completed');
    expect(done.steps[0]!.state).toBe('done');
    expect(await chainOf0(c)).toEqual([`${head} serving`, `${to} serving`]);
    c.nodes.delete(from);
    await client.refreshMap();
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(60_000);
    await check(c);
  }, 180_000);

  it('cancel mid-drain: the step in hand is rolled back (its syncing destination removed), the rest skipped, the operation cancelled', async () => {
    cluster = await EtcdTestCluster.start({ lease: STEADY_LEASE });
    await Promise.all([cluster.startNode(), cluster.startNode(), cluster.startNode()]);
    await startCoordinator(cluster, ['--no-auto-rebalance']);
    const map = await init(cluster, 2, 2);
    client = new StoreClient({ seeds: [...cluster.nodes.keys()], operationTimeoutMs: 30_000 });
    await load(client, 60_000);
    const victim = [...cluster.nodes.keys()].find((n) => map.replicasOf(n).length === 2)!;
    const id = await submit(cluster, { kind: 'drain-node', node: victim }, { maxMovements: 1 });
    const syncing = await cluster.waitForMap((m) => m.partitions.some((p) => p.chain.some((r) => r.state === 'syncing')));
    const moving = syncing.partitions.find((p) => p.chain.some((r) => r.state === 'syncing'))!;
    const dest = moving.chain.find((r) => r.state === 'syncing')!.node;
    await operationsOf(cluster).update(id, (r) => (r.state === 'running' ? { ...r, state: 'cancelling' } : undefined));
    const cancelled = await waitForOperation(cluster, id);
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.finishedAtMs).toBeGreaterThan(0);
    expect(cancelled.steps.map((s) => s.state).sort()).toEqual(['rolled-back', 'skipped']);
    expect(cancelled.steps.find((s) => s.state === 'rolled-back')).toMatchObject({ partition: moving.id, to: dest });
    const now = (await cluster.store.read())!.map;
    for (const p of now.partitions) expect(p.chain.map((r) => `${r.node} ${r.state}`)).toEqual(map.byId(p.id)!.chain.map((r) => `${r.node} ${r.state}`));
    await client.refreshMap();
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(60_000);
    await check(cluster);
  }, 180_000);

  it('a fourth node that registers holding nothing: the coordinator rebalances by itself until every node is within 20 % of a fair share by bytes', async () => {
    cluster = await EtcdTestCluster.start({ lease: STEADY_LEASE });
    await Promise.all([cluster.startNode(), cluster.startNode(), cluster.startNode()]);
    await startCoordinator(cluster);
    await init(cluster, 6, 2);
    client = new StoreClient({ seeds: [...cluster.nodes.keys()], operationTimeoutMs: 30_000 });
    await load(client, 24_000);
    // Every replica reported its size (the nodes write their replication reports every second).
    await expect.poll(async () => (await cluster!.store.replicationReports()).filter((r) => (r.bytes ?? 0) > 0).length, { timeout: 15_000, interval: 200 }).toBe(12);
    const ops = operationsOf(cluster);
    const before = (await ops.list()).operations.length;
    const fourth = `127.0.0.1:${await findFreePort()}`;
    await cluster.startNode(fourth);
    await expect.poll(async () => (await ops.list()).operations.length, { timeout: 15_000, interval: 200 }).toBe(before + 1);
    const auto = (await ops.list()).operations.at(-1)!.record;
    expect(auto.args).toEqual({ kind: 'rebalance', auto: true });
    const done = await waitForOperation(cluster, auto.id);
    expect(done.state, done.error).toBe('completed');
    expect(done.steps.length).toBeGreaterThan(0);
    expect(done.steps.every((s) => s.state === 'done' && s.to === fourth)).toBe(true);
    const now = (await cluster.store.read())!.map;
    expect(allServing(now)).toBe(true);
    const bytes = partitionBytes(await cluster.store.replicationReports());
    const loads = nodeLoads({ map: now, live: new Set(cluster.nodes.keys()), draining: new Set(), bytes });
    expect(loads.get(fourth)).toBeGreaterThan(0);
    const { fair, balanced } = fairShare(loads);
    expect(balanced, `loads ${JSON.stringify(Object.fromEntries(loads))}, fair ${fair}`).toBe(true);
    await check(cluster);
  }, 180_000);
});
