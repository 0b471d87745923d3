import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient } from '../../store/index.js';
import { EtcdTestCluster, type CliProcess } from '../helpers/etcd-cluster.js';
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

async function liveCluster(lease = '1s'): Promise<{ c: EtcdTestCluster; client: StoreClient }> {
  const c = await EtcdTestCluster.start({ lease });
  cluster = c;
  await Promise.all([c.startNode(), c.startNode(), c.startNode()]);
  await c.startCoordinator();
  const init = await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--partitions', '2', '--replicas', '3']);
  expect(init.stderr).toBe('');
  await Promise.all([...c.nodes.values()].map((n) => n.event('ready')));
  client = new StoreClient({ seeds: [...c.nodes.keys()] });
  await client.bulkPutAll([lowRows(ROWS)], { maxInFlight: 2, batchMaxRows: 1000 });
  return { c, client };
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
    const { c, client: cl } = await liveCluster();
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
