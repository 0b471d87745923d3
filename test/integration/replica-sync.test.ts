import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient, decodeRecord, encodeRecord, type BulkRowInput, type Partition, type PartitionMap } from '../../store/index.js';
import { EtcdTestCluster } from '../helpers/etcd-cluster.js';

// Real etcd, real `store start --etcd` and `coordinator` processes, SIGKILL. Chains forward every
// write from the head to the tail, so replicas hold the same data without any repair; a syncing
// replica copies from its chain's tail (the last serving replica).
let cluster: EtcdTestCluster | undefined;
afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

interface CheckJson {
  consistent: boolean;
  partitions: Array<{ id: number; epoch: number; consistent: boolean; seq?: number; attempts: number; pages: { checked: number; total: number }; diverging?: string[]; firstDifference?: { start: string; end: string }; replicas: Array<{ node: string; count: number; digest: string; state: string; seq: number }> }>;
}

/** Keys spread over the first-two-bytes space, so both halves of a 2-partition split get some. */
function rows(count: number, tag = 'v'): BulkRowInput[] {
  return Array.from({ length: count }, (_, i) => {
    const key = Buffer.alloc(6);
    key.writeUInt16BE(Math.floor((i * 65536) / count));
    key.writeUInt32BE(i, 2);
    return { key, value: Buffer.from(`${tag}-${i}-${'x'.repeat(40)}`) };
  }).sort((a, b) => Buffer.compare(a.key, b.key));
}

const allServing = (p: Partition | undefined, size: number): boolean => p !== undefined && p.chain.length === size && p.chain.every((r) => r.state === 'serving');

async function check(c: EtcdTestCluster, seed: string, flags: string[] = []): Promise<{ code: number | null; json: CheckJson; stderr: string }> {
  const out = await c.cli(['cluster', 'check', '--seeds', seed, '--json', ...flags]);
  return { code: out.code, json: JSON.parse(out.stdout) as CheckJson, stderr: out.stderr };
}

/**
 * 3 nodes, 2 partitions, RF `replicas` (placement: p0 on [n0, n1, …], p1 on [n1, n2, …]). Rows are
 * written through the heads only; the chains forward them, so every replica holds them at once.
 */
async function forwardedCluster(lease: string, replicas: number): Promise<{ c: EtcdTestCluster; map: PartitionMap; client: StoreClient; data: BulkRowInput[] }> {
  const c = await EtcdTestCluster.start({ lease });
  cluster = c;
  const nodes = [await c.startNode(), await c.startNode(), await c.startNode()];
  await c.startCoordinator();
  expect((await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--partitions', '2', '--replicas', String(replicas)])).code).toBe(0);
  await Promise.all(nodes.map((n) => n.event('ready')));
  const map = (await c.store.read())!.map;
  expect(map.partitions.every((p) => allServing(p, replicas))).toBe(true);
  const client = new StoreClient({ seeds: [map.partitions[0]!.node], operationTimeoutMs: 20_000 });
  const data = rows(6000);
  expect((await client.bulkPutAll([data.slice(0, 3000), data.slice(3000)])).rows).toBe(6000);
  return { c, map, client, data };
}

/** The sources the node's `replica sync started` log lines name for a partition, in order. */
function syncSources(node: { stderr: string }, partition: number): string[] {
  return node.stderr
    .split('\n')
    .filter((l) => l.includes('"msg":"replica sync started'))
    .map((l) => JSON.parse(l) as { partition: number; source: string })
    .filter((l) => l.partition === partition)
    .map((l) => l.source);
}

async function waitOrDump(c: EtcdTestCluster, test: (m: PartitionMap) => boolean): Promise<PartitionMap> {
  return c.waitForMap(test, 60_000).catch(async (e) => {
    console.log('DEBUG', JSON.stringify((await c.store.read())!.map.toJson()), JSON.stringify(await c.store.syncReports()));
    for (const [a, n] of c.nodes) console.log('NODE', a, n.stderr.split('\n').filter((l) => /sync|error|warn/i.test(l)).slice(-10).join('\n'));
    for (const n of c.coordinators) console.log('COORD', n.stderr.slice(-3000));
    throw e;
  });
}

describe('replica sync on etcd', () => {
  it('a fresh node added while writes keep coming (puts, deletes, bulk upserts) syncs, verifies and becomes tail; cluster check consistent, no deleted key brought back', async () => {
    const { c, map, client, data } = await forwardedCluster('2s', 3);
    // One node goes; the chains run on two replicas until a fresh node is synced in under load.
    const victim = map.partitions[0]!.chain[2]!.node;
    await c.nodes.get(victim)!.kill('SIGKILL');
    await waitOrDump(c, (m) => m.partitions.every((p) => allServing(p, 2)));
    await client.refreshMap();
    let stop = false;
    let writes = 0;
    // When each write was sent and answered: the check below must overlap at least one of them.
    const spans: Array<[number, number]> = [];
    const timed = async (write: Promise<unknown>, startedAt: number): Promise<void> => {
      await write;
      spans.push([startedAt, Date.now()]);
      writes++;
    };
    const deleted = new Set<number>();
    const load = (async () => {
      for (let round = 0; !stop; round++) {
        // Deletes and changes all over the key range (behind and ahead of the copy), and a bulk upsert.
        const i = (round * 997) % data.length;
        await timed(client.delete(Key.fromBytes(data[i]!.key)), Date.now());
        deleted.add(i);
        const j = (round * 389 + 11) % data.length;
        if (!deleted.has(j)) await timed(client.put(Key.fromBytes(data[j]!.key), Buffer.from(`changed-${round}`)), Date.now());
        const from = (round * 211) % (data.length - 50);
        const batch = data.slice(from, from + 50).filter((_, k) => !deleted.has(from + k));
        if (batch.length > 0) await timed(client.bulkPutAll([batch.map((r) => ({ key: r.key, value: Buffer.from(`bulk-${round}`) }))]), Date.now());
      }
    })();
    const fresh = await c.startNode();
    const promoted = await waitOrDump(c, (m) => m.partitions.every((p) => allServing(p, 3) && p.chain[2]!.node !== victim));
    // Checked while the writes go on: every replica's digest is taken at one sequence number.
    const checkStartedAt = Date.now();
    const during = await check(c, promoted.partitions[0]!.node);
    const checkEndedAt = Date.now();
    expect(during.json.consistent, JSON.stringify(during.json)).toBe(true);
    for (const p of during.json.partitions) {
      expect(p.seq, `partition ${p.id}`).toBeGreaterThan(0);
      for (const r of p.replicas) expect(r.seq, `partition ${p.id} on ${r.node}`).toBe(p.seq);
    }
    stop = true;
    await load;
    // A write answered during the check, or sent before it and answered after it.
    expect(spans.some(([sent, answered]) => answered >= checkStartedAt && sent <= checkEndedAt), 'writes went on during the check').toBe(true);
    expect(writes).toBeGreaterThan(0);
    expect(promoted.partitions.every((p) => p.chain.some((r) => r.node === fresh.args[5]))).toBe(true);
    const seed = promoted.partitions[0]!.node;
    const result = await check(c, seed);
    expect(result.json.consistent, JSON.stringify(result.json)).toBe(true);
    expect(result.code).toBe(0);
    await client.refreshMap();
    for (const i of deleted) expect(await client.get(Key.fromBytes(data[i]!.key))).toBeUndefined();
    client.close();
  }, 180_000);

  it('writes forwarded down the chains reach every replica (cluster check consistent, no repair); a node SIGKILLed, written around and restarted with its data syncs back from the tail (new, changed and deleted keys) and serves; a fresh fourth node replacing it syncs and becomes tail with equal checksums', async () => {
    const { c, map, client, data } = await forwardedCluster('1s', 3);
    const seed = map.partitions[0]!.node;
    // The node heading no partition: losing it leaves every chain a serving head.
    const victim = [...c.nodes.keys()].find((n) => !map.partitions.some((p) => p.node === n))!;
    try {
      // Written at the heads only: every replica of both chains holds every row, byte for byte.
      let checked = await check(c, seed);
      expect(checked.stderr).toBe('');
      expect(checked.code).toBe(0);
      expect(checked.json.consistent).toBe(true);
      for (const p of checked.json.partitions) {
        expect(p.replicas.map((r) => r.node)).toEqual(map.byId(p.id)!.chain.map((r) => r.node));
        expect(new Set(p.replicas.map((r) => r.digest)).size).toBe(1);
        expect(new Set(p.replicas.map((r) => r.count)).size).toBe(1);
        expect(p.replicas.every((r) => r.state === 'serving' && /^[0-9a-f]{64}$/.test(r.digest))).toBe(true);
      }
      expect(checked.json.partitions.reduce((n, p) => n + p.replicas[0]!.count, 0)).toBe(data.length);
      expect((await c.store.read())!.map.version).toBe(map.version);

      // The restart: SIGKILL it; the coordinator drops it from both chains (no other node can fill in).
      await c.nodes.get(victim)!.kill();
      const without = await waitOrDump(c, (m) => m.replicasOf(victim).length === 0);
      const p1 = without.byId(1)!;
      const inP1 = data.filter((r) => Buffer.compare(r.key, p1.start) >= 0);
      for (const r of inP1.slice(0, 50)) expect(await client.delete(Key.fromBytes(r.key))).toBe(true);
      for (const r of inP1.slice(50, 80)) await client.put(Key.fromBytes(r.key), Buffer.from('changed while away'));
      const extra = rows(500, 'late').filter((r) => Buffer.compare(r.key, p1.start) >= 0).map((r) => ({ ...r, key: Buffer.concat([r.key, Buffer.from('+')]) }));
      await client.bulkPutAll([extra]);
      const expected = inP1.length - 50 + extra.length;
      // The survivors got those writes by forwarding alone.
      checked = await check(c, seed);
      expect(checked.code).toBe(0);
      const aroundP1 = checked.json.partitions.find((p) => p.id === 1)!;
      expect(aroundP1.replicas.map((r) => r.node)).toEqual(p1.chain.map((r) => r.node));
      expect(aroundP1.replicas.map((r) => r.count)).toEqual([expected, expected]);
      expect(new Set(aroundP1.replicas.map((r) => r.digest)).size).toBe(1);

      const restarted = await c.startNode(victim);
      await restarted.event('ready');
      const back = await waitOrDump(c, (m) => m.partitions.every((p) => allServing(p, 3) && p.chain[2]!.node === victim));
      // Added as syncing tail (+1), promoted (+1).
      expect(back.byId(1)!.epoch).toBe(p1.epoch + 2);
      expect(restarted.logged('replica sync copied and verified the partition')).toBe(true);
      // It copied from each chain's tail (the last serving replica), not from its head.
      // (A failed attempt starts again from the same source, so there may be more than one line.)
      for (const p of without.partitions) expect(new Set(syncSources(restarted, p.id))).toEqual(new Set([p.chain.at(-1)!.node]));
      expect(syncSources(restarted, 1)).not.toContain(p1.node);
      checked = await check(c, seed);
      expect(checked.code).toBe(0);
      expect(checked.json.consistent).toBe(true);
      const backP1 = checked.json.partitions.find((p) => p.id === 1)!;
      expect(backP1.replicas.map((r) => r.count)).toEqual([expected, expected, expected]);
      expect(new Set(backP1.replicas.map((r) => r.digest)).size).toBe(1);
      // The deleted keys are gone on it too, and a changed one reads as changed at its new tail.
      expect(await client.get(Key.fromBytes(inP1[0]!.key))).toBeUndefined();
      expect((await client.get(Key.fromBytes(inP1[50]!.key)))?.value.toString()).toBe('changed while away');

      // Replace the node for good: SIGKILL it, start a fresh one; it joins both chains as syncing tail, copies, serves.
      await c.nodes.get(victim)!.kill();
      await waitOrDump(c, (m) => m.replicasOf(victim).length === 0);
      const fresh = await c.startNode();
      const address = [...c.nodes.keys()].at(-1)!;
      await fresh.event('ready');
      const replaced = await waitOrDump(c, (m) => m.partitions.every((p) => allServing(p, 3) && p.chain[2]!.node === address));
      expect(replaced.byId(1)!.chain.map((r) => r.node).slice(0, 2)).toEqual(p1.chain.map((r) => r.node));
      for (const p of without.partitions) expect(new Set(syncSources(fresh, p.id))).toEqual(new Set([p.chain.at(-1)!.node]));
      checked = await check(c, seed);
      expect(checked.code).toBe(0);
      expect(checked.json.consistent).toBe(true);
      for (const p of checked.json.partitions) {
        expect(p.replicas.map((r) => r.node)[2]).toBe(address);
        expect(new Set(p.replicas.map((r) => r.digest)).size).toBe(1);
        expect(new Set(p.replicas.map((r) => r.count)).size).toBe(1);
      }
      expect(checked.json.partitions.find((p) => p.id === 1)!.replicas[2]!.count).toBe(expected);
      // Now the tail: a write at the head is forwarded to it and read back from it.
      const probe = Buffer.concat([p1.start, Buffer.from('probe')]);
      await client.put(Key.fromBytes(probe), Buffer.from('after the replacement'));
      expect((await client.get(Key.fromBytes(probe)))?.value.toString()).toBe('after the replacement');
      checked = await check(c, seed);
      expect(checked.code).toBe(0);
      expect(checked.json.partitions.find((p) => p.id === 1)!.replicas.map((r) => r.count)).toEqual([expected + 1, expected + 1, expected + 1]);
    } finally {
      client.close();
    }
  }, 300_000);

  it('fault injection: cluster check names a replica whose LevelDB got a wrong value while it was stopped (and the first differing key range); cluster repair resyncs it and the check agrees again', async () => {
    // A lease longer than the stop, so the node comes back into its chain as serving, corruption and all.
    const { c, map, client, data } = await forwardedCluster('15s', 2);
    const p1 = map.byId(1)!;
    const head = p1.chain[0]!.node;
    const tail = p1.chain[1]!.node;
    try {
      const victimKey = data.filter((r) => Buffer.compare(r.key, p1.start) >= 0)[1234]!.key;
      await c.nodes.get(tail)!.kill();
      const db = new ClassicLevel<Buffer, Buffer>(join(c.dir.sub(`node-${tail.replace(':', '-')}`), 'partition-1'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      await db.open();
      const stored = decodeRecord(Buffer.from((await db.get(Buffer.concat([Buffer.from('d'), victimKey])))!));
      await db.put(Buffer.concat([Buffer.from('d'), victimKey]), encodeRecord({ ...stored, value: Buffer.from('bit rot') }));
      await db.close();
      const restarted = await c.startNode(tail);
      await restarted.event('ready');
      expect((await c.store.read())!.map.version).toBe(map.version);

      const bad = await check(c, head);
      expect(bad.code).toBe(1);
      expect(bad.json.consistent).toBe(false);
      expect(bad.json.partitions.find((p) => p.id === 0)!.consistent).toBe(true);
      const p1Check = bad.json.partitions.find((p) => p.id === 1)!;
      expect(p1Check.consistent).toBe(false);
      expect(p1Check.diverging).toEqual([tail]);
      expect(p1Check.replicas.map((r) => r.count)).toEqual([p1Check.replicas[0]!.count, p1Check.replicas[0]!.count]);
      const range = p1Check.firstDifference!;
      expect(Buffer.compare(victimKey, Buffer.from(range.start, 'hex'))).toBeGreaterThanOrEqual(0);
      expect(range.end === '' || Buffer.compare(victimKey, Buffer.from(range.end, 'hex')) < 0).toBe(true);
      // The search narrowed it: well under the partition's rows.
      expect(range.start !== p1.start.toString('hex') || range.end !== p1.end.toString('hex')).toBe(true);
      const text = await c.cli(['cluster', 'check', '--seeds', head]);
      expect(text.code).toBe(1);
      expect(text.stdout).toContain(`DIVERGES: ${tail}`);

      // Page by page (~3,000 rows in pages of ~400): the same verdict, the same sums, the difference found inside its page.
      const paged = await check(c, head, ['--page-entries', '400']);
      expect(paged.code).toBe(1);
      const p1Paged = paged.json.partitions.find((p) => p.id === 1)!;
      expect(p1Paged.pages.total).toBeGreaterThan(3);
      expect(p1Paged.pages.checked).toBe(p1Paged.pages.total);
      expect(p1Check.pages).toEqual({ checked: 1, total: 1 });
      expect(p1Paged.diverging).toEqual([tail]);
      expect(p1Paged.replicas.map((r) => [r.count, r.digest])).toEqual(p1Check.replicas.map((r) => [r.count, r.digest]));
      expect(paged.json.partitions.find((p) => p.id === 0)!.consistent).toBe(true);
      const pagedRange = p1Paged.firstDifference!;
      expect(Buffer.compare(victimKey, Buffer.from(pagedRange.start, 'hex'))).toBeGreaterThanOrEqual(0);
      expect(pagedRange.end === '' || Buffer.compare(victimKey, Buffer.from(pagedRange.end, 'hex')) < 0).toBe(true);
      const inRange = data.filter((r) => Buffer.compare(r.key, Buffer.from(pagedRange.start, 'hex')) >= 0 && (pagedRange.end === '' || Buffer.compare(r.key, Buffer.from(pagedRange.end, 'hex')) < 0)).length;
      expect(inRange).toBeLessThan(400);
      expect((await c.cli(['cluster', 'check', '--seeds', head, '--page-entries', '0'])).code).toBe(64);

      const refusedHead = await c.cli(['cluster', 'repair', '1', '--replica', '127.0.0.1:1', '--etcd', c.etcd.url]);
      expect(refusedHead.code).toBe(1);
      expect(refusedHead.stderr).toMatch(/partition 1 has no replica on 127\.0\.0\.1:1.*\[STORE_REPAIR_REFUSED\]/);
      const repaired = await c.cli(['cluster', 'repair', '1', '--replica', tail, '--etcd', c.etcd.url]);
      expect(repaired.code).toBe(0);
      await c.waitForMap((m) => m.version > map.version + 1 && allServing(m.byId(1), 2), 30_000);
      const good = await check(c, head);
      expect(good.code).toBe(0);
      expect(good.json.consistent).toBe(true);
      const p1Good = good.json.partitions.find((p) => p.id === 1)!;
      expect(p1Good.replicas[1]!.digest).toBe(p1Good.replicas[0]!.digest);
      expect(p1Good.replicas[1]!.digest).not.toBe(p1Check.replicas[1]!.digest);
      const pagedGood = await check(c, head, ['--page-entries', '400']);
      expect(pagedGood.code).toBe(0);
      expect(pagedGood.json.partitions.find((p) => p.id === 1)!.replicas.map((r) => r.digest)).toEqual(p1Good.replicas.map((r) => r.digest));
    } finally {
      client.close();
    }
  }, 240_000);
});
