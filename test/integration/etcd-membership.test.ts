import { createInterface } from 'node:readline';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient, checkHealth, type BulkRowInput, type PartitionMap, type StoredRecord } from '../../store/index.js';
import { EtcdTestCluster } from '../helpers/etcd-cluster.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';

// Real etcd (a private one per test), real `shardpipe store start --etcd` and `shardpipe coordinator`
// processes, SIGKILL. Leases are 1 s so every test stays short.
let cluster: EtcdTestCluster | undefined;
afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

const chainNodes = (map: PartitionMap, id: number): string[] => map.byId(id)!.chain.map((r) => r.node);
const holds = (map: PartitionMap, node: string): boolean => map.partitions.some((p) => p.chain.some((r) => r.node === node));

function rows(count: number): BulkRowInput[] {
  // Keys spread over the whole first-two-bytes space, so every partition of an even split gets some.
  return Array.from({ length: count }, (_, i) => {
    const key = Buffer.alloc(6);
    key.writeUInt16BE(Math.floor((i * 65536) / count));
    key.writeUInt32BE(i, 2);
    return { key, value: Buffer.from(`value-${i}`) };
  }).sort((a, b) => Buffer.compare(a.key, b.key));
}

async function rawCode(address: string, method: string, init: Record<string, unknown>): Promise<string | undefined> {
  const raw = new RawStoreClient(address);
  try {
    const out = await raw.call(method, init, 2000);
    return out.ok ? 'OK' : out.code;
  } finally {
    raw.close();
  }
}

/** Gets key "k" from the node every 25 ms until `done(code)`, or the time is up; the last code. */
async function probeUntil(address: string, done: (code: string | undefined) => boolean, timeoutMs: number): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  let code: string | undefined;
  do {
    code = await rawCode(address, 'Get', { mapVersion: 1n, key: Buffer.from('k') });
    if (done(code)) return code;
    await sleep(25);
  } while (Date.now() < deadline);
  return code;
}

/** Asks the node for its map every 25 ms until it has `version`, or the time is up; the last version seen. */
async function nodeMapVersionUntil(address: string, version: number, timeoutMs: number): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  let seen: number | undefined;
  do {
    const client = new StoreClient({ seeds: [address] });
    try {
      seen = (await client.refreshMap()).version;
    } finally {
      client.close();
    }
    if (seen === version) return seen;
    await sleep(25);
  } while (Date.now() < deadline);
  return seen;
}

describe('store nodes on etcd', () => {
  it('a node started before any map registers under its lease, waits, then serves what cluster init writes: RF=1 from etcd takes BulkInsert and Get like a static map, and SetPartitionMap is refused', async () => {
    cluster = await EtcdTestCluster.start();
    const node = await cluster.startNode();
    const address = [...cluster.nodes.keys()][0]!;
    const reg = (await cluster.etcdClient.get(cluster.store.keys.node(address)).exec()).kvs[0];
    expect(reg, 'registration key').toBeDefined();
    expect(reg!.lease, 'registration is attached to a lease').not.toBe('0');
    expect(await cluster.store.read()).toBeUndefined();

    const init = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '4', '--replicas', '1']);
    expect(init.stderr).toBe('');
    expect(init.code).toBe(0);
    const ready = await node.event('ready');
    expect(ready.mapVersion).toBe(1);

    const client = new StoreClient({ seeds: [address] });
    try {
      const map = await client.map();
      expect(map.partitions.map((p) => [p.node, p.chain.length, p.chain[0]!.state, p.epoch])).toEqual(Array.from({ length: 4 }, () => [address, 1, 'serving', 1]));
      const data = rows(2000);
      const result = await client.bulkPutAll([data.slice(0, 1000), data.slice(1000)]);
      expect(result.rows).toBe(2000);
      for (const i of [0, 777, 1999]) expect((await client.get(Key.fromBytes(data[i]!.key)))?.value.toString()).toBe(`value-${i}`);
      const digest = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));
      expect(digest.count).toBe(2000);
    } finally {
      client.close();
    }

    const otherMap = { version: 2, partitions: [{ id: 0, start: new Uint8Array(0), end: new Uint8Array(0), node: address }] };
    expect(await rawCode(address, 'SetPartitionMap', { map: otherMap })).toBe('STORE_MAP_MANAGED_BY_ETCD');
    expect((await cluster.store.read())!.map.version).toBe(1);
  });

  it('cluster init waits for R nodes and times out naming them; places replicas on distinct nodes with heads spread evenly; refuses a second init; cluster status shows the chains', async () => {
    cluster = await EtcdTestCluster.start();
    const first = await cluster.startNode();
    const tooFew = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '6', '--replicas', '3', '--wait', '1s']);
    expect(tooFew.code).toBe(1);
    expect(tooFew.stderr).toMatch(/3 replicas need 3 registered store nodes, but 1 registered within 1000 ms .*\[STORE_CLUSTER_NODES_MISSING\]/);

    // Started before the other two nodes exist: it waits (watching registrations) and then places.
    const init = cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '6', '--replicas', '3', '--wait', '20s']);
    const others = [await cluster.startNode(), await cluster.startNode()];
    const done = await init;
    expect(done.stderr).toBe('');
    expect(done.code).toBe(0);
    const map = (await cluster.store.read())!.map;
    const nodes = [...cluster.nodes.keys()].sort();
    expect(map.replicas).toBe(3);
    for (const p of map.partitions) {
      expect(new Set(chainNodes(map, p.id)).size).toBe(3);
      expect(p.chain.every((r) => r.state === 'serving')).toBe(true);
    }
    const heads = nodes.map((n) => map.partitions.filter((p) => p.node === n).length);
    expect(heads).toEqual([2, 2, 2]);

    const again = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '2', '--replicas', '1']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('STORE_CLUSTER_MAP_EXISTS');
    expect((await cluster.store.read())!.map.equals(map)).toBe(true);

    const status = await cluster.cli(['cluster', 'status', '--etcd', cluster.etcd.url, '--json']);
    expect(status.code).toBe(0);
    const json = JSON.parse(status.stdout) as { version: number; partitions: Array<{ id: number; epoch: number; chain: Array<{ node: string; state: string; live: boolean }> }> };
    expect(json.version).toBe(1);
    expect(json.partitions.map((p) => p.chain.map((r) => r.node))).toEqual(map.partitions.map((p) => chainNodes(map, p.id)));
    expect(json.partitions.every((p) => p.epoch === 1 && p.chain.every((r) => r.state === 'serving' && r.live))).toBe(true);

    await Promise.all([first, ...others].map((n) => n.event('ready')));
    const viaSeeds = await cluster.cli(['cluster', 'status', '--seeds', nodes[0]!, '--json']);
    expect(viaSeeds.code).toBe(0);
    expect((JSON.parse(viaSeeds.stdout) as { partitions: unknown[] }).partitions).toEqual(json.partitions.map((p) => ({ ...p, chain: p.chain.map(({ node, state }) => ({ node, state })) })));

    const unreachable = await cluster.cli(['cluster', 'status', '--etcd', 'http://user:s3cret@127.0.0.1:1']);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain('etcd at http://user:***@127.0.0.1:1/ did not answer');
    expect(unreachable.stderr).not.toContain('s3cret');
  });

  it('SIGKILL of a node removes it from every chain within about a lease (one transaction, epochs bumped); restarted with its data it comes back as a syncing tail, syncs and is made serving', async () => {
    cluster = await EtcdTestCluster.start();
    const nodes = [await cluster.startNode(), await cluster.startNode(), await cluster.startNode()];
    await cluster.startCoordinator();
    expect((await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '3', '--replicas', '3'])).code).toBe(0);
    await Promise.all(nodes.map((n) => n.event('ready')));
    const before = (await cluster.store.read())!.map;
    const victim = before.partitions[1]!.node;

    const killedAt = Date.now();
    await cluster.nodes.get(victim)!.kill();
    const after = await cluster.waitForMap((m) => !holds(m, victim));
    const tookMs = Date.now() - killedAt;
    // Lease 1 s (etcd expires it within its TTL + a tick), then one coordinator pass; slack for a loaded machine.
    expect(tookMs).toBeLessThan(6000);
    expect(after.version).toBe(before.version + 1);
    for (const p of after.partitions) {
      const old = before.byId(p.id)!;
      expect(p.epoch).toBe(old.epoch + 1);
      expect(chainNodes(after, p.id)).toEqual(chainNodes(before, p.id).filter((n) => n !== victim));
      expect(p.chain[0]!.state).toBe('serving');
    }

    const restarted = await cluster.startNode(victim);
    const back = await cluster.waitForMap((m) => m.partitions.every((p) => p.chain.length === 3));
    expect(back.version).toBe(after.version + 1);
    for (const p of back.partitions) {
      expect(p.chain.at(-1)).toEqual({ node: victim, state: 'syncing' });
      expect(p.epoch).toBe(after.byId(p.id)!.epoch + 1);
    }
    // It started from the map it found (without it), installs the one that adds it from its watch,
    // copies each (empty) partition from its chain's tail and is promoted: one transaction, epoch + 1.
    await restarted.event('ready');
    const serving = await cluster.waitForMap((m) => m.partitions.every((p) => p.chain.at(-1)?.node === victim && p.chain.every((r) => r.state === 'serving')), 20_000);
    for (const p of serving.partitions) expect(p.epoch).toBe(back.byId(p.id)!.epoch + 1);
    expect(await nodeMapVersionUntil(victim, serving.version, 5000)).toBe(serving.version);
  });

  it('two coordinators: SIGKILL the leader, the other is elected and removes a node that died meanwhile', async () => {
    cluster = await EtcdTestCluster.start();
    const nodes = [await cluster.startNode(), await cluster.startNode(), await cluster.startNode()];
    const coordinators = [await cluster.startCoordinator(), await cluster.startCoordinator()];
    expect((await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '4', '--replicas', '2'])).code).toBe(0);
    await Promise.all(nodes.map((n) => n.event('ready')));
    const leader = await Promise.race(coordinators.map(async (c) => (await c.event('elected'), c)));
    const other = coordinators.find((c) => c !== leader)!;
    const before = (await cluster.store.read())!.map;

    await leader.kill();
    const victim = before.partitions[0]!.node;
    await cluster.nodes.get(victim)!.kill();
    const after = await cluster.waitForMap((m) => !holds(m, victim));
    expect((await other.event('elected')).event).toBe('elected');
    expect((await other.event('changed')).version).toBe(after.version);
    // Removing the victim and filling chains back up to 2 from the third node is one pass: one version.
    expect(after.version).toBe(before.version + 1);
    for (const p of after.partitions) {
      expect(p.chain).toHaveLength(2);
      expect(new Set(chainNodes(after, p.id)).size).toBe(2);
    }
  });

  it('fault injection: a node cut off from etcd (etcd stopped) fences itself within its lease, answering STORE_FENCED to reads and writes, and serves again once it has the map', async () => {
    cluster = await EtcdTestCluster.start();
    const node = await cluster.startNode();
    const address = [...cluster.nodes.keys()][0]!;
    expect((await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '1'])).code).toBe(0);
    await node.event('ready');
    expect(await rawCode(address, 'Get', { mapVersion: 1n, key: Buffer.from('k') })).toBe('OK');
    const partitionService = 'shardpipe.store.v1.Store/partition-0';
    expect(await checkHealth(address, 2000, partitionService)).toBe('SERVING');

    let client: StoreClient | undefined;
    let putting: Promise<StoredRecord> | undefined;
    process.kill(cluster.etcd.pid!, 'SIGSTOP');
    const stoppedAt = Date.now();
    try {
      expect(await probeUntil(address, (code) => code === 'STORE_FENCED', 5000)).toBe('STORE_FENCED');
      // The lease is 1 s: fenced within it (plus one keep-alive interval and the probe's pace).
      expect(Date.now() - stoppedAt).toBeLessThan(2500);
      expect(await rawCode(address, 'Put', { mapVersion: 1n, key: Buffer.from('k'), value: Buffer.from('v') })).toBe('STORE_FENCED');
      expect(await rawCode(address, 'BulkInsert', { mapVersion: 1n, rows: [{ key: Buffer.from('k'), value: Buffer.from('v') }] })).toBe('STORE_FENCED');
      // Health says so too, for the node and for the partition it no longer serves.
      expect(await checkHealth(address, 2000)).toBe('NOT_SERVING');
      expect(await checkHealth(address, 2000, partitionService)).toBe('NOT_SERVING');
      // The thick client retries a fenced node within its budget instead of failing: its put,
      // started while fenced, completes once etcd is back (SIGCONT after its first refusal is logged).
      const lines = new PassThrough();
      const refused = new Promise<void>((resolve) => createInterface({ input: lines }).on('line', (l) => l.includes('"code":"STORE_FENCED"') && resolve()));
      client = new StoreClient({ seeds: [address], operationTimeoutMs: 20_000, logger: pino({ level: 'debug' }, lines) });
      putting = client.put(Key.fromUtf8('k'), Buffer.from('written-through-a-fence'));
      await Promise.race([refused, putting.then(() => Promise.reject(new Error('the put completed while the node was fenced')))]);
    } finally {
      process.kill(cluster.etcd.pid!, 'SIGCONT');
    }
    try {
      expect((await putting!).etag).toBe(1);
      expect((await client!.get(Key.fromUtf8('k')))?.value.toString()).toBe('written-through-a-fence');
    } finally {
      client?.close();
    }
    expect(node.logged('unfenced: serving again')).toBe(true);
    expect(await checkHealth(address, 2000, partitionService)).toBe('SERVING');
    expect(await checkHealth(address, 2000)).toBe('SERVING');
  });

  it('fault injection: a revoked lease fences the node, which registers again under a new lease and serves', async () => {
    cluster = await EtcdTestCluster.start();
    const node = await cluster.startNode();
    const address = [...cluster.nodes.keys()][0]!;
    expect((await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '1'])).code).toBe(0);
    await node.event('ready');
    const key = cluster.store.keys.node(address);
    const lease = (await cluster.etcdClient.get(key).exec()).kvs[0]!.lease;
    await cluster.etcdClient.leaseClient.leaseRevoke({ ID: lease });

    const renewed = await cluster.waitForLease(address, (l) => l !== undefined && l !== lease);
    expect(renewed).not.toBe(lease);
    expect(node.logged('fenced: refusing reads and writes')).toBe(true);
    expect(await probeUntil(address, (code) => code !== 'STORE_FENCED', 5000)).toBe('OK');
  });

  it('with etcd user auth, a node logs in with the user in the URL (never printing the password); a wrong password fails at once with STORE_ETCD_UNAUTHENTICATED', async () => {
    cluster = await EtcdTestCluster.start();
    const admin = cluster.etcdClient;
    await admin.user('root').create('r00t-secret');
    await admin.user('root').addRole('root');
    await admin.auth.authEnable();
    const [host] = cluster.etcd.url.replace('http://', '').split('/');

    const node = await cluster.startNode(undefined, [], `http://root:r00t-secret@${host}`);
    expect(node.stderr).not.toContain('r00t-secret');
    const status = await cluster.cli(['cluster', 'status', '--etcd', `http://root:wrong-pass@${host}`]);
    expect(status.code).toBe(1);
    expect(status.stderr).toContain(`etcd at http://root:***@${host}/ refused the credentials`);
    expect(status.stderr).toContain('[STORE_ETCD_UNAUTHENTICATED]');
    expect(status.stderr).not.toContain('wrong-pass');

    const init = await cluster.cli(['cluster', 'init', '--etcd', `http://root:r00t-secret@${host}`, '--partitions', '2']);
    expect(init.code).toBe(0);
    expect((await node.event('ready')).mapVersion).toBe(1);
    expect(node.stderr + init.stdout + init.stderr).not.toContain('r00t-secret');
  });
});
