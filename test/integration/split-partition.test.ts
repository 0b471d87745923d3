import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient, splitEtcdKeys, splitValues } from '../../store/index.js';
import { PrivateRedis } from '../../jobs/index.js';
import { EtcdTestCluster, type CliProcess } from '../helpers/etcd-cluster.js';
import { StoreCluster, runCli } from '../helpers/store-cluster.js';
import { SteadyWriter, folderDigest, lowRows, submit, waitForOperation, writerKeys } from '../helpers/split-workload.js';

// Real etcd, three real `store start --etcd` processes (RF=3) and a coordinator; operation records
// written as `cluster split` writes them; a writer doing puts and CAS throughout.
let cluster: EtcdTestCluster | undefined;
let client: StoreClient | undefined;
let writer: SteadyWriter | undefined;
afterEach(async () => {
  await writer?.stop();
  writer = undefined;
  client?.close();
  client = undefined;
  await cluster?.close();
  cluster = undefined;
});

const ROWS = 20_000;
const AT = Buffer.from('4000', 'hex');

async function liveCluster(lease = '2s', nodeArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ c: EtcdTestCluster; client: StoreClient }> {
  const c = await EtcdTestCluster.start({ lease });
  cluster = c;
  await Promise.all([0, 1, 2].map(() => c.startNode(undefined, nodeArgs, c.etcd.url, env)));
  await c.startCoordinator();
  const init = await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--partitions', '2', '--replicas', '3']);
  expect(init.stderr).toBe('');
  await Promise.all([...c.nodes.values()].map((n) => n.event('ready')));
  client = new StoreClient({ seeds: [...c.nodes.keys()] });
  await client.bulkPutAll([lowRows(ROWS)], { maxInFlight: 2, batchMaxRows: 1000 });
  // A split refuses a chain that is not whole: on a busy machine a node may have missed a keep-alive and synced back in.
  await allServing(c);
  return { c, client };
}

async function allServing(c: EtcdTestCluster): Promise<void> {
  await c.waitForMap((m) => m.partitions.every((p) => p.chain.length === 3 && p.chain.every((r) => r.state === 'serving')), 60_000);
}

function nodeDir(c: EtcdTestCluster, address: string): string {
  return c.dir.sub(`node-${address.replace(':', '-')}`);
}

/** Every acknowledged write of the writer reads back as acknowledged; every bulk row is there. */
async function expectNothingLost(cl: StoreClient, w: SteadyWriter, rows: number): Promise<void> {
  await cl.refreshMap();
  let checked = 0;
  for (const [id, value] of w.acked) {
    if (w.unknown.has(id)) continue;
    expect((await cl.get(Key.fromBytes(Buffer.from(id, 'hex'))))?.value.toString()).toBe(value);
    checked++;
  }
  expect(checked).toBeGreaterThan(0);
  // Puts never delete: every key with an acknowledged write exists; one whose writes all failed may or may not.
  const total = await cl.checksum(Buffer.alloc(0), Buffer.alloc(0));
  expect(total.count).toBeGreaterThanOrEqual(rows + w.acked.size);
  expect(total.count).toBeLessThanOrEqual(rows + new Set([...w.acked.keys(), ...w.unknown]).size);
}

async function clusterCheck(c: EtcdTestCluster): Promise<{ consistent: boolean; partitions: Array<{ id: number; consistent: boolean }> }> {
  const out = await c.cli(['cluster', 'check', '--seeds', [...c.nodes.keys()].join(','), '--json']);
  expect(out.stderr).toBe('');
  expect(out.code).toBe(0);
  return JSON.parse(out.stdout) as { consistent: boolean; partitions: Array<{ id: number; consistent: boolean }> };
}

describe('split of a partition on a live RF=3 cluster', () => {
  it('splits partition 0 at 0x4000 while a writer does puts and CAS: nothing acknowledged is lost, cluster check is consistent, the new partition has its own LevelDB, the pause is recorded', async () => {
    const { c, client: cl } = await liveCluster('2s', ['--metrics-port', '0']);
    const keys = writerKeys(64);
    writer = new SteadyWriter(cl, keys).start();
    await writer.more(200);
    const id = await submit(c, { kind: 'split', partition: 0, at: AT.toString('hex') });
    const done = await waitForOperation(c, id, (r) => r.state === 'completed' || r.state === 'failed');
    expect(done.error).toBeUndefined();
    expect(done.state).toBe('completed');
    // Writes go on to both halves after the split.
    await writer.more(200);
    await writer.stop();

    const map = (await c.store.read())!.map;
    const q = map.byId(2)!;
    expect(q.start.equals(AT)).toBe(true);
    expect(map.byId(0)!.end.equals(AT)).toBe(true);
    expect(q.chain.map((r) => r.node)).toEqual(map.byId(0)!.chain.map((r) => r.node));
    expect(done.pauses.some((p) => p.partition === 0 && p.reason.startsWith('split cut'))).toBe(true);
    // The head measured the pause on its /metrics too.
    const head = map.byId(0)!.node;
    const { metricsPort } = (await c.nodes.get(head)!.event('ready')) as { metricsPort: number };
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`shardpipe_write_pause_seconds_count\\{node="${head.replaceAll('.', '\\.')}"\\} [1-9]\\d*\\b`));

    await expectNothingLost(cl, writer, ROWS);
    const check = await clusterCheck(c);
    expect(check.consistent).toBe(true);
    expect(check.partitions.map((p) => p.id).sort()).toEqual([0, 1, 2]);

    // Stop the nodes once each has deleted P's leftovers; then read their folders.
    for (const n of c.nodes.values()) await waitLogged(n, 'deleted the rows outside the partition');
    const expectedQ = lowRows(ROWS).filter((r) => r.key.compare(AT) >= 0).length + keys.filter((k) => k.compare(AT) >= 0 && writer!.acked.has(k.toString('hex'))).length;
    for (const n of c.nodes.values()) await n.kill();
    const digests = await Promise.all([...c.nodes.keys()].map(async (a) => ({ q: await folderDigest(nodeDir(c, a), 2), leftover: await folderDigest(nodeDir(c, a), 0, AT), p: await folderDigest(nodeDir(c, a), 0) })));
    for (const d of digests) {
      expect(d.q.count).toBe(expectedQ);
      expect(d.leftover.count).toBe(0);
      expect(d.q.digest).toBe(digests[0]!.q.digest);
      expect(d.p.digest).toBe(digests[0]!.p.digest);
    }
  });
});

describe('merge back after a split', () => {
  it('merges the two halves again while the writer goes on: the lower partition serves both ranges from its own LevelDB, nothing acknowledged is lost, the other folder stays on disk', async () => {
    const { c, client: cl } = await liveCluster();
    writer = new SteadyWriter(cl, writerKeys(64)).start();
    await writer.more(100);
    const split = await waitForOperation(c, await submit(c, { kind: 'split', partition: 0, at: AT.toString('hex') }), (r) => r.state === 'completed' || r.state === 'failed');
    expect(split.error).toBeUndefined();
    await writer.more(100);
    await allServing(c);
    const merge = await waitForOperation(c, await submit(c, { kind: 'merge', partitions: [2, 0] }), (r) => r.state === 'completed' || r.state === 'failed');
    expect(merge.error).toBeUndefined();
    expect(merge.pauses.some((p) => p.partition === 0 && p.reason.startsWith('merge cut'))).toBe(true);
    await writer.more(100);
    await writer.stop();
    const map = (await c.store.read())!.map;
    expect(map.partitions.map((p) => p.id)).toEqual([0, 1]);
    expect(map.byId(0)!.end.toString('hex')).toBe('8000');
    await expectNothingLost(cl, writer, ROWS);
    const check = await clusterCheck(c);
    expect(check.consistent).toBe(true);
    for (const n of c.nodes.values()) await n.kill();
    const low = lowRows(ROWS).length;
    const digests = await Promise.all([...c.nodes.keys()].map(async (a) => ({ p: await folderDigest(nodeDir(c, a), 0, Buffer.alloc(0), Buffer.from('8000', 'hex')), q: await folderDigest(nodeDir(c, a), 2) })));
    for (const d of digests) {
      expect(d.p.count).toBeGreaterThanOrEqual(low + writer.acked.size);
      expect(d.p.digest).toBe(digests[0]!.p.digest);
      // The merged partition's folder is left for GC, untouched.
      expect(d.q.count).toBeGreaterThan(0);
    }
  });
});

describe('split: --auto, refusals', () => {
  it('refuses a key at the bounds, a missing partition, a used id, a merge of different chains, each with a clear error; --auto splits at the median; backup and restore work with the new partition id', async () => {
    const { c, client: cl } = await liveCluster();
    const failures: Array<[Parameters<typeof submit>[1], RegExp]> = [
      [{ kind: 'split', partition: 0, at: '8000' }, /not strictly inside partition 0/],
      [{ kind: 'split', partition: 1, at: '80' }, /not strictly inside partition 1/],
      [{ kind: 'split', partition: 9, at: '4000' }, /partition 9 is not in the map/],
      [{ kind: 'split', partition: 0, at: '4000', newPartition: 1 }, /partition id 1 is in use/],
      [{ kind: 'split', partition: 0 }, /needs a key \(--at KEY\) or --auto/],
      [{ kind: 'merge', partitions: [0, 1] }, /different chains .*move replicas first/],
      [{ kind: 'merge', partitions: [0, 9] }, /partition 9 is not in the map/],
    ];
    for (const [args, error] of failures) {
      const id = await submit(c, args);
      const r = await waitForOperation(c, id, (x) => x.state === 'failed' || x.state === 'completed');
      expect(r.state).toBe('failed');
      expect(r.error).toMatch(error);
    }
    expect((await c.store.read())!.map.partitions.map((p) => p.id)).toEqual([0, 1]);

    const id = await submit(c, { kind: 'split', partition: 0, auto: true });
    const done = await waitForOperation(c, id, (x) => x.state === 'failed' || x.state === 'completed');
    expect(done.error).toBeUndefined();
    const map = (await c.store.read())!.map;
    const median = map.byId(2)!.start;
    // The rows are spread evenly over [0000, 8000): the median lies near the middle.
    expect(median.readUInt16BE(0)).toBeGreaterThan(0x3000);
    expect(median.readUInt16BE(0)).toBeLessThan(0x5000);
    await cl.refreshMap();
    expect((await cl.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(ROWS);
    expect((await clusterCheck(c)).consistent).toBe(true);

    // Backup and restore work with the new partition id (the backup plans by the map's partitions).
    const redis = await PrivateRedis.start({ dataDir: c.dir.sub('redis') });
    const target = await StoreCluster.start({ nodes: 2, partitions: 3 });
    try {
      const folder = c.dir.sub('backup');
      const backup = await runCli(['backup', 'run', '--target', folder, '--seeds', [...c.nodes.keys()].join(','), '--redis', redis.url, '--json', '--log-level', 'warn']);
      expect(backup.code, backup.stderr).toBe(0);
      const report = JSON.parse(backup.stdout) as { backupId: string; rows: number };
      expect(report.rows).toBe(ROWS);
      const restore = await runCli(['restore', report.backupId, '--target', folder, '--seeds', target.seeds.join(','), '--redis', redis.url, '--verify', '--json', '--log-level', 'warn']);
      expect(restore.code, restore.stderr).toBe(0);
      expect(JSON.parse(restore.stdout)).toMatchObject({ rowsRestored: ROWS, verified: true });
    } finally {
      await target.close();
      await redis.stop();
    }
  });
});

describe('split while the chain changes', () => {
  it('fault injection (prepares held): a replica removed while every replica\'s prepare waits; the split is asked again at the new epoch and each node, once its stale prepare ends, prepares that one: the split completes', async () => {
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const hold = `${await mkdtemp('/tmp/hold-prepares-')}/hold`;
    await writeFile(hold, '');
    const { c, client: cl } = await liveCluster('2s', [], { SHARDPIPE_FAULT_INJECTION_HOLD_PREPARES: hold });
    writer = new SteadyWriter(cl, writerKeys(64)).start();
    await writer.more(50);
    const id = await submit(c, { kind: 'split', partition: 0, at: AT.toString('hex') });
    const first = (await c.store.read())!.map.byId(0)!.epoch;
    await waitForOperation(c, id, (r) => r.steps[0]?.phase?.startsWith('preparing') === true);
    for (const n of c.nodes.values()) await waitLogged(n, 'fault injection: holding a prepare');
    // The chain changes under the held prepares: partition 0 goes to 2 replicas (epoch + 1).
    const shrink = await submit(c, { kind: 'set-replicas', replicas: 2, partitions: [0] });
    expect((await waitForOperation(c, shrink, (r) => r.state === 'completed' || r.state === 'failed')).state).toBe('completed');
    const epoch = (await c.store.read())!.map.byId(0)!.epoch;
    expect(epoch).toBeGreaterThan(first);
    // The coordinator asks again at the new epoch; the nodes' prepares of the old request still wait.
    const asked = async (): Promise<number | undefined> => splitValues.prepare((await c.etcdClient.get(splitEtcdKeys().prepareOf(0)).buffer()) ?? Buffer.alloc(0))?.epoch;
    for (const deadline = Date.now() + 30_000; (await asked()) !== epoch; ) {
      if (Date.now() > deadline) throw new Error(`the split was not asked again at epoch ${epoch} (asked: ${await asked()})`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await rm(hold);
    const done = await waitForOperation(c, id, (r) => r.state === 'completed' || r.state === 'failed', 60_000);
    expect(done.error).toBeUndefined();
    expect(done.state).toBe('completed');
    // The stale prepares ended without a `failed` report at the old epoch (a coordinator that had
    // not seen the new map yet could have taken it and ended the split).
    for (const [address, n] of c.nodes) expect(n.logged('preparing a split failed'), address).toBe(false);
    expect([...c.nodes.values()].some((n) => n.logged('a prepare for an older epoch ended without a report'))).toBe(true);
    const map = (await c.store.read())!.map;
    expect(map.byId(2)!.start).toEqual(AT);
    expect(map.byId(2)!.chain).toHaveLength(2);
    await writer.more(50);
    await writer.stop();
    await expectNothingLost(cl, writer, ROWS);
    expect((await clusterCheck(c)).consistent).toBe(true);
  }, 180_000);
});

describe('split with processes killed (fault injection by SIGKILL)', () => {
  it('SIGKILL of the head once the replicas prepare, restarted at once: the split completes; nothing acknowledged is lost; every replica consistent', async () => {
    const { c, client: cl } = await liveCluster('4s');
    writer = new SteadyWriter(cl, writerKeys(64)).start();
    await writer.more(100);
    const head = (await c.store.read())!.map.byId(0)!.node;
    const id = await submit(c, { kind: 'split', partition: 0, at: AT.toString('hex') }, 5000);
    await waitForOperation(c, id, (r) => r.steps[0]?.phase?.startsWith('preparing') === true || r.state === 'completed');
    await c.nodes.get(head)!.kill('SIGKILL');
    const restarted = await c.startNode(head);
    const done = await waitForOperation(c, id, (r) => r.state === 'completed' || r.state === 'failed', 90_000);
    expect(done.error).toBeUndefined();
    // Whether it prepared again, copied at the commit (it had reported before the kill) or left the chain (lease ran out) depends on timing; each keeps the data.
    expect(restarted.logged('registered in etcd')).toBe(true);
    await writer.more(100);
    await writer.stop();
    await expectNothingLost(cl, writer, ROWS);
    expect((await clusterCheck(c)).consistent).toBe(true);
  }, 150_000);

  it('SIGKILL of the head once the cut started (not restarted): the split completes on the surviving chain; nothing acknowledged is lost', async () => {
    const { c, client: cl } = await liveCluster('1s');
    writer = new SteadyWriter(cl, writerKeys(64)).start();
    await writer.more(100);
    const head = (await c.store.read())!.map.byId(0)!.node;
    const id = await submit(c, { kind: 'split', partition: 0, at: AT.toString('hex') });
    await waitForOperation(c, id, (r) => r.steps[0]?.phase?.startsWith('cutting') === true || r.state === 'completed');
    await c.nodes.get(head)!.kill('SIGKILL');
    c.nodes.delete(head);
    const done = await waitForOperation(c, id, (r) => r.state === 'completed' || r.state === 'failed', 90_000);
    expect(done.error).toBeUndefined();
    const map = await c.waitForMap((m) => m.byId(2) !== undefined && m.partitions.every((p) => !p.chain.some((r) => r.node === head)));
    expect(map.byId(2)!.chain).toHaveLength(2);
    await writer.more(100);
    await writer.stop();
    await expectNothingLost(cl, writer, ROWS);
    expect((await clusterCheck(c)).consistent).toBe(true);
  }, 150_000);

  it('SIGKILL of the leading coordinator mid-split: the other one takes over from the map and the records and completes it', async () => {
    const { c, client: cl } = await liveCluster('2s');
    const second = await c.startCoordinator();
    writer = new SteadyWriter(cl, writerKeys(64)).start();
    await writer.more(100);
    const id = await submit(c, { kind: 'split', partition: 0, at: AT.toString('hex') });
    await waitForOperation(c, id, (r) => r.state !== 'pending');
    await c.coordinators[0]!.kill('SIGKILL');
    await second.event('elected');
    const done = await waitForOperation(c, id, (r) => r.state === 'completed' || r.state === 'failed', 90_000);
    expect(done.error).toBeUndefined();
    await writer.more(100);
    await writer.stop();
    await expectNothingLost(cl, writer, ROWS);
    expect((await clusterCheck(c)).consistent).toBe(true);
  }, 150_000);
});

/** Resolves once the process logged `msg` (its stderr grows as it logs). */
async function waitLogged(p: CliProcess, msg: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!p.logged(msg)) {
    if (Date.now() > deadline) throw new Error(`"${msg}" was not logged within ${timeoutMs} ms`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      p.child!.stderr!.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
