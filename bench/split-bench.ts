/**
 * Online split (a measurement, not a test): a private etcd, three `store start --etcd` nodes (RF=3)
 * and a coordinator; partition 0 holds ROWS rows; a steady writer (WRITERS callers doing puts into
 * partition 0) runs throughout. SPLITS splits follow one after the other, each cutting partition 0
 * in half (at 0x4000, then 0x2000, …), each submitted as an operation record the way `cluster split`
 * submits it.
 *
 * Prints per split: its duration (submit → completed), the rows moved and rows/s, and the write
 * pause the head measured; the pauses' p50/p99 over all splits; the writer's puts/s and put latency
 * p50/p99 before the first split vs during the splits (the same-run ratio).
 *
 * `--handover`: a fourth node, and instead of splits SPLITS `move`s of partition 0's head to the
 * node outside its chain (README "Live data movement", the head hand-over): per move its duration
 * and the hand-over pause the old head measured, the same p50/p99 and before/during writer figures.
 *
 * Run after `npx tsc -p tsconfig.json`:
 *   node dist/bench/split-bench.js [--rows 200000] [--splits 3] [--writers 4] [--max-pause-ms 2000] [--handover]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { findFreePort } from '../common/index.js';
import { PrivateEtcd } from '../coordinator/index.js';
import { DEFAULT_MAX_MOVEMENTS, EtcdMapStore, EtcdOperationStore, Key, PackedRowsBuilder, StoreClient, connectEtcd, newOperationId, type OperationRecord, type PackedRows } from '../store/index.js';
import { parseBenchArgs } from './bench-args.js';
import { MAIN_JS } from './bench-cluster.js';
import { quantile } from './bench-stats.js';

const USAGE = 'node dist/bench/split-bench.js [--rows N (default 200000)] [--splits N (default 3)] [--writers N (default 4)] [--max-pause-ms MS (default 2000)] [--handover]\nSplits partition 0 of a live 3-node RF=3 cluster under a steady writer; prints each split\'s duration, rows/s and write pause, the pauses\' p50/p99, and the writer\'s throughput and latency before vs during.\n--handover: 4 nodes, and N moves of partition 0\'s head (the head hand-over pause) instead of splits.';
const { values } = parseBenchArgs(USAGE, {
  options: {
    rows: { type: 'string', default: '200000' },
    splits: { type: 'string', default: '3' },
    writers: { type: 'string', default: '4' },
    'max-pause-ms': { type: 'string', default: '2000' },
    handover: { type: 'boolean', default: false },
  },
});
const ROWS = wholeNumber('--rows', values.rows);
const SPLITS = wholeNumber('--splits', values.splits);
const WRITERS = wholeNumber('--writers', values.writers);
const MAX_PAUSE_MS = wholeNumber('--max-pause-ms', values['max-pause-ms']);
const HANDOVER = values.handover === true;
if (SPLITS > 12) throw new RangeError(`--splits must be 1–12 (each halves partition 0), got ${SPLITS}`);
const LEASE = '2s';
const VALUE = Buffer.alloc(100, 0x61);

function wholeNumber(flag: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${flag} must be a whole number ≥ 1, got ${text}`);
  return n;
}

/** Row i's key: 2-byte prefix spread over [0000, 8000) (partition 0 of an even 2-partition map) + i. */
function keyOf(i: number): Buffer {
  const key = Buffer.alloc(8);
  key.writeUInt16BE(Math.floor((i * 0x8000) / ROWS));
  key.writeUInt32BE(i, 2);
  return key;
}

function* chunks(): Generator<PackedRows> {
  let builder = new PackedRowsBuilder();
  for (let i = 0; i < ROWS; i++) {
    builder.add(keyOf(i), VALUE);
    if (builder.count === 4096) {
      yield builder.finish();
      builder = new PackedRowsBuilder();
    }
  }
  if (builder.count > 0) yield builder.finish();
}

function cliChild(args: string[], event: string): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, [MAIN_JS, ...args, '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${args.slice(0, 2).join(' ')} exited (${code}) before "${event}"`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('{') && (JSON.parse(line) as { event?: string }).event === event) resolve();
    });
  });
  return { child, ready };
}

/** A steady writer: WRITERS callers putting random keys of partition 0; latencies by phase. */
class Writer {
  phase: 'before' | 'during' | 'off' = 'off';
  readonly latencies = { before: [] as number[], during: [] as number[] };
  readonly ms = { before: 0, during: 0 };
  errors = 0;
  private stopped = false;
  private done: Promise<void>[] = [];
  private phaseStart = 0;

  constructor(private readonly client: StoreClient) {}

  start(): void {
    this.done = Array.from({ length: WRITERS }, async () => {
      while (!this.stopped) {
        const started = performance.now();
        const phase = this.phase;
        try {
          await this.client.put(Key.fromBytes(keyOf(Math.floor(Math.random() * ROWS))), VALUE);
          if (phase !== 'off' && phase === this.phase) this.latencies[phase].push(performance.now() - started);
        } catch {
          this.errors++;
        }
      }
    });
  }

  enter(phase: 'before' | 'during' | 'off'): void {
    const now = performance.now();
    if (this.phase !== 'off') this.ms[this.phase] += now - this.phaseStart;
    this.phase = phase;
    this.phaseStart = now;
  }

  async stop(): Promise<void> {
    this.enter('off');
    this.stopped = true;
    await Promise.all(this.done);
  }
}

async function waitFinished(ops: EtcdOperationStore, id: string): Promise<OperationRecord> {
  const { revision } = await ops.list();
  let wake: () => void = () => undefined;
  const watcher = await ops.watch(revision, () => wake());
  try {
    for (;;) {
      const r = (await ops.get(id))?.record;
      if (r !== undefined && (r.state === 'completed' || r.state === 'failed' || r.state === 'cancelled')) return r;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    await watcher.cancel();
  }
}

async function main(): Promise<void> {
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-split-bench-'));
  const etcd = await PrivateEtcd.start({ dataDir: join(workDir, 'etcd') });
  const children: ChildProcess[] = [];
  const etcdClient = connectEtcd({ url: etcd.url });
  let client: StoreClient | undefined;
  try {
    const addresses = await Promise.all((HANDOVER ? [0, 1, 2, 3] : [0, 1, 2]).map(async () => `127.0.0.1:${await findFreePort()}`));
    const nodes = addresses.map((a, i) => cliChild(['store', 'start', '--etcd', etcd.url, '--node', a, '--data', join(workDir, `node-${i}`), '--lease', LEASE], 'ready'));
    children.push(...nodes.map((n) => n.child));
    const coordinator = cliChild(['coordinator', '--etcd', etcd.url, '--lease', LEASE], 'ready');
    children.push(coordinator.child);
    await coordinator.ready;
    const init = spawn(process.execPath, [MAIN_JS, 'cluster', 'init', '--etcd', etcd.url, '--partitions', '2', '--replicas', '3', '--log-level', 'error'], { stdio: 'inherit' });
    const [code] = (await once(init, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`cluster init exited ${code}`);
    await Promise.all(nodes.map((n) => n.ready));
    client = new StoreClient({ seeds: addresses, operationTimeoutMs: 60_000 });
    const loadStart = performance.now();
    await client.bulkPutAll(chunks());
    process.stdout.write(`loaded ${ROWS} rows into partition 0 in ${((performance.now() - loadStart) / 1000).toFixed(1)} s (RF=3)\n`);

    const writer = new Writer(client);
    writer.start();
    writer.enter('before');
    await new Promise((resolve) => setTimeout(resolve, 3000));
    writer.enter('during');
    const ops = new EtcdOperationStore(etcdClient, etcd.url);
    const pauses: number[] = [];
    const maps = new EtcdMapStore(etcdClient, etcd.url);
    for (let s = 0; HANDOVER && s < SPLITS; s++) {
      const p = (await maps.read())!.map.byId(0)!;
      const to = addresses.find((a) => !p.chain.some((r) => r.node === a))!;
      const now = Date.now();
      const record: OperationRecord = { id: newOperationId(now), args: { kind: 'move', partition: 0, from: p.node, to }, state: 'pending', createdAtMs: now, updatedAtMs: now, requestedBy: 'split-bench', limits: { maxMovements: DEFAULT_MAX_MOVEMENTS, maxPauseMs: MAX_PAUSE_MS }, steps: [], pauses: [] };
      const started = performance.now();
      await ops.create(record);
      const done = await waitFinished(ops, record.id);
      const seconds = (performance.now() - started) / 1000;
      if (done.state !== 'completed') throw new Error(`move ${s + 1} ${done.state}: ${done.error ?? done.message}`);
      const held = done.pauses.filter((x) => x.reason.startsWith('head hand-over (')).map((x) => x.ms);
      const retries = done.pauses.filter((x) => x.reason.startsWith('head hand-over released')).length;
      pauses.push(...held);
      process.stdout.write(`move ${s + 1} of partition 0's head ${p.node} → ${to}: ${seconds.toFixed(2)} s, ${done.steps[0]?.rowsTotal ?? 0} rows copied, hand-over pause ${held.join('/') || '?'} ms${retries > 0 ? `, ${retries} attempts released` : ''}\n`);
    }
    for (let s = 0; !HANDOVER && s < SPLITS; s++) {
      const at = Buffer.alloc(2);
      at.writeUInt16BE(0x4000 >> s);
      const now = Date.now();
      const record: OperationRecord = { id: newOperationId(now), args: { kind: 'split', partition: 0, at: at.toString('hex') }, state: 'pending', createdAtMs: now, updatedAtMs: now, requestedBy: 'split-bench', limits: { maxMovements: DEFAULT_MAX_MOVEMENTS, maxPauseMs: MAX_PAUSE_MS }, steps: [], pauses: [] };
      const started = performance.now();
      await ops.create(record);
      const done = await waitFinished(ops, record.id);
      const seconds = (performance.now() - started) / 1000;
      if (done.state !== 'completed') throw new Error(`split ${s + 1} ${done.state}: ${done.error ?? done.message}`);
      const rows = done.steps[0]?.rowsTotal ?? 0;
      const cut = done.pauses.filter((p) => p.reason.startsWith('split cut')).map((p) => p.ms);
      const retries = done.pauses.filter((p) => p.reason.startsWith('cut released')).length;
      pauses.push(...cut);
      process.stdout.write(`split ${s + 1} at 0x${at.toString('hex')}: ${seconds.toFixed(2)} s, ${rows} rows moved (${Math.round(rows / seconds)} rows/s), write pause ${cut.join('/') || '?'} ms${retries > 0 ? `, ${retries} cut attempts released` : ''}\n`);
    }
    await writer.stop();
    const lat = (xs: number[]): string => `p50 ${quantile(xs, 0.5).toFixed(1)} ms, p99 ${quantile(xs, 0.99).toFixed(1)} ms`;
    const rate = (phase: 'before' | 'during'): number => writer.latencies[phase].length / (writer.ms[phase] / 1000);
    const what = HANDOVER ? 'head hand-overs' : 'splits';
    process.stdout.write(`write pause over ${pauses.length} ${what}: p50 ${quantile(pauses, 0.5)} ms, p99 ${quantile(pauses, 0.99)} ms, max ${quantile(pauses, 1)} ms\n`);
    process.stdout.write(`writer (${WRITERS} callers): before ${Math.round(rate('before'))} puts/s (${lat(writer.latencies.before)}); during the ${what} ${Math.round(rate('during'))} puts/s (${lat(writer.latencies.during)}); during/before ${(rate('during') / rate('before')).toFixed(2)}; ${writer.errors} errors\n`);
  } finally {
    client?.close();
    etcdClient.close();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : undefined)));
    await etcd.stop();
    await rm(workDir, { recursive: true, force: true });
  }
}

await main();
