import { writeFile, rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient, type BulkRowInput, type PartitionMap } from '../../store/index.js';
import { EtcdTestCluster, type CliProcess } from '../helpers/etcd-cluster.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';

// Real etcd, three real `store start --etcd` processes and a coordinator. The chain's head is
// SIGKILLed and restarted with its data within its lease, so the coordinator never drops it.
let cluster: EtcdTestCluster | undefined;
const clients: StoreClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await cluster?.close();
  cluster = undefined;
});

// Long enough that a SIGKILLed node restarts (a new process, registration taken over) within it.
const LEASE = '5s';
const ROWS = 2_000;

interface CheckJson {
  consistent: boolean;
  partitions: Array<{ id: number; consistent: boolean; replicas: Array<{ node: string; count: number; digest: string; state: string }> }>;
}

function rows(count: number, tag: string): BulkRowInput[] {
  return Array.from({ length: count }, (_, i) => {
    const key = Buffer.alloc(6);
    key.writeUInt16BE(Math.floor((i * 65536) / count));
    key.writeUInt32BE(i, 2);
    return { key, value: Buffer.from(`${tag}-${i}`) };
  });
}

/** Waits (bounded) until the node's JSON log has a line with this message. */
async function logged(node: CliProcess, msg: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!node.logged(msg)) {
    if (Date.now() > deadline) throw new Error(`"${msg}" not logged within ${timeoutMs} ms: ${node.stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function check(c: EtcdTestCluster, seed: string): Promise<{ code: number | null; json: CheckJson }> {
  const out = await c.cli(['cluster', 'check', '--seeds', seed, '--json']);
  return { code: out.code, json: JSON.parse(out.stdout) as CheckJson };
}

/** One partition on a chain of three; every node runs with the hold-forwards fault switch on `holdFile`. */
async function chainOfThree(holdFile: string, options: { coordinator?: boolean } = {}): Promise<{ c: EtcdTestCluster; map: PartitionMap; client: StoreClient }> {
  const c = await EtcdTestCluster.start({ lease: LEASE });
  cluster = c;
  const env = { SHARDPIPE_FAULT_INJECTION_HOLD_FORWARDS: holdFile };
  await Promise.all([0, 1, 2].map(() => c.startNode(undefined, [], c.etcd.url, env)));
  if (options.coordinator !== false) await c.startCoordinator();
  const init = await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--partitions', '1', '--replicas', '3']);
  expect(init.code).toBe(0);
  await Promise.all([...c.nodes.values()].map((n) => n.event('ready')));
  const map = (await c.store.read())!.map;
  const client = new StoreClient({ seeds: [...c.nodes.keys()] });
  clients.push(client);
  return { c, map, client };
}

describe('a chain head restarted within its lease', () => {
  it('fault injection (forwards held): a head SIGKILLed with writes applied but never forwarded is resynced, not left divergent; cluster check consistent, every acknowledged write present', async () => {
    const holdFile = `${process.env.TMPDIR ?? '/tmp'}/shardpipe-hold-${process.pid}-${Date.now()}`;
    const { c, map, client } = await chainOfThree(holdFile);
    const head = map.partitions[0]!.node;
    const acked = rows(ROWS, 'acked');
    expect((await client.bulkPutAll([acked])).rows).toBe(ROWS);

    // The head applies these durably but sends none of them down the chain; their client gets no answer.
    await writeFile(holdFile, '');
    const unackedClient = new StoreClient({ seeds: [head] });
    clients.push(unackedClient);
    const held = rows(50, 'never-acked').map((r) => ({ ...r, key: Buffer.concat([Buffer.from('zz'), r.key]) }));
    const pending = unackedClient.bulkPutAll([held], { maxInFlight: 1 }).catch(() => undefined);
    await logged(c.nodes.get(head)!, 'fault injection: holding a forward');
    await c.nodes.get(head)!.kill('SIGKILL');
    unackedClient.close();
    await pending;
    await rm(holdFile);

    const versionBefore = (await c.store.read())!.map.version;
    const restarted = await c.startNode(head, [], c.etcd.url, { SHARDPIPE_FAULT_INJECTION_HOLD_FORWARDS: holdFile });
    await restarted.event('ready');
    await logged(restarted, 'restarted head holds writes its successor lacks');
    // The coordinator makes it a syncing replica (its successor heads), then promotes its verified copy.
    const resynced = await c.waitForMap((m) => m.version > versionBefore && m.partitions[0]!.node !== head && m.partitions[0]!.chain.some((r) => r.node === head && r.state === 'syncing'), 30_000);
    expect(resynced.partitions[0]!.chain.map((r) => r.node)).toEqual([...map.partitions[0]!.chain.map((r) => r.node).filter((n) => n !== head), head]);
    const after = await c.waitForMap((m) => m.partitions[0]!.chain.length === 3 && m.partitions[0]!.chain.every((r) => r.state === 'serving'), 60_000);
    expect(after.partitions[0]!.chain[2]!.node).toBe(head);
    await logged(restarted, 'replica sync copied and verified the partition');

    const result = await check(c, [...c.nodes.keys()].find((n) => n !== head)!);
    expect(result.json.partitions[0]!.replicas.map((r) => r.count)).toEqual([ROWS, ROWS, ROWS]);
    expect(result.json.consistent).toBe(true);
    expect(result.code).toBe(0);
    // Every acknowledged write is there; the never-acknowledged ones were dropped with the copy.
    await client.refreshMap();
    for (const i of [0, 777, ROWS - 1]) expect((await client.get(Key.fromBytes(acked[i]!.key)))?.value.toString()).toBe(`acked-${i}`);
    expect(await client.get(Key.fromBytes(held[0]!.key))).toBeUndefined();
    // The chain takes writes again, at its new head, and they reach every replica.
    await client.put(Key.fromBytes(Buffer.from('after-resync')), Buffer.from('ok'));
    const again = await check(c, head);
    expect(again.json.partitions[0]!.replicas.map((r) => r.count)).toEqual([ROWS + 1, ROWS + 1, ROWS + 1]);
    expect(again.code).toBe(0);
  }, 180_000);

  it('fault injection (forwards held): with no coordinator running, the fenced restarted head refuses writes saying to start one (or cluster repair); once a coordinator starts, the chain takes writes again', async () => {
    const holdFile = `${process.env.TMPDIR ?? '/tmp'}/shardpipe-hold-${process.pid}-${Date.now()}-nocoord`;
    const { c, map, client } = await chainOfThree(holdFile, { coordinator: false });
    const head = map.partitions[0]!.node;
    expect((await client.bulkPutAll([rows(ROWS, 'acked')])).rows).toBe(ROWS);

    await writeFile(holdFile, '');
    const unackedClient = new StoreClient({ seeds: [head] });
    clients.push(unackedClient);
    const pending = unackedClient.bulkPutAll([rows(50, 'never-acked').map((r) => ({ ...r, key: Buffer.concat([Buffer.from('zz'), r.key]) }))], { maxInFlight: 1 }).catch(() => undefined);
    await logged(c.nodes.get(head)!, 'fault injection: holding a forward');
    await c.nodes.get(head)!.kill('SIGKILL');
    unackedClient.close();
    await pending;
    await rm(holdFile);

    const restarted = await c.startNode(head, [], c.etcd.url, { SHARDPIPE_FAULT_INJECTION_HOLD_FORWARDS: holdFile });
    await restarted.event('ready');
    await logged(restarted, 'restarted head holds writes its successor lacks');
    expect(restarted.stderr).toContain('none running? start `shardpipe coordinator --etcd URL`');
    const raw = new RawStoreClient(head);
    try {
      const put = await raw.call('Put', { mapVersion: BigInt(map.version), key: Buffer.from('while-fenced'), value: Buffer.from('x') });
      expect(put.ok).toBe(false);
      if (!put.ok) {
        expect(put.code).toBe('STORE_FENCED');
        expect(put.error.details).toContain('if none runs, start one: `shardpipe coordinator --etcd URL`');
        expect(put.error.details).toContain(`shardpipe cluster repair 0 --replica ${head} --etcd URL`);
      }
    } finally {
      raw.close();
    }

    // Doing what the message says: a coordinator resyncs the head, and writes flow again.
    await c.startCoordinator();
    await c.waitForMap((m) => m.partitions[0]!.node !== head && m.partitions[0]!.chain.some((r) => r.node === head), 30_000);
    await client.refreshMap();
    await client.put(Key.fromBytes(Buffer.from('after-coordinator')), Buffer.from('ok'));
    expect((await client.get(Key.fromBytes(Buffer.from('after-coordinator'))))?.value.toString()).toBe('ok');
  }, 180_000);

  it('a quiet head (everything it applied was acknowledged) restarted within its lease keeps its place and its stream: no resync, writes flow, cluster check consistent', async () => {
    const holdFile = `${process.env.TMPDIR ?? '/tmp'}/shardpipe-hold-${process.pid}-${Date.now()}-quiet`;
    const { c, map, client } = await chainOfThree(holdFile);
    const head = map.partitions[0]!.node;
    const acked = rows(ROWS, 'acked');
    expect((await client.bulkPutAll([acked])).rows).toBe(ROWS);

    await c.nodes.get(head)!.kill('SIGKILL');
    const restarted = await c.startNode(head);
    await restarted.event('ready');
    await logged(restarted, 'restarted head: its successor holds every write it applied');
    await client.put(Key.fromBytes(Buffer.from('after-restart')), Buffer.from('ok'));

    const now = (await c.store.read())!.map;
    expect(now.version).toBe(map.version);
    expect(now.partitions[0]!.node).toBe(head);
    expect(restarted.logged('replica sync started')).toBe(false);
    const result = await check(c, head);
    expect(result.json.partitions[0]!.replicas.map((r) => r.count)).toEqual([ROWS + 1, ROWS + 1, ROWS + 1]);
    expect(result.json.consistent).toBe(true);
    expect(result.code).toBe(0);
  }, 120_000);
});
