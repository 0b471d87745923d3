/**
 * Fast sync against full sync after a short outage (a measurement, not a test).
 *
 * Per mode, a fresh cluster on a private etcd: two `store start --etcd` nodes (lease 1 s), a
 * coordinator, one partition with 2 replicas, ROWS rows of VALUE bytes loaded through the head.
 * A writer puts changed values of existing keys (and deletes some) all the time; the tail is
 * SIGKILLed, stays down OUTAGE ms (the coordinator drops it from the chain after its lease), and is
 * restarted on its data. It comes back as a syncing replica:
 * - fast: the nodes keep the default change log (1,000,000 keys or 1 h): the replica copies only
 *   the keys changed since its last write;
 * - full: the nodes run with `--change-log-retention 1,1h` (the log holds 1 key), so the same
 *   outage forces a copy of the whole partition.
 * Reported per mode: keys and bytes copied (the node's `replica sync copied and verified` line),
 * the sync's seconds (snapshot, copy, verification) and restart → serving seconds (until the map in
 * etcd shows the replica serving); then full / fast ratios. Key + value bytes count as MB (1e6).
 *
 * Run after `npx tsc -p tsconfig.json`:
 *   node dist/bench/fast-sync-bench.js [--rows 200000] [--value-bytes 100] [--outage-ms 5000] [--modes fast,full]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findFreePort } from '../common/index.js';
import { PrivateEtcd } from '../coordinator/index.js';
import { EtcdMapStore, Key, StoreClient, connectEtcd, type BulkRowInput, type PartitionMap } from '../store/index.js';
import { fixed, table } from './bench-format.js';
import { MAIN_JS } from './bench-cluster.js';
import { waitForReady } from './bench-processes.js';
import { parseBenchArgs } from './bench-args.js';

const USAGE = 'node dist/bench/fast-sync-bench.js [--rows N (default 200000)] [--value-bytes N (default 100)] [--outage-ms N (default 5000)] [--modes fast,full (default both)]';
const { values } = parseBenchArgs(USAGE, {
  options: { rows: { type: 'string', default: '200000' }, 'value-bytes': { type: 'string', default: '100' }, 'outage-ms': { type: 'string', default: '5000' }, modes: { type: 'string', default: 'fast,full' } },
});
const rows = whole(values.rows!, '--rows');
const valueBytes = whole(values['value-bytes']!, '--value-bytes');
const outageMs = whole(values['outage-ms']!, '--outage-ms');
// Long enough that a loaded machine does not lose the survivor's lease too; shorter than the outage.
const LEASE = '3s';
const modes = values.modes!.split(',').map((m) => m.trim());
for (const m of modes) if (m !== 'fast' && m !== 'full') throw new RangeError(`--modes takes fast and/or full, got "${m}"`);

interface ModeResult {
  mode: string;
  syncMode: string;
  outageSeconds: number;
  writesDuringOutage: number;
  keysCopied: number;
  bytesCopied: number;
  syncSeconds: number;
  servingSeconds: number;
  partitionBytes: number;
}

const results: ModeResult[] = [];
for (const mode of modes) results.push(await runMode(mode as 'fast' | 'full'));
console.log(
  table(
    ['mode', 'sync ran as', 'outage s', 'writes in outage', 'keys copied', 'MB copied', 'of partition', 'sync s', 'restart → serving s'],
    results.map((r) => [r.mode, r.syncMode, fixed(r.outageSeconds, 1), String(r.writesDuringOutage), String(r.keysCopied), fixed(r.bytesCopied / 1e6, 2), `${fixed((100 * r.bytesCopied) / r.partitionBytes, 2)} %`, fixed(r.syncSeconds, 2), fixed(r.servingSeconds, 2)]),
  ),
);
const fast = results.find((r) => r.mode === 'fast');
const full = results.find((r) => r.mode === 'full');
if (fast !== undefined && full !== undefined) {
  console.log(
    table(
      ['full / fast', 'ratio'],
      [
        ['bytes copied', fixed(full.bytesCopied / Math.max(1, fast.bytesCopied), 1)],
        ['sync seconds', fixed(full.syncSeconds / fast.syncSeconds, 1)],
        ['restart → serving seconds', fixed(full.servingSeconds / fast.servingSeconds, 1)],
      ],
    ),
  );
}

async function runMode(mode: 'fast' | 'full'): Promise<ModeResult> {
  const dir = await mkdtemp(join(tmpdir(), `shardpipe-fast-sync-bench-${mode}-`));
  const etcd = await PrivateEtcd.start({ dataDir: join(dir, 'etcd') });
  const children: ChildProcess[] = [];
  const etcdClient = connectEtcd({ url: etcd.url, callTimeoutMs: 5000 });
  const store = new EtcdMapStore(etcdClient, etcd.url);
  const retention = mode === 'fast' ? '1000000,1h' : '1,1h';
  const addresses = [`127.0.0.1:${await findFreePort()}`, `127.0.0.1:${await findFreePort()}`];
  const startNode = (address: string): { child: ChildProcess; stderr: () => string } => {
    const args = [MAIN_JS, 'store', 'start', '--etcd', etcd.url, '--node', address, '--data', join(dir, address.replace(':', '-')), '--lease', LEASE, '--change-log-retention', retention, '--log-format', 'json', '--log-level', 'info'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    children.push(child);
    return { child, stderr: () => stderr };
  };
  let client: StoreClient | undefined;
  try {
    const nodes = addresses.map(startNode);
    const coordinator = spawn(process.execPath, [MAIN_JS, 'coordinator', '--etcd', etcd.url, '--lease', LEASE, '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(coordinator);
    await waitForReady(coordinator);
    await runCli(['cluster', 'init', '--etcd', etcd.url, '--partitions', '1', '--replicas', '2']);
    await Promise.all(nodes.map((n) => waitForReady(n.child)));
    const map = (await store.read())!.map;
    const partition = map.partitions[0]!;
    const victim = partition.chain.at(-1)!.node;
    client = new StoreClient({ seeds: [partition.node], operationTimeoutMs: 60_000 });
    const keyOf = (i: number): Buffer => Buffer.from(`key-${String(i).padStart(10, '0')}`);
    const value = Buffer.alloc(valueBytes, 'v');
    const batches = function* (): Generator<BulkRowInput[]> {
      for (let i = 0; i < rows; i += 10_000) yield Array.from({ length: Math.min(10_000, rows - i) }, (_, j) => ({ key: keyOf(i + j), value }));
    };
    await client.bulkPutAll(batches());
    const partitionBytes = rows * (keyOf(0).length + valueBytes);

    // The writer: changes and deletes all over the key range, one at a time.
    let writes = 0;
    let stop = false;
    const writer = (async () => {
      for (let n = 0; !stop; n++) {
        const key = Key.fromBytes(keyOf((n * 7919) % rows));
        if (n % 10 === 0) await client!.delete(key);
        else await client!.put(key, Buffer.from(`changed-${n}`));
        writes++;
      }
    })();
    await sleep(500);
    const victimIndex = addresses.indexOf(victim);
    nodes[victimIndex]!.child.kill('SIGKILL');
    await once(nodes[victimIndex]!.child, 'exit');
    const writesBefore = writes;
    const stoppedAt = performance.now();
    // Out of the chain (its lease ran out) before it comes back: it returns as a syncing replica.
    await waitForMap(store, (m) => !m.partitions[0]!.chain.some((r) => r.node === victim), 60_000);
    await sleep(Math.max(0, outageMs - (performance.now() - stoppedAt)));
    const writesDuringOutage = writes - writesBefore;
    const outageSeconds = (performance.now() - stoppedAt) / 1000;
    const restartedAt = performance.now();
    const restarted = startNode(victim);
    const copiedLine = (): string | undefined => restarted.stderr().split('\n').filter((l) => l.includes('"msg":"replica sync copied and verified')).at(-1);
    await waitForMap(store, (m) => copiedLine() !== undefined && m.partitions[0]!.chain.some((r) => r.node === victim && r.state === 'serving'), 600_000);
    const servingSeconds = (performance.now() - restartedAt) / 1000;
    stop = true;
    await writer;
    const line = JSON.parse(copiedLine()!) as { mode: string; rows: number; bytes: number; ms: number };
    return { mode, syncMode: line.mode, outageSeconds, writesDuringOutage, keysCopied: line.rows, bytesCopied: line.bytes, syncSeconds: line.ms / 1000, servingSeconds, partitionBytes };
  } finally {
    client?.close();
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : undefined)));
    etcdClient.close();
    await etcd.kill();
    await rm(dir, { recursive: true, force: true });
  }
}

async function runCli(args: string[]): Promise<void> {
  const child = spawn(process.execPath, [MAIN_JS, ...args, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`shardpipe ${args.join(' ')} exited with ${code}`);
}

/** Polls the map in etcd (a bench may poll) until `test` holds. */
async function waitForMap(store: EtcdMapStore, test: (m: PartitionMap) => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stored = await store.read();
    if (stored !== undefined && test(stored.map)) return;
    if (Date.now() > deadline) throw new Error(`the map did not get there within ${timeoutMs} ms`);
    await sleep(50);
  }
}

function whole(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${flag} must be a whole number ≥ 1, got ${text}`);
  return n;
}
