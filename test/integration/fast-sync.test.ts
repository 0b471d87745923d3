import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient, StoreRouter, decodeRecord, encodeRecord, operationKeys, type BulkRowInput, type Partition, type PartitionMap, type SyncReport } from '../../store/index.js';
import { EtcdTestCluster, type CliProcess } from '../helpers/etcd-cluster.js';

// Fast sync (store/README.md "Sync of a syncing replica") on real etcd, real `store start --etcd`
// and `coordinator` processes, SIGKILL: a replica back from an outage copies only the keys its
// chain's tail changed since the replica's last write (from the tail's change log), and copies the
// whole partition when the log does not reach back that far; a throttled sync keeps to its rate.
let cluster: EtcdTestCluster | undefined;
afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

interface CheckJson {
  consistent: boolean;
  partitions: Array<{ id: number; consistent: boolean; replicas: Array<{ node: string; count: number; digest: string; state: string }> }>;
}

/** Keys spread over the first-two-bytes space, so both partitions of a 2-partition split get some. */
function rows(count: number, tag = 'v'): BulkRowInput[] {
  return Array.from({ length: count }, (_, i) => {
    const key = Buffer.alloc(6);
    key.writeUInt16BE(Math.floor((i * 65536) / count));
    key.writeUInt32BE(i, 2);
    return { key, value: Buffer.from(`${tag}-${i}-${'x'.repeat(60)}`) };
  }).sort((a, b) => Buffer.compare(a.key, b.key));
}

const allServing = (p: Partition | undefined, size: number): boolean => p !== undefined && p.chain.length === size && p.chain.every((r) => r.state === 'serving');
const inPartition = (p: Partition, key: Buffer): boolean => Buffer.compare(key, p.start) >= 0 && (p.end.length === 0 || Buffer.compare(key, p.end) < 0);

/** Every sync report written to etcd (they are removed once the replica is promoted), by watch. */
async function recordSyncReports(c: EtcdTestCluster): Promise<{ reports: SyncReport[]; seen: (test: (r: SyncReport) => boolean) => Promise<SyncReport>; stop: () => Promise<void> }> {
  const reports: SyncReport[] = [];
  let waiters: Array<{ test: (r: SyncReport) => boolean; resolve: (r: SyncReport) => void }> = [];
  const watcher = await c.etcdClient.watch().prefix(c.store.keys.syncs).create();
  watcher.on('put', (kv) => {
    const report = JSON.parse(kv.value.toString('utf8')) as SyncReport;
    reports.push(report);
    for (const w of waiters.filter((x) => x.test(report))) w.resolve(report);
    waiters = waiters.filter((x) => !x.test(report));
  });
  const seen = (test: (r: SyncReport) => boolean): Promise<SyncReport> => {
    const found = reports.find(test);
    return found !== undefined ? Promise.resolve(found) : new Promise((resolve) => waiters.push({ test, resolve }));
  };
  return { reports, seen, stop: () => watcher.cancel() };
}

/** The `replica sync copied and verified` log lines of a node, by partition. */
function copiedLines(node: CliProcess): Map<number, { mode: string; rows: number; bytes: number; ms: number; fastSkipped?: string; throttledMs: number }> {
  const out = new Map<number, { mode: string; rows: number; bytes: number; ms: number; fastSkipped?: string; throttledMs: number }>();
  for (const line of node.stderr.split('\n')) {
    if (!line.includes('"msg":"replica sync copied and verified')) continue;
    const l = JSON.parse(line) as { partition: number; mode: string; rows: number; bytes: number; ms: number; fastSkipped?: string; throttledMs: number };
    out.set(l.partition, l);
  }
  return out;
}

/** Bytes a sync copied over all its attempts (each attempt's last report), and ms from its first start to its `copied` report. */
function copyRate(reports: SyncReport[]): { bytes: number; ms: number } {
  const attempts = new Map<number, number>();
  for (const r of reports) attempts.set(r.startedAtMs, Math.max(attempts.get(r.startedAtMs) ?? 0, r.bytes));
  const done = reports.filter((r) => r.state === 'copied').at(-1)!;
  return { bytes: [...attempts.values()].reduce((a, b) => a + b, 0), ms: done.updatedAtMs - Math.min(...attempts.keys()) };
}

async function check(c: EtcdTestCluster, seed: string): Promise<{ code: number | null; json: CheckJson }> {
  const out = await c.cli(['cluster', 'check', '--seeds', seed, '--json']);
  return { code: out.code, json: JSON.parse(out.stdout) as CheckJson };
}

/** 3 nodes, 2 partitions, RF 3, `data` written through the heads (forwarded to every replica). */
async function loadedCluster(
  nodeArgs: string[] | ((c: EtcdTestCluster) => Promise<string[]>),
  count: number,
  shape = { nodes: 3, partitions: 2, replicas: 3 },
  token?: string,
): Promise<{ c: EtcdTestCluster; map: PartitionMap; client: StoreClient; data: BulkRowInput[] }> {
  const c = await EtcdTestCluster.start({ lease: '1s' });
  cluster = c;
  if (typeof nodeArgs === 'function') nodeArgs = await nodeArgs(c);
  const nodes: CliProcess[] = [];
  for (let i = 0; i < shape.nodes; i++) nodes.push(await c.startNode(undefined, nodeArgs));
  await c.startCoordinator();
  expect((await c.cli(['cluster', 'init', '--etcd', c.etcd.url, '--partitions', String(shape.partitions), '--replicas', String(shape.replicas)])).code).toBe(0);
  await Promise.all(nodes.map((n) => n.event('ready')));
  const map = (await c.store.read())!.map;
  expect(map.partitions.every((p) => allServing(p, shape.replicas))).toBe(true);
  const client = new StoreClient(new StoreRouter({ seeds: [map.partitions[0]!.node], credentials: token === undefined ? {} : { token }, operationTimeoutMs: 20_000 }));
  const data = rows(count);
  for (let i = 0; i < data.length; i += 2000) expect((await client.bulkPutAll([data.slice(i, i + 2000)])).rows).toBe(Math.min(2000, data.length - i));
  return { c, map, client, data };
}

/**
 * Writes while `until` is false: deletes and changes of existing keys, new keys, small bulk
 * upserts, all over the key range. Returns the deleted indexes and the changed keys' last values.
 */
function writer(client: StoreClient, data: BulkRowInput[]): { stop: () => Promise<void>; deleted: Set<number>; changed: Map<number, string>; more: (rounds: number) => Promise<void> } {
  let stopped = false;
  let round = 0;
  let waiters: Array<{ at: number; resolve: () => void }> = [];
  const deleted = new Set<number>();
  const changed = new Map<number, string>();
  const running = (async () => {
    for (; !stopped; round++) {
      const i = (round * 997) % data.length;
      await client.delete(Key.fromBytes(data[i]!.key));
      deleted.add(i);
      changed.delete(i);
      const j = (round * 389 + 11) % data.length;
      if (!deleted.has(j)) {
        await client.put(Key.fromBytes(data[j]!.key), Buffer.from(`changed-${round}`));
        changed.set(j, `changed-${round}`);
      }
      await client.put(Key.fromBytes(Buffer.concat([data[(round * 131) % data.length]!.key, Buffer.from(`+new${round}`)])), Buffer.from(`new-${round}`));
      if (round % 5 === 0) {
        // Every 25th round a batch of 100 (logged as its key range), else of 20 (logged key by key).
        const size = round % 25 === 0 ? 100 : 20;
        const from = (round * 211) % (data.length - size);
        const batch = data.slice(from, from + size).map((r, k) => ({ key: r.key, value: Buffer.from(`bulk-${round}`), k: from + k })).filter((r) => !deleted.has(r.k));
        if (batch.length > 0) await client.bulkPutAll([batch.map(({ key, value }) => ({ key, value }))]);
        for (const r of batch) changed.set(r.k, `bulk-${round}`);
      }
      for (const w of waiters.filter((x) => x.at <= round + 1)) w.resolve();
      waiters = waiters.filter((x) => x.at > round + 1);
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await running;
    },
    deleted,
    changed,
    // Resolves once `rounds` more rounds are done.
    more: (rounds) => new Promise((resolve) => waiters.push({ at: round + rounds, resolve })),
  };
}

/** The victim: the node heading no partition (its loss leaves every chain a serving head). */
function nonHead(c: EtcdTestCluster, map: PartitionMap): string {
  return [...c.nodes.keys()].find((n) => !map.partitions.some((p) => p.node === n))!;
}

describe('fast sync on etcd', () => {
  it('a node SIGKILLed for a few seconds beyond its lease while writes go on (puts, deletes, bulk upserts) and restarted fast-syncs: it copies only the changed keys (≪ the partition), verifies, serves; cluster check consistent; deleted keys stay deleted', async () => {
    const { c, map, client, data } = await loadedCluster([], 20_000);
    const victim = nonHead(c, map);
    const sizes = map.partitions.map((p) => data.filter((r) => inPartition(p, r.key)).reduce((n, r) => n + r.key.length + r.value.length, 0));
    const syncs = await recordSyncReports(c);
    try {
      await c.nodes.get(victim)!.kill('SIGKILL');
      const load = writer(client, data);
      await c.waitForMap((m) => m.replicasOf(victim).length === 0, 30_000);
      // Beyond its lease: out of both chains; writes go on past that for a while.
      await load.more(150);
      const restarted = await c.startNode(victim, ['--metrics-port', '0']);
      const ready = await restarted.event('ready');
      const back = await c.waitForMap((m) => m.partitions.every((p) => allServing(p, 3) && p.chain[2]!.node === victim), 60_000);
      await load.stop();
      expect(load.deleted.size).toBeGreaterThan(150);
      // The node's metrics count what its syncs copied, by mode.
      const metrics = await (await fetch(`http://127.0.0.1:${ready.metricsPort as number}/metrics`)).text();
      const copiedBytes = (mode: string): number => Number(new RegExp(`^shardpipe_replica_sync_copied_bytes_total\\{node="${victim}",mode="${mode}"\\} (\\d+)`, 'm').exec(metrics)?.[1] ?? NaN);
      expect(copiedBytes('fast')).toBeGreaterThan(0);
      expect(copiedBytes('full')).toBe(0);
      expect(metrics).toMatch(new RegExp(`^shardpipe_replica_sync_copied_keys_total\\{node="${victim}",mode="fast"\\} [1-9]`, 'm'));

      const copied = syncs.reports.filter((r) => r.node === victim && r.state === 'copied');
      for (const p of back.partitions) {
        const report = copied.filter((r) => r.partition === p.id).at(-1);
        expect(report, `partition ${p.id}: ${JSON.stringify(syncs.reports.filter((r) => r.node === victim))}`).toBeDefined();
        expect(report!.mode).toBe('fast');
        // Only the keys changed while it was away (and during the copy): far less than the partition.
        expect(report!.bytes).toBeGreaterThan(0);
        expect(report!.bytes).toBeLessThan(sizes[p.id]! / 10);
        expect(report!.rows).toBeLessThan(data.filter((r) => inPartition(p, r.key)).length / 5);
        expect(copiedLines(restarted).get(p.id)?.mode).toBe('fast');
      }
      const checked = await check(c, back.partitions[0]!.node);
      expect(checked.json.consistent, JSON.stringify(checked.json)).toBe(true);
      expect(checked.code).toBe(0);
      for (const p of checked.json.partitions) expect(new Set(p.replicas.map((r) => r.digest)).size).toBe(1);
      // The restarted node is each chain's tail: reads come from it.
      await client.refreshMap();
      for (const i of load.deleted) expect(await client.get(Key.fromBytes(data[i]!.key)), `deleted key ${i}`).toBeUndefined();
      for (const [i, value] of [...load.changed].slice(0, 200)) expect((await client.get(Key.fromBytes(data[i]!.key)))?.value.toString()).toBe(value);
    } finally {
      await syncs.stop();
      client.close();
    }
  }, 240_000);

  it('a node stopped beyond the change log\'s retention full-syncs (the report says why the log was not used), deletes applied; a sync throttled through throttle/P/NODE keeps to its rate while the unthrottled partition copies at full speed', async () => {
    // A log of at most 50 keys: the outage's writes overflow it.
    const { c, map, client, data } = await loadedCluster(['--change-log-retention', '50,1h'], 16_000);
    const victim = nonHead(c, map);
    const syncs = await recordSyncReports(c);
    const rate = 60_000;
    try {
      await c.nodes.get(victim)!.kill('SIGKILL');
      const load = writer(client, data);
      await c.waitForMap((m) => m.replicasOf(victim).length === 0, 30_000);
      await load.more(100);
      await load.stop();
      // The movement runner's throttle for partition 1's sync on the victim (partition 0 has none).
      await c.etcdClient.put(operationKeys().throttleOf(1, victim)).value(JSON.stringify({ maxBytesPerSecond: rate, operation: 'op-20261201-000000-test01' })).exec();
      const restarted = await c.startNode(victim, ['--change-log-retention', '50,1h']);
      await restarted.event('ready');
      // While partition 1 copies slowly, cluster status shows the sync's mode and throttle.
      await syncs.seen((r) => r.node === victim && r.partition === 1 && r.state === 'copying' && r.rows > 0 && r.maxBytesPerSecond === rate);
      const [status, statusOut] = await Promise.all([c.cli(['cluster', 'status', '--etcd', c.etcd.url]), c.cli(['cluster', 'status', '--etcd', c.etcd.url, '--json'])]);
      expect(status.code).toBe(0);
      expect(status.stdout).toMatch(new RegExp(`${victim} syncing \\(full sync, copying \\d+/\\d+ rows, [\\d.]+ MB from [\\d.:]+, throttled to 0\\.\\d MB/s\\)`));
      const statusJson = JSON.parse(statusOut.stdout) as { partitions: Array<{ id: number; chain: Array<{ node: string; sync?: { mode?: string; maxBytesPerSecond?: number } }> }> };
      const syncing = statusJson.partitions.find((p) => p.id === 1)!.chain.find((r) => r.node === victim)!;
      expect(syncing.sync).toMatchObject({ mode: 'full', maxBytesPerSecond: rate });
      const back = await c.waitForMap((m) => m.partitions.every((p) => allServing(p, 3) && p.chain[2]!.node === victim), 120_000);

      const lines = copiedLines(restarted);
      for (const p of back.partitions) {
        const report = syncs.reports.filter((r) => r.node === victim && r.partition === p.id && r.state === 'copied').at(-1);
        expect(report, `partition ${p.id}`).toBeDefined();
        expect(report!.mode).toBe('full');
        expect(report!.fastSkipped).toMatch(/reaches back to sequence/);
        expect(report!.totalRows).toBeGreaterThan(1000);
        expect(lines.get(p.id)?.mode).toBe('full');
      }
      const throttled = syncs.reports.filter((r) => r.node === victim && r.partition === 1 && r.state === 'copied').at(-1)!;
      expect(throttled.maxBytesPerSecond).toBe(rate);
      // The bucket starts empty and holds 100 ms of the rate: bytes ≤ rate × time + rate / 10, over
      // every attempt of the sync (one cut off by a map change resumes where it was).
      const slow = copyRate(syncs.reports.filter((r) => r.node === victim && r.partition === 1));
      expect(slow.bytes).toBeGreaterThan(rate * 3);
      expect(slow.bytes).toBeLessThanOrEqual((rate * slow.ms) / 1000 + rate / 10);
      expect(lines.get(1)!.throttledMs).toBeGreaterThan(0);
      // Unthrottled, the other partition's copy goes faster than the rate.
      const fast = copyRate(syncs.reports.filter((r) => r.node === victim && r.partition === 0));
      expect(lines.get(0)!.throttledMs).toBe(0);
      expect(fast.bytes / (fast.ms / 1000), JSON.stringify({ fast, slow })).toBeGreaterThan(rate * 1.5);

      const checked = await check(c, back.partitions[0]!.node);
      expect(checked.json.consistent, JSON.stringify(checked.json)).toBe(true);
      await client.refreshMap();
      for (const i of load.deleted) expect(await client.get(Key.fromBytes(data[i]!.key)), `deleted key ${i}`).toBeUndefined();
    } finally {
      await syncs.stop();
      client.close();
    }
  }, 240_000);

  it('fault injection: a returning replica whose data is not the stream\'s at its position (a row changed on disk while it was stopped, in no log) fails the fast copy\'s verification and is copied in full; cluster check consistent', async () => {
    const { c, map, client, data } = await loadedCluster([], 6000);
    const victim = nonHead(c, map);
    const p1 = map.byId(1)!;
    const syncs = await recordSyncReports(c);
    try {
      await c.nodes.get(victim)!.kill('SIGKILL');
      await c.waitForMap((m) => m.replicasOf(victim).length === 0, 30_000);
      const load = writer(client, data);
      await load.more(30);
      await load.stop();
      // A key the outage did not write, changed behind the store's back: no change log names it.
      const untouched = data.findIndex((r, i) => inPartition(p1, r.key) && !load.deleted.has(i) && !load.changed.has(i));
      const db = new ClassicLevel<Buffer, Buffer>(join(c.dir.sub(`node-${victim.replace(':', '-')}`), 'partition-1'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      await db.open();
      const dk = Buffer.concat([Buffer.from('d'), data[untouched]!.key]);
      await db.put(dk, encodeRecord({ ...decodeRecord(Buffer.from((await db.get(dk))!)), value: Buffer.from('bit rot') }));
      await db.close();
      const restarted = await c.startNode(victim);
      await restarted.event('ready');
      const back = await c.waitForMap((m) => m.partitions.every((p) => allServing(p, 3) && p.chain[2]!.node === victim), 60_000);
      const reports = syncs.reports.filter((r) => r.node === victim && r.partition === 1);
      // The fast copy ran, did not verify, and the next attempt copied the whole partition.
      expect(reports.some((r) => r.state === 'failed' && r.mode === 'fast' && /does not match its snapshot/.test(r.error ?? '')), JSON.stringify(reports)).toBe(true);
      const done = reports.filter((r) => r.state === 'copied').at(-1)!;
      expect(done.mode).toBe('full');
      expect(done.totalRows).toBeGreaterThanOrEqual(data.filter((r, i) => inPartition(p1, r.key) && !load.deleted.has(i)).length);
      // Partition 0 had nothing wrong: its fast copy verified.
      expect(syncs.reports.filter((r) => r.node === victim && r.partition === 0 && r.state === 'copied').at(-1)!.mode).toBe('fast');
      const checked = await check(c, back.partitions[0]!.node);
      expect(checked.json.consistent, JSON.stringify(checked.json)).toBe(true);
      await client.refreshMap();
      expect((await client.get(Key.fromBytes(data[untouched]!.key)))?.value.toString()).toBe(data[untouched]!.value.toString());
    } finally {
      await syncs.stop();
      client.close();
    }
  }, 240_000);

  it('a chain of two: the tail SIGKILLed beyond its lease leaves its head alone in the chain, which still numbers and logs its writes; the tail restarted fast-syncs from it', async () => {
    const { c, map, client, data } = await loadedCluster([], 10_000, { nodes: 2, partitions: 1, replicas: 2 });
    const victim = map.partitions[0]!.chain[1]!.node;
    const size = data.reduce((n, r) => n + r.key.length + r.value.length, 0);
    const syncs = await recordSyncReports(c);
    try {
      await c.nodes.get(victim)!.kill('SIGKILL');
      const load = writer(client, data);
      await c.waitForMap((m) => m.partitions[0]!.chain.length === 1, 30_000);
      await load.more(100);
      const restarted = await c.startNode(victim);
      await restarted.event('ready');
      const back = await c.waitForMap((m) => allServing(m.partitions[0], 2) && m.partitions[0]!.chain[1]!.node === victim, 60_000);
      await load.stop();
      const report = syncs.reports.filter((r) => r.node === victim && r.state === 'copied').at(-1)!;
      expect(report.mode, JSON.stringify(syncs.reports)).toBe('fast');
      expect(report.bytes).toBeGreaterThan(0);
      // The writer keeps writing until the sync is done, as fast as the machine lets it (a tenth of
      // the partition was reached once, at 77 kB of 729 kB); a full copy would be all of it and more.
      expect(report.bytes).toBeLessThan(size / 4);
      const checked = await check(c, back.partitions[0]!.node);
      expect(checked.json.consistent, JSON.stringify(checked.json)).toBe(true);
      await client.refreshMap();
      for (const i of load.deleted) expect(await client.get(Key.fromBytes(data[i]!.key)), `deleted key ${i}`).toBeUndefined();
    } finally {
      await syncs.stop();
      client.close();
    }
  }, 240_000);

  it('with --auth-token-file, the node asks ChangedKeys with its replica token (a read token may not): the returning replica fast-syncs', async () => {
    const write = 'w'.repeat(64);
    const tokens = async (c: EtcdTestCluster): Promise<string[]> => {
      const file = c.dir.sub('tokens');
      // The node presents its weakest client token (read) to peers, and the replica token for node-to-node calls.
      await writeFile(file, `read ${'r'.repeat(64)}\nwrite ${write}\nreplica ${'p'.repeat(64)}\n`, { mode: 0o600 });
      return ['--auth-token-file', file];
    };
    const { c, map, client, data } = await loadedCluster(tokens, 6000, { nodes: 3, partitions: 2, replicas: 3 }, write);
    const victim = nonHead(c, map);
    const args = ['--auth-token-file', c.dir.sub('tokens')];
    const syncs = await recordSyncReports(c);
    try {
      await c.nodes.get(victim)!.kill('SIGKILL');
      const load = writer(client, data);
      await c.waitForMap((m) => m.replicasOf(victim).length === 0, 30_000);
      await load.more(40);
      const restarted = await c.startNode(victim, args);
      await restarted.event('ready');
      await c.waitForMap((m) => m.partitions.every((p) => allServing(p, 3) && p.chain[2]!.node === victim), 60_000);
      await load.stop();
      for (const p of map.partitions) {
        const report = syncs.reports.filter((r) => r.node === victim && r.partition === p.id && r.state === 'copied').at(-1)!;
        expect(report.mode, JSON.stringify(syncs.reports.filter((r) => r.node === victim))).toBe('fast');
        expect(report.fastSkipped).toBeUndefined();
      }
      await client.refreshMap();
      for (const i of [...load.deleted].slice(0, 50)) expect(await client.get(Key.fromBytes(data[i]!.key))).toBeUndefined();
    } finally {
      await syncs.stop();
      client.close();
    }
  }, 240_000);
});
