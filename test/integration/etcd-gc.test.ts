import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Key, PartitionMap, StoreClient, partitionFolder, readGcReports, type GcPendingPartition, type Partition } from '../../store/index.js';
import { EtcdTestCluster, type CliProcess } from '../helpers/etcd-cluster.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';

// Real etcd, real `store start --etcd` processes (and a coordinator in the first test), SIGKILL:
// the object GC of partitions a node left, as etcd, `cluster status` and /metrics show it.
let cluster: EtcdTestCluster | undefined;
afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

const dataDirOf = (c: EtcdTestCluster, address: string): string => c.dir.sub(`node-${address.replace(':', '-')}`);
const holds = (p: Partition, node: string): boolean => p.chain.some((r) => r.node === node);

/** Polls `read` every 50 ms until `test` holds; throws after `timeoutMs` with the last value. */
async function until<T>(what: string, read: () => Promise<T> | T, test: (value: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (test(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms (last: ${JSON.stringify(value)})`);
    await sleep(50);
  }
}

async function gcOf(c: EtcdTestCluster, node: string): Promise<GcPendingPartition[]> {
  return (await readGcReports(c.etcdClient, c.etcd.url)).find((r) => r.node === node)?.partitions ?? [];
}

/** The map with `node` taken out of partition `id`'s chain (new epoch, next version), as a map change by the coordinator would. */
function without(map: PartitionMap, id: number, node: string): PartitionMap {
  return PartitionMap.create(
    map.version + 1,
    map.partitions.map((p) => (p.id === id ? { ...p, node: undefined, chain: p.chain.filter((r) => r.node !== node), epoch: p.epoch + 1 } : p)),
    { replicas: map.replicas },
  );
}

function withTail(map: PartitionMap, id: number, node: string): PartitionMap {
  return PartitionMap.create(
    map.version + 1,
    map.partitions.map((p) => (p.id === id ? { ...p, node: undefined, chain: [...p.chain, { node, state: 'syncing' as const }], epoch: p.epoch + 1 } : p)),
    { replicas: map.replicas },
  );
}

async function writeRows(seed: string, count: number): Promise<void> {
  const client = new StoreClient({ seeds: [seed], operationTimeoutMs: 20_000 });
  try {
    for (let i = 0; i < count; i++) await client.put(Key.fromUtf8(`k-${String(i).padStart(4, '0')}`), Buffer.alloc(500, i));
  } finally {
    client.close();
  }
}

async function metricsOf(node: CliProcess): Promise<ReturnType<typeof parsePrometheusText>> {
  const ready = await node.event('ready');
  return parsePrometheusText(await (await fetch(`http://127.0.0.1:${ready.metricsPort as number}/metrics`)).text());
}

describe('object GC on etcd-managed nodes', { timeout: 120_000 }, () => {
  it('a node SIGKILLed beyond its lease loses its chains; restarted, it records the partitions it left, lists them in etcd, cluster status and /metrics, keeps the folders until --gc-grace passed, then deletes them', async () => {
    cluster = await EtcdTestCluster.start();
    // Long enough for the checks below (CLI processes) on a loaded machine, before the deletion.
    const grace = ['--gc-grace', '12s', '--metrics-port', '0'];
    const nodes = [await cluster.startNode(undefined, grace), await cluster.startNode(undefined, grace), await cluster.startNode(undefined, grace)];
    await cluster.startCoordinator();
    expect((await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '2', '--replicas', '2'])).code).toBe(0);
    await Promise.all(nodes.map((n) => n.event('ready')));
    const before = (await cluster.store.read())!.map;
    // The node that holds a replica of both partitions (3 nodes, 2 partitions of 2 replicas: one node has both).
    const victim = [...cluster.nodes.keys()].find((n) => before.partitions.every((p) => holds(p, n))) ?? before.partitions[0]!.chain[0]!.node;
    const held = before.replicasOf(victim).map((p) => p.id);
    await writeRows(before.partitions[0]!.node, 40);

    await cluster.nodes.get(victim)!.kill();
    // The coordinator drops it and refills every chain from the other nodes.
    const moved = await cluster.waitForMap((m) => m.partitions.every((p) => !holds(p, victim) && p.chain.length === 2 && p.chain.every((r) => r.state === 'serving')), 30_000);
    for (const id of held) expect(existsSync(partitionFolder(dataDirOf(cluster, victim), id))).toBe(true);

    const restartedAt = Date.now();
    const restarted = await cluster.startNode(victim, grace);
    await restarted.event('ready');
    const listed = await until('the restarted node lists the partitions it left', () => gcOf(cluster!, victim), (p) => p.length === held.length);
    expect(listed.map((p) => p.partition).sort()).toEqual([...held].sort());
    for (const p of listed) {
      expect(p.leftAtMs).toBeGreaterThanOrEqual(restartedAt - 1000);
      expect(p.deleteAtMs).toBe(p.leftAtMs + 12_000);
      expect(p.bytes).toBeGreaterThan(0);
      expect(existsSync(partitionFolder(dataDirOf(cluster, victim), p.partition)), 'kept during the grace').toBe(true);
    }
    // Every chain is full: the coordinator does not give the returning node its partitions back.
    expect((await cluster.store.read())!.map.replicasOf(victim)).toEqual([]);
    expect(moved.replicasOf(victim)).toEqual([]);

    const status = await cluster.cli(['cluster', 'status', '--etcd', cluster.etcd.url]);
    expect(status.code).toBe(0);
    for (const p of listed) {
      expect(status.stdout).toContain(`data awaiting GC: partition ${p.partition} (${(p.bytes / 1e6).toFixed(1)} MB) on ${victim}, deleted at ${new Date(p.deleteAtMs).toISOString().slice(11, 19)} UTC`);
    }
    const json = await cluster.cli(['cluster', 'status', '--etcd', cluster.etcd.url, '--json']);
    expect((JSON.parse(json.stdout) as { gc: unknown[] }).gc).toEqual(listed.map((p) => ({ node: victim, ...p })));
    const pendingMetrics = await metricsOf(restarted);
    expect(sampleValue(pendingMetrics, 'shardpipe_gc_pending_bytes', { node: victim })).toBe(listed.reduce((s, p) => s + p.bytes, 0));
    expect(sampleValue(pendingMetrics, 'shardpipe_gc_grace_seconds', { node: victim })).toBe(12);
    expect(Date.now(), 'the checks of the pending data ran within the grace').toBeLessThan(Math.min(...listed.map((p) => p.deleteAtMs)));

    await until('the report empties once the grace passed', () => gcOf(cluster!, victim), (p) => p.length === 0);
    expect(Date.now()).toBeGreaterThanOrEqual(Math.max(...listed.map((p) => p.deleteAtMs)));
    for (const p of listed) expect(existsSync(partitionFolder(dataDirOf(cluster, victim), p.partition))).toBe(false);
    expect(restarted.logged('GC deleted the data of a partition that left this node')).toBe(true);
    const deletedMetrics = await metricsOf(restarted);
    expect(sampleValue(deletedMetrics, 'shardpipe_gc_deleted_partitions_total', { node: victim })).toBe(held.length);
    expect(sampleValue(deletedMetrics, 'shardpipe_gc_deleted_bytes_total', { node: victim })).toBeGreaterThan(0);
    expect(sampleValue(deletedMetrics, 'shardpipe_gc_pending_bytes', { node: victim })).toBe(0);
    // The partitions live on where they moved: every row is still read.
    const client = new StoreClient({ seeds: [moved.partitions[0]!.node], operationTimeoutMs: 20_000 });
    try {
      for (const i of [0, 17, 39]) expect((await client.get(Key.fromUtf8(`k-${String(i).padStart(4, '0')}`)))?.value).toEqual(Buffer.alloc(500, i));
    } finally {
      client.close();
    }
  });

  it('a partition that returns before the grace is kept and reused: its entry goes from etcd, the folder stays, and the returning syncing replica fast-syncs onto it (nothing to copy) and verifies', async () => {
    cluster = await EtcdTestCluster.start();
    const grace = ['--gc-grace', '1m'];
    const nodes = [await cluster.startNode(undefined, grace), await cluster.startNode(undefined, grace)];
    expect((await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '1', '--replicas', '2'])).code).toBe(0);
    await Promise.all(nodes.map((n) => n.event('ready')));
    const v1 = (await cluster.store.read())!.map;
    const tail = v1.partitions[0]!.chain[1]!.node;
    await writeRows(v1.partitions[0]!.node, 30);

    const v2 = without(v1, 0, tail);
    expect(await cluster.store.replace(v1.version, v2)).toBe(true);
    const listed = await until('the tail lists partition 0', () => gcOf(cluster!, tail), (p) => p.length === 1);
    expect(listed[0]!.partition).toBe(0);

    const v3 = withTail(v2, 0, tail);
    expect(await cluster.store.replace(v2.version, v3)).toBe(true);
    await until('the entry leaves etcd', () => gcOf(cluster!, tail), (p) => p.length === 0);
    expect(existsSync(partitionFolder(dataDirOf(cluster, tail), 0))).toBe(true);
    const copied = await until(
      'the returning replica syncs',
      async () => (await cluster!.store.syncReports()).reports.find((r) => r.partition === 0 && r.node === tail),
      (r) => r?.state === 'copied' && r.epoch === v3.byId(0)!.epoch,
    );
    // The kept folder holds every row and the position of its last write: the sync is a fast one that
    // finds nothing changed (a deleted folder would have meant copying all 30 rows).
    expect(copied!.mode).toBe('fast');
    expect(copied!.rows).toBe(0);
    expect(cluster.nodes.get(tail)!.logged('partition came back to this node before its GC: its data is kept and reused')).toBe(true);
  });

  it('a restart keeps the clock: SIGKILLed and restarted during the grace, the node reports the same deadline under its new lease and deletes at it', async () => {
    cluster = await EtcdTestCluster.start();
    const grace = ['--gc-grace', '15s'];
    const nodes = [await cluster.startNode(undefined, grace), await cluster.startNode(undefined, grace)];
    expect((await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '2', '--replicas', '2'])).code).toBe(0);
    await Promise.all(nodes.map((n) => n.event('ready')));
    const v1 = (await cluster.store.read())!.map;
    const tail = v1.partitions[1]!.chain[1]!.node;
    await writeRows(v1.partitions[0]!.node, 10);
    expect(await cluster.store.replace(v1.version, without(v1, 1, tail))).toBe(true);
    const [left] = await until('listed', () => gcOf(cluster!, tail), (p) => p.length === 1);

    await cluster.nodes.get(tail)!.kill();
    // Its report goes with its lease.
    await until('the report goes with the lease', () => gcOf(cluster!, tail), (p) => p.length === 0);
    const restarted = await cluster.startNode(tail, grace);
    await restarted.event('ready');
    const [again] = await until('listed again', () => gcOf(cluster!, tail), (p) => p.length === 1, 15_000);
    expect(Date.now(), 'listed again before its deadline').toBeLessThan(left!.deleteAtMs);
    expect(again).toEqual(left);
    await until('deleted', () => gcOf(cluster!, tail), (p) => p.length === 0);
    expect(Date.now()).toBeGreaterThanOrEqual(left!.deleteAtMs);
    expect(existsSync(partitionFolder(dataDirOf(cluster, tail), 1))).toBe(false);
    expect(existsSync(partitionFolder(dataDirOf(cluster, tail), 0))).toBe(true);
  });
});
