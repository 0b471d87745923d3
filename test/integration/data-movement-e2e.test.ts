import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EtcdOperationStore, StoreClient, newOperationId, readGcReports, type OperationRecord, type PartitionMap } from '../../store/index.js';
import { generateRoleTokens, writeTokenFile, type RoleTokens } from '../../cli/token-file.js';
import { Waiting, runCli, type Run } from '../helpers/cli-waiting.js';
import { CliProcess, EtcdTestCluster } from '../helpers/etcd-cluster.js';
import { Workload, load } from '../helpers/movement-workload.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';

// The pieces of data movement together, through the commands a user types: real etcd, four real
// `store start --etcd` nodes with role tokens (as `up` makes them) and a short --gc-grace, a real
// `coordinator` process (its runner carries the operations out), a real `metrics-server --etcd`;
// a writer doing puts and CAS and a reader run through every test, checked at the end.
let cluster: EtcdTestCluster;
let tokens: RoleTokens;
let tokenFile: string;
let client: StoreClient;
let work: Workload;
let metrics: CliProcess;
let metricsUrl: string;
const GC_GRACE_S = 12;

const run = (args: string[]): Promise<Run> => runCli(args, tokens.admin);
const etcdArgs = (): string[] => ['--etcd', cluster.etcd.url];
const seedArgs = (): string[] => ['--seeds', [...cluster.nodes.keys()].filter((n) => cluster.nodes.get(n)!.child?.exitCode === null && cluster.nodes.get(n)!.child?.signalCode === null).join(',')];
const currentMap = async (): Promise<PartitionMap> => (await cluster.store.read())!.map;
const chainOf = (m: PartitionMap, id: number): string[] => m.byId(id)!.chain.map((r) => r.node);
const allServing = (m: PartitionMap): boolean => m.partitions.every((p) => p.chain.every((r) => r.state === 'serving'));
const dataDir = (node: string): string => cluster.dir.sub(`node-${node.replace(':', '-')}`);
const exists = (path: string): Promise<boolean> => access(path).then(() => true, () => false);
const operations = (): EtcdOperationStore => new EtcdOperationStore(cluster.etcdClient, cluster.etcd.url);

async function startNode(address?: string): Promise<string> {
  const node = await cluster.startNode(address, ['--auth-token-file', tokenFile, '--gc-grace', `${GC_GRACE_S}s`]);
  return node.args[node.args.indexOf('--node') + 1]!;
}

/** A replica of `p` and a registered node outside its chain (the first of each, in address order). */
function moveOf(m: PartitionMap, p: number): { from: string; to: string } {
  const chain = chainOf(m, p);
  const to = [...cluster.nodes.keys()].sort().find((n) => !chain.includes(n))!;
  return { from: chain[chain.length - 1]!, to };
}

beforeAll(async () => {
  // The nodes' default lease. With 1 s, nodes of a loaded machine miss keep-alives and are dropped
  // from chains (data-movement.test.ts at load 10-16: moves failed, replicas moved that no operation
  // asked for), which the exact chains checked here would not survive. Only the failing move waits
  // for a lease to run out: 5 s longer.
  cluster = await EtcdTestCluster.start({ lease: '5s' });
  tokens = generateRoleTokens();
  tokenFile = cluster.dir.sub('tokens');
  await writeTokenFile(tokenFile, tokens);
  for (let i = 0; i < 4; i++) await startNode();
  // The automatic rebalance would move replicas on its own: these tests watch the ones they ask for.
  const coordinator = new CliProcess(['coordinator', '--etcd', cluster.etcd.url, '--lease', cluster.lease, '--no-auto-rebalance']).start();
  cluster.coordinators.push(coordinator);
  await coordinator.event('ready');
  const init = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '4', '--replicas', '2']);
  expect(init.code, init.stderr).toBe(0);
  await Promise.all([...cluster.nodes.values()].map((n) => n.event('ready')));
  await cluster.waitForMap(allServing);
  client = new StoreClient({ seeds: [...cluster.nodes.keys()], credentials: { token: tokens.write }, operationTimeoutMs: 30_000 });
  await load(client, 20_000);
  work = new Workload(client).start();
  metrics = new CliProcess(['metrics-server', '--seeds', [...cluster.nodes.keys()][0]!, '--port', '0', '--interval', '300ms', '--etcd', cluster.etcd.url, '--auth-token-file', tokenFile], { SHARDPIPE_TOKEN: tokens.read }).start();
  metricsUrl = String((await metrics.event('ready')).url);
}, 120_000);

afterAll(async () => {
  await work?.stop();
  client?.close();
  await metrics?.kill('SIGTERM');
  await cluster?.close();
});

describe('data movement end to end (real etcd, nodes, coordinator, CLI and metrics server)', () => {
  it('cluster move --seeds waits with JSON progress lines and exits 0 once completed; the map has the destination in the chain, not the source; /api/movement and /metrics showed it running', async () => {
    const before = await currentMap();
    const { from, to } = moveOf(before, 1);
    // Throttled so that it runs long enough to be seen on the metrics server.
    const waiting = new Waiting(tokens.admin, ['cluster', 'move', '1', '--from', from, '--to', to, '--max-bytes-per-second', '100KB', '--poll-interval', '200ms', ...seedArgs()]);
    const syncing = await waiting.progress((e) => e.phase === 'syncing' && Number(e.bytesTotal) > 0);
    expect(syncing).toMatchObject({ event: 'operation-progress', kind: 'move', state: 'running', step: 1, steps: 1 });

    const view = await vi.waitFor(
      async () => {
        const v = (await (await fetch(new URL('api/movement', metricsUrl), { headers: { authorization: `Bearer ${tokens.read}` } })).json()) as { etcd: string; operations: Array<Record<string, unknown>> };
        expect(v.etcd).toBe('ok');
        expect(v.operations.length).toBe(1);
        expect(Number(v.operations[0]!.bytesTotal)).toBeGreaterThan(0);
        return v;
      },
      { timeout: 15_000, interval: 200 },
    );
    expect(view.operations[0]).toMatchObject({ kind: 'move', state: 'running', steps: 1, stepsDone: 0 });
    const text = await (await fetch(new URL('metrics', metricsUrl), { headers: { authorization: `Bearer ${tokens.read}` } })).text();
    const inProgress = (parsePrometheusText(text).get('shardpipe_operations_in_progress')?.samples ?? []).filter((s) => s.labels.kind === 'move');
    expect(inProgress.map((s) => s.value), text.slice(0, 2000)).toEqual([1]);

    const code = await waiting.exited;
    expect(code, waiting.stderr).toBe(0);
    expect(waiting.stdout).toMatch(new RegExp(`^op-\\S+ completed: move partition 1 from ${from} to ${to} \\(\\d+\\.\\d s\\)\\n$`));
    const last = waiting.events.at(-1)!;
    expect(last).toMatchObject({ state: 'completed' });
    // The figures the CLI shows add up: bytes done reached the total the runner recorded.
    expect(Number(last.bytesDone)).toBeGreaterThanOrEqual(Number(last.bytesTotal));
    // The copy kept to --max-bytes-per-second (a lower bound: a loaded machine only makes it slower).
    const step = (await operations().get(waiting.stdout.split(' ')[0]!))!.record.steps[0]!;
    expect(step.bytesTotal).toBeGreaterThan(200_000);
    expect.soft(step.finishedAtMs! - step.startedAtMs!).toBeGreaterThanOrEqual((0.7 * step.bytesTotal! * 1000) / 100_000);
    // Bytes done (the sync's count) and bytes total (the partition's size) are the same measure: mid-copy
    // the bytes have gone as far as the rows (rows of one size here), so the ETA the CLI shows holds.
    const mid = waiting.events.filter((e) => e.phase === 'syncing' && Number(e.rowsDone) > 0 && Number(e.rowsDone) < Number(e.rowsTotal) && Number(e.bytesTotal) > 0);
    expect.soft(mid.length, 'progress lines mid-copy').toBeGreaterThan(0);
    for (const e of mid) expect.soft(Number(e.bytesDone) / Number(e.bytesTotal) / (Number(e.rowsDone) / Number(e.rowsTotal)), JSON.stringify(e)).toBeGreaterThan(0.9);
    const after = await currentMap();
    expect(chainOf(after, 1)).toContain(to);
    expect(chainOf(after, 1)).not.toContain(from);
    expect(after.byId(1)!.chain.every((r) => r.state === 'serving')).toBe(true);
  }, 120_000);

  it('cluster move --no-wait, then cluster operations --json shows it, cluster cancel waits for cancelled and exits 0; the chain is as before', async () => {
    const before = await currentMap();
    const { from, to } = moveOf(before, 2);
    const submitted = await run(['cluster', 'move', '2', '--from', from, '--to', to, '--no-wait', '--max-bytes-per-second', '20KB', ...etcdArgs()]);
    expect(submitted.code, submitted.stderr).toBe(0);
    const id = submitted.stdout.trim();
    // The step added the destination: a cancel now has something to roll back.
    await cluster.waitForMap((m) => chainOf(m, 2).includes(to));
    const listed = await run(['cluster', 'operations', '--json', ...seedArgs()]);
    expect(listed.code, listed.stderr).toBe(0);
    const mine = (JSON.parse(listed.stdout) as { operations: Array<OperationRecord & { progress: { steps: number } }> }).operations.find((o) => o.id === id)!;
    expect(mine).toMatchObject({ args: { kind: 'move', partition: 2, from, to }, state: 'running', progress: { steps: 1 } });

    const cancelled = await run(['cluster', 'cancel', id, ...etcdArgs()]);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    expect(cancelled.stdout).toBe(`${id} cancelled: 0/1 steps done, 1 rolled back\n`);
    expect((await operations().get(id))!.record.state).toBe('cancelled');
    const after = await cluster.waitForMap((m) => !chainOf(m, 2).includes(to));
    expect(chainOf(after, 2)).toEqual(chainOf(before, 2));
  }, 120_000);

  it('cluster set-replicas 3 then 2: every chain holds 3 serving replicas, then 2', async () => {
    const up = await run(['cluster', 'set-replicas', '3', ...etcdArgs()]);
    expect(up.code, up.stderr).toBe(0);
    let m = await currentMap();
    expect(m.replicas).toBe(3);
    expect(m.partitions.map((p) => p.chain.filter((r) => r.state === 'serving').length)).toEqual([3, 3, 3, 3]);
    const down = await run(['cluster', 'set-replicas', '2', ...seedArgs()]);
    expect(down.code, down.stderr).toBe(0);
    m = await currentMap();
    expect(m.replicas).toBe(2);
    expect(m.partitions.map((p) => p.chain.length)).toEqual([2, 2, 2, 2]);
    expect(allServing(m)).toBe(true);
  }, 180_000);

  it('cluster split P --at-hex K exits 0 with the new partition on P\'s chain, and cluster merge P Q exits 0 with the map as before', async () => {
    const before = await currentMap();
    const p = before.partitions.find((x) => x.end.length > 0 && x.end[0]! - (x.start[0] ?? 0) >= 2)!;
    const at = Buffer.from([((p.start[0] ?? 0) + p.end[0]!) >> 1]);
    const split = await run(['cluster', 'split', String(p.id), '--at-hex', at.toString('hex'), ...etcdArgs()]);
    expect(split.code, split.stderr).toBe(0);
    const after = await currentMap();
    const q = after.partitions.find((x) => x.start.equals(at))!;
    expect(q.end.equals(p.end)).toBe(true);
    expect(after.byId(p.id)!.end.equals(at)).toBe(true);
    expect(q.chain.map((r) => r.node)).toEqual(after.byId(p.id)!.chain.map((r) => r.node));

    const merged = await run(['cluster', 'merge', String(p.id), String(q.id), ...etcdArgs()]);
    expect(merged.code, merged.stderr).toBe(0);
    const last = await currentMap();
    expect(last.byId(q.id)).toBeUndefined();
    expect(last.byId(p.id)!.start.equals(p.start) && last.byId(p.id)!.end.equals(p.end)).toBe(true);
  }, 240_000);

  it('cluster drain-node exits 0; cluster status says the node is drained and can be stopped and lists its data awaiting GC; after --gc-grace its partition folders are gone', async () => {
    const before = await currentMap();
    const victim = [...cluster.nodes.keys()].sort().find((n) => before.replicasOf(n).length > 0)!;
    const held = before.replicasOf(victim).map((p) => p.id);
    // A drained node stays drained: stopped even when this test fails, so that the next test does not pick it as a destination.
    try {
      // A longer pause bound than the default 2 s: in CI, with every test file running beside this one,
      // the head hand-over of the drained node ran out of 2 s eight times in a row (and the drain
      // failed); why was not in that output (the error now carries the last release's reason). The
      // bound itself is head-handover.test.ts's subject; this test is about the drain.
      const drained = await run(['cluster', 'drain-node', victim, '--max-movements', '1', '--max-pause', '6s', ...etcdArgs()]);
      expect(drained.code, drained.stderr).toBe(0);
      expect((await currentMap()).replicasOf(victim)).toEqual([]);

      // A node reports what left it once it installs the map that removed it, which can come after
      // drain-node returns, and the first may be deleted (GC grace) before the last is reported: so
      // each held partition is looked for across polls (other partitions' GC, from earlier tests,
      // may be listed too).
      // Kept until their grace ends: looked at in every poll, from the moment drain-node returns. (Looked
      // at only after the polls and one more CLI run, 3.8 s of the 12 s grace had gone by here at load
      // 4, too close to the end on a machine 2-3x slower.) A folder gone before its deadline is
      // collected, not expected, so that the next poll cannot hide it.
      const kept = new Map<number, number>();
      const goneEarly: string[] = [];
      const reported = new Set<number>();
      let status = '';
      await vi.waitFor(
        async () => {
          const listed = (await readGcReports(cluster.etcdClient, cluster.etcd.url)).find((r) => r.node === victim)?.partitions ?? [];
          for (const g of listed.filter((x) => held.includes(x.partition))) {
            const margin = g.deleteAtMs - Date.now();
            if (margin <= 500) continue; // one whose end is near may go while this looks
            if (await exists(join(dataDir(victim), `partition-${g.partition}`))) kept.set(g.partition, g.deleteAtMs);
            else goneEarly.push(`partition-${g.partition} gone ${margin} ms before its GC deadline`);
          }
          const s = await run(['cluster', 'status', ...etcdArgs()]);
          expect(s.code, s.stderr).toBe(0);
          status = s.stdout;
          for (const p of held) {
            if (new RegExp(`data awaiting GC: partition ${p} \\(\\d+\\.\\d MB\\) on ${victim.replace(/\./g, '\\.')}, deleted at \\d\\d:\\d\\d:\\d\\d UTC`).test(status)) reported.add(p);
          }
          expect([...reported].sort()).toEqual([...held].sort());
          // Part of the wait, not after it: the node may publish its report between this poll's read of
          // etcd and its status run (CI: status listed every partition in the first poll, read found none).
          expect(kept.size, 'a held partition seen awaiting GC with its folder still there').toBeGreaterThan(0);
        },
        { timeout: 20_000, interval: 200 },
      );
      expect(goneEarly).toEqual([]);
      expect(status).toContain(`drained: ${victim} holds no replicas; can be stopped`);
      const json = JSON.parse((await run(['cluster', 'status', '--json', ...etcdArgs()])).stdout) as { draining: unknown[]; gc: Array<{ node: string; partition: number; deleteAtMs: number }> };
      expect(json.draining).toEqual([{ node: victim, replicas: 0, drained: true }]);
      // --json lists the same deadlines etcd had (those not deleted yet).
      for (const g of json.gc.filter((x) => x.node === victim && kept.has(x.partition))) expect(g.deleteAtMs, `partition ${g.partition}`).toBe(kept.get(g.partition));

      await vi.waitFor(
        async () => {
          for (const p of held) expect(await exists(join(dataDir(victim), `partition-${p}`)), `partition-${p}`).toBe(false);
        },
        { timeout: (GC_GRACE_S + 30) * 1000, interval: 500 },
      );
      await vi.waitFor(
        async () => expect((await run(['cluster', 'status', ...etcdArgs()])).stdout).not.toMatch(new RegExp(`awaiting GC: .* on ${victim.replace(/\./g, '\\.')}`)),
        { timeout: 10_000, interval: 300 },
      );
    } finally {
      // Stopped: nothing it held is missed.
      await cluster.nodes.get(victim)!.kill('SIGTERM');
      cluster.nodes.delete(victim);
    }
  }, 180_000);

  it('a failing move exits 1 with the runner\'s error: the destination SIGKILLed mid-copy (fault injection by SIGKILL); the source keeps its replica', async () => {
    const before = await currentMap();
    const { from, to } = moveOf(before, 3);
    const waiting = new Waiting(tokens.admin, ['cluster', 'move', '3', '--from', from, '--to', to, '--max-bytes-per-second', '20KB', ...etcdArgs()]);
    await waiting.progress((e) => e.phase === 'syncing');
    await cluster.nodes.get(to)!.kill('SIGKILL');
    const code = await waiting.exited;
    expect(code, waiting.stderr).toBe(1);
    expect(waiting.stderr).toMatch(new RegExp(`failed: STORE_MOVE_FAILED: partition 3: destination ${to.replace(/\./g, '\\.')}`));
    expect(waiting.stderr).toContain('STORE_OPERATION_FAILED');
    const after = await cluster.waitForMap((m) => !chainOf(m, 3).includes(to));
    expect(chainOf(after, 3)).toContain(from);
    cluster.nodes.delete(to);
  }, 120_000);

  it('the writer\'s puts and CAS all read back, no read went backwards, and cluster check is consistent', async () => {
    await work.stop();
    expect(work.problems).toEqual([]);
    expect(work.acked.size).toBeGreaterThan(100);
    await work.verify();
    await cluster.waitForMap(allServing);
    const check = await run(['cluster', 'check', '--json', ...seedArgs()]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect((JSON.parse(check.stdout) as { consistent: boolean }).consistent).toBe(true);
  }, 120_000);
});
