import { afterEach, describe, expect, it } from 'vitest';
import { Key, PartitionMap, StoreClient, operationKeys, splitValues, type PausedReport } from '../../store/index.js';
import { EtcdTestCluster } from '../helpers/etcd-cluster.js';

// A head's write pause (the cut of a split, a head hand-over) asked for by hand as the coordinator
// asks for it, on real etcd and two real `store start --etcd` nodes, with no coordinator: the test
// itself plays it, so it can commit another partition's change between the `paused` report and the
// cut, as a drain moving two partitions at once does.
let cluster: EtcdTestCluster | undefined;
let client: StoreClient | undefined;
afterEach(async () => {
  client?.close();
  await cluster?.close();
  client = cluster = undefined;
});

describe('a write pause when the map changes under it', () => {
  it('another partition changes after the head reported paused: the head lets the writes go on and reports released (the report can no longer be committed), instead of holding them until its own partition changes', async () => {
    const c = await EtcdTestCluster.start({ lease: '2s' });
    cluster = c;
    await Promise.all([c.startNode(), c.startNode()]);
    const init = await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--partitions', '2', '--replicas', '2']);
    expect(init.code, init.stderr).toBe(0);
    await Promise.all([...c.nodes.values()].map((n) => n.event('ready')));
    const map = (await c.store.read())!.map;
    const [p0, p1] = map.partitions as [(typeof map.partitions)[number], (typeof map.partitions)[number]];
    client = new StoreClient({ seeds: [...c.nodes.keys()], operationTimeoutMs: 20_000 });
    const inP0 = Key.fromBytes(Buffer.concat([p0.start, Buffer.from('k')]));
    await client.put(inP0, Buffer.from('before'));

    const keys = operationKeys();
    // A long --max-pause: only the map change may end this pause.
    await c.etcdClient.put(keys.pauseOf(p0.id)).value(JSON.stringify({ operation: 'op-test', epoch: p0.epoch, reason: 'test cut', maxPauseMs: 60_000, requestedAtMs: Date.now() })).exec();
    const answer = async (): Promise<PausedReport | undefined> => splitValues.paused((await c.etcdClient.get(keys.pausedOf(p0.id, p0.node)).buffer()) ?? Buffer.alloc(0));
    const until = async (test: (a: PausedReport | undefined) => boolean, what: string): Promise<PausedReport> => {
      for (const deadline = Date.now() + 20_000; ; ) {
        const a = await answer();
        if (test(a)) return a!;
        if (Date.now() > deadline) throw new Error(`the head's answer was not ${what} within 20 s: ${JSON.stringify(a)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const paused = await until((a) => a?.state === 'paused', 'paused');
    expect(paused.mapVersion).toBe(map.version);
    // A write of P0 now waits (held, not refused).
    let settled = false;
    const held = client.put(inP0, Buffer.from('during')).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false);

    // Another partition's step is committed: partition 1's chain turned around (head and tail swap), epoch + 1.
    const next = PartitionMap.create(map.version + 1, map.partitions.map((p) => (p.id === p1.id ? { ...p, chain: [...p.chain].reverse(), node: p.chain[p.chain.length - 1]!.node, epoch: p.epoch + 1 } : p)), { replicas: map.replicas });
    expect(await c.store.replace(map.version, next)).toBe(true);

    const released = await until((a) => a?.state === 'released', 'released');
    expect(released.reason).toMatch(/the map changed under the pause \(version \d+ → \d+\) without a change to partition 0/);
    await held;
    expect((await client.get(inP0))?.value.toString()).toBe('during');
    // Partition 0 itself was not changed: the head still heads it and the held write went there.
    expect((await c.store.read())!.map.byId(p0.id)).toMatchObject({ node: p0.node, epoch: p0.epoch });
  }, 90_000);
});
