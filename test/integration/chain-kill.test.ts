import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PartitionStore } from '../../store/partition-store.js';
import { Key, StoreClient, checkHealth, type BulkRowInput, type PartitionMap } from '../../store/index.js';
import { EtcdTestCluster } from '../helpers/etcd-cluster.js';
import { StoreCluster } from '../helpers/store-cluster.js';

// Real etcd, three real `store start --etcd` processes and a coordinator; SIGKILL mid-load.
let cluster: EtcdTestCluster | undefined;
let client: StoreClient | undefined;
afterEach(async () => {
  client?.close();
  client = undefined;
  await cluster?.close();
  cluster = undefined;
});

const ROWS = 60_000;
const BATCH = 2_000;

function rows(): BulkRowInput[] {
  return Array.from({ length: ROWS }, (_, i) => {
    const key = Buffer.alloc(6);
    key.writeUInt16BE(Math.floor((i * 65536) / ROWS));
    key.writeUInt32BE(i, 2);
    return { key, value: Buffer.from(`value-${i}`) };
  });
}

/** The count and digest (etags included) of each replica's LevelDB of partition `id`, read from its folder. */
async function replicaDigest(dir: string, id: number): Promise<{ count: number; digest: string }> {
  const store = await PartitionStore.open(join(dir, `partition-${id}`), { sweepIntervalMs: 0 });
  try {
    const d = await store.checksum(Buffer.alloc(0), Buffer.alloc(0), { includeEtag: true });
    return { count: d.count, digest: d.toHex() };
  } finally {
    await store.close();
  }
}

describe('chain replication with real node processes', () => {
  it('RF=3: SIGKILL of a node mid-load (head of one chain, middle of another, tail of the third): the load finishes, rows lost = 0, both survivors of every chain hold identical replicas', async () => {
    cluster = await EtcdTestCluster.start({ lease: '1s' });
    await Promise.all([cluster.startNode(), cluster.startNode(), cluster.startNode()]);
    await cluster.startCoordinator();
    const init = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '3', '--replicas', '3']);
    expect(init.stderr).toBe('');
    expect(init.code).toBe(0);
    await Promise.all([...cluster.nodes.values()].map((n) => n.event('ready')));
    const map = (await cluster.store.read())!.map;
    const victim = map.partitions[0]!.node;
    const roles = map.partitions.map((p) => p.chain.findIndex((r) => r.node === victim)).sort();
    // With three nodes and R=3 one node is head, middle and tail at once: one kill covers all three cases.
    expect(roles).toEqual([0, 1, 2]);

    client = new StoreClient({ seeds: [...cluster.nodes.keys()] });
    const data = rows();
    let acked = 0;
    let killed: Promise<void> | undefined;
    for (let from = 0; from < ROWS; from += BATCH * 2) {
      // Two batches in flight, so the kill lands between a write and its ack somewhere.
      await Promise.all(
        [from, from + BATCH].map(async (start) => {
          const result = await client!.bulkPutAll([data.slice(start, start + BATCH)], { maxInFlight: 2, batchMaxRows: 500 });
          acked += result.rows;
        }),
      );
      if (killed === undefined && acked >= ROWS / 3) killed = cluster.nodes.get(victim)!.kill('SIGKILL');
    }
    await killed;
    expect(acked).toBe(ROWS);

    const after = await cluster.waitForMap((m: PartitionMap) => m.partitions.every((p) => !p.chain.some((r) => r.node === victim)));
    expect(after.partitions.every((p) => p.chain.length === 2)).toBe(true);
    // Reads at the tails see every row.
    await client.refreshMap();
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(ROWS);
    for (const i of [0, 12_345, ROWS - 1]) expect((await client.get(Key.fromBytes(data[i]!.key)))?.value.toString()).toBe(`value-${i}`);

    // Stop the survivors and compare their LevelDB folders partition by partition.
    const survivors = [...cluster.nodes.keys()].filter((n) => n !== victim);
    await Promise.all(survivors.map((n) => cluster!.nodes.get(n)!.kill('SIGKILL')));
    let total = 0;
    for (const p of after.partitions) {
      const digests = await Promise.all(p.chain.map((r) => replicaDigest(cluster!.dir.sub(`node-${r.node.replace(':', '-')}`), p.id)));
      const expected = data.filter((row) => Buffer.compare(row.key, p.start) >= 0 && (p.end.length === 0 || Buffer.compare(row.key, p.end) < 0)).length;
      expect(digests[0]!.count, `partition ${p.id} on ${p.chain[0]!.node}`).toBe(expected);
      expect(digests[1], `partition ${p.id}: ${p.chain[1]!.node} equals ${p.chain[0]!.node}`).toEqual(digests[0]);
      total += digests[0]!.count;
    }
    expect(total).toBe(ROWS);
  }, 120_000);
});

describe('a node SIGKILLed and restarted within its lease (real processes, etcd)', () => {
  it('RF=3: the restarted node (head, middle and tail of different chains) continues its chains from its persisted positions: never dropped from a chain, the load finishes, every replica equal', async () => {
    // A lease long enough that the restart lands inside it: the coordinator never sees the node go.
    cluster = await EtcdTestCluster.start({ lease: '6s' });
    await Promise.all([cluster.startNode(), cluster.startNode(), cluster.startNode()]);
    await cluster.startCoordinator();
    const init = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '3', '--replicas', '3']);
    expect(init.code, init.stderr).toBe(0);
    await Promise.all([...cluster.nodes.values()].map((n) => n.event('ready')));
    const before = (await cluster.store.read())!.map;
    const victim = before.partitions[1]!.node;
    client = new StoreClient({ seeds: [...cluster.nodes.keys()] });
    const data = rows().slice(0, 30_000);
    let acked = 0;
    let restarted: Promise<unknown> | undefined;
    for (let from = 0; from < data.length; from += BATCH * 2) {
      await Promise.all(
        [from, from + BATCH].map(async (start) => {
          const result = await client!.bulkPutAll([data.slice(start, start + BATCH)], { maxInFlight: 2, batchMaxRows: 500 });
          acked += result.rows;
        }),
      );
      if (restarted === undefined && acked >= data.length / 3) {
        const node = cluster.nodes.get(victim)!;
        restarted = node.kill('SIGKILL').then(async () => {
          await cluster!.startNode(victim);
          await cluster!.nodes.get(victim)!.event('ready');
        });
      }
    }
    await restarted;
    expect(acked).toBe(data.length);
    // Point writes after the restart go through every chain the restarted node is in.
    for (const p of before.partitions) {
      const key = Key.fromBytes(Buffer.concat([p.start.length === 0 ? Buffer.from([0]) : p.start, Buffer.from('after-restart')]));
      await client.put(key, Buffer.from(`p${p.id}`));
    }
    const now = (await cluster.store.read())!.map;
    // Never removed: its chains kept their epochs (no map change at all).
    expect(now.version).toBe(before.version);
    expect(now.partitions.map((p) => p.epoch)).toEqual(before.partitions.map((p) => p.epoch));
    expect((await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(data.length + before.partitions.length);
    // Per-partition health: SERVING where the node answers clients (head, tail), NOT_SERVING in the middle.
    for (const p of now.partitions) {
      const service = `shardpipe.store.v1.Store/partition-${p.id}`;
      expect(await Promise.all(p.chain.map((r) => checkHealth(r.node, 2000, service)))).toEqual(['SERVING', 'NOT_SERVING', 'SERVING']);
    }
    const nodes = [...cluster.nodes.keys()];
    await Promise.all(nodes.map((n) => cluster!.nodes.get(n)!.kill('SIGKILL')));
    for (const p of now.partitions) {
      const digests = await Promise.all(p.chain.map((r) => replicaDigest(cluster!.dir.sub(`node-${r.node.replace(':', '-')}`), p.id)));
      for (let i = 1; i < digests.length; i++) expect(digests[i], `partition ${p.id}: ${p.chain[i]!.node} equals ${p.chain[0]!.node}`).toEqual(digests[0]);
    }
  }, 180_000);
});

describe('replication lag and forward retries are reported (real processes, etcd, SIGSTOP)', () => {
  it('a tail that stops answering past --forward-timeout: its head\'s retries reach etcd, the coordinator\'s log and cluster status; every replica exports shardpipe_replica_lag_sequences, back at 0 once caught up', async () => {
    cluster = await EtcdTestCluster.start({ lease: '5s' });
    await Promise.all([cluster.startNode(undefined, ['--forward-timeout', '500ms', '--metrics-port', '0']), cluster.startNode(undefined, ['--forward-timeout', '500ms', '--metrics-port', '0'])]);
    const coordinator = await cluster.startCoordinator();
    const init = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '1', '--replicas', '2']);
    expect(init.code, init.stderr).toBe(0);
    const ready = await Promise.all([...cluster.nodes.values()].map((n) => n.event('ready')));
    const map = (await cluster.store.read())!.map;
    const [head, tail] = map.partitions[0]!.chain.map((r) => r.node) as [string, string];
    client = new StoreClient({ seeds: [head], operationTimeoutMs: 30_000 });
    await client.put(Key.fromBytes(Buffer.from('a')), Buffer.from('1'));
    const stopped = cluster.nodes.get(tail)!;
    stopped.child!.kill('SIGSTOP');
    // Answered once the tail answers again; meanwhile the head's forward times out and goes again.
    const write = client.put(Key.fromBytes(Buffer.from('b')), Buffer.from('2'));
    const reports = async () => (await cluster!.store.replicationReports()).find((r) => r.node === head && r.partition === 0);
    await expect.poll(async () => (await reports())?.forwardRetries ?? 0, { timeout: 15_000, interval: 200 }).toBeGreaterThan(0);
    stopped.child!.kill('SIGCONT');
    await write;
    const report = (await reports())!;
    expect(report.lastForwardRetry?.successor).toBe(tail);
    await expect.poll(() => coordinator.logged('a replica sent forwards again'), { timeout: 10_000, interval: 200 }).toBe(true);
    const status = await cluster.cli(['cluster', 'status', '--etcd', cluster.etcd.url, '--json']);
    expect(status.code, status.stderr).toBe(0);
    const chain = (JSON.parse(status.stdout) as { partitions: Array<{ chain: Array<{ node: string; forwardRetries?: number; lagSequences?: number }> }> }).partitions[0]!.chain;
    expect(chain.find((r) => r.node === head)!.forwardRetries).toBeGreaterThan(0);
    const text = await cluster.cli(['cluster', 'status', '--etcd', cluster.etcd.url]);
    expect(text.stdout).toContain(`forwards retried`);
    expect(text.stdout).toContain(`last to ${tail}`);
    // Caught up: each replica's lag is 0, on /metrics and in etcd.
    for (const r of ready) {
      const port = r.metricsPort as number;
      await expect
        .poll(async () => {
          const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
          return /shardpipe_replica_lag_sequences\{[^}]*partition="0"[^}]*\} 0$/m.test(body);
        }, { timeout: 10_000, interval: 200 })
        .toBe(true);
    }
    await expect.poll(async () => (await cluster!.store.replicationReports()).find((r) => r.node === tail)?.lagSequences, { timeout: 10_000, interval: 200 }).toBe(0);
  }, 90_000);
});

describe('CAS through a chain whose tail stops answering (real processes, SIGSTOP)', () => {
  it('an attempt without an answer, then a mismatch on retry, is reported as STORE_AMBIGUOUS, and the CAS is applied exactly once', async () => {
    const nodes = await StoreCluster.start({ nodes: 2, partitions: 1, replicas: 2, extraArgs: ['--no-sync', '--forward-timeout', '1s'] });
    try {
      client = new StoreClient({ seeds: nodes.seeds, rpcDeadlineMs: 500, operationTimeoutMs: 20_000 });
      const key = Key.fromBytes(Buffer.from('acct'));
      const first = await client.put(key, Buffer.from('100'), { expectedEtag: 0 });
      const tail = nodes.nodes[1]!;
      tail.child!.kill('SIGSTOP');
      // The head applies the CAS and waits for the stopped tail's ack; the client's attempt times out.
      const cas = client.put(key, Buffer.from('90'), { expectedEtag: first.etag }).then(
        () => 'acknowledged',
        (error: unknown) => error,
      );
      const outcome = await cas;
      tail.child!.kill('SIGCONT');
      expect(outcome).toMatchObject({ code: 'STORE_AMBIGUOUS', retryable: false });
      // The caller reads (at the tail, once it answers again) and finds its write there — once.
      // The head re-sends the forward after its --forward-timeout; wait until the tail has it.
      let seen = await client.get(key);
      for (const until = Date.now() + 10_000; seen?.value.toString() !== '90' && Date.now() < until; ) seen = await client.get(key);
      expect(seen?.value.toString()).toBe('90');
      expect(seen?.etag).toBe(first.etag + 1);
    } finally {
      await nodes.close();
    }
  }, 60_000);
});
