/**
 * Chain replication cost (a measurement, not a test): the same three store node processes with a
 * static map of chains of one (RF=1) and then of three (RF=3, heads spread), in one run.
 *
 * - Ingest-like bulk load: ROWS rows (16-byte keys spread over the keyspace, 100-byte values) in
 *   sorted PackedRows chunks through `StoreClient.bulkPutAll` at its defaults; rows/s and node CPU
 *   seconds per 1M rows, RF=3 / RF=1.
 * - `shardpipe ingest` end to end, as a user would time it: the plain command (CLI start included, default
 *   flags) of a drop of ROWS rows in 8 snappy Parquet files (bench-drop.ts, as `bench:ingest` writes
 *   it) into three fresh nodes, six partitions cut at its split keys, chains of one and of three;
 *   `--ingest-runs` runs of each, alternated, medians and their ratio. Beside the bulk load above it
 *   has the ingest child's own work (Parquet decoding, mapping) on the same two cores: the bulk load
 *   is the harder ratio, since the nodes' three writes per row are almost all the work there.
 * - Put and Get ops/s: CONCURRENCY callers for OPS operations each, through the thick client; and
 *   where a Put's time goes (PutTiming, from the replies' timing per hop): the head's write, the
 *   writes down the chain, and the transit of the forwards and acks between them.
 * - Bytes forwarded per row: the wire size of the Forward message a bulk chunk becomes (encoded by
 *   the node's own forwarder code), per row, times the hops of a chain of three (2).
 *
 * - Failover: three `store start --etcd` nodes (lease 2 s) with a coordinator and a private etcd,
 *   R=3: SIGKILL the head of a partition, then time one thick-client put to that partition (its own
 *   retries included) until the successor accepts it. Goal: under 2 × the lease.
 * - Full sync vs a plain scan, and the write pause during a sync: the same kind of etcd cluster
 *   (fsync on), one partition of R=3 holding ROWS rows. A plain scan of it (the thick client's packed
 *   scan, served by the tail) gives MB/s; then `cluster repair 0 --replica TAIL` makes the tail a
 *   syncing replica, which copies the partition from the new tail while live writes are forwarded to
 *   it, and is promoted by the coordinator: sync MB/s is the partition's key + value bytes over the
 *   time from the repair to the promotion (the coordinator's promotion included), and the same-run
 *   ratio to the scan. Meanwhile one caller puts one key at a time to the chain's head (every put
 *   waits for the syncing tail's ack too): its p50 / p99 / longest put during the sync against the
 *   same figures while idle just before — the longest put is the write pause.
 *
 * Run after `npx tsc -p tsconfig.json`:
 *   node dist/bench/replication-bench.js [--rows 1000000] [--ops 20000] [--concurrency 32] [--cpu-prof DIR] [--load-only] [--ingest-runs 3] [--node-arg FLAG …]
 * `--cpu-prof DIR` has the store nodes of the RF=1 and RF=3 phases write V8 CPU profiles into
 * DIR/rf1 and DIR/rf3, the ingest runs' nodes into DIR/ingest-rf1-0, DIR/ingest-rf3-0, …;
 * `--load-only` runs only the bulk loads of those two phases (no ingest, Put, Get, failover or
 * sync figures). `--node-arg FLAG` (repeatable) starts every store node with that node flag, e.g.
 * `--node-arg=--heap-growing-percent=0` for V8's own old-generation growth instead of the store
 * node's (common/old-generation.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Key, PackedRowsBuilder, PartitionMap, StoreClient, forwardWireBytes, type PackedRows, type WriteReplyTiming } from '../store/index.js';
import { median, quantile } from './bench-stats.js';
import { findFreePort } from '../common/index.js';
import { PrivateEtcd } from '../coordinator/index.js';
import { MAIN_JS, runIngest, startBenchCluster, type BenchCluster } from './bench-cluster.js';
import { DROP_FILES, KEY_COLUMN, VALUE_COLUMN, splitKeys, writeDrop, type Drop } from './bench-drop.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    ops: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '32' },
    'cpu-prof': { type: 'string' },
    'load-only': { type: 'boolean', default: false },
    'ingest-runs': { type: 'string', default: '3' },
    'node-arg': { type: 'string', multiple: true, default: [] },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log('node dist/bench/replication-bench.js [--rows N (default 1000000)] [--ops N (default 20000)] [--concurrency N (default 32)] [--cpu-prof DIR] [--load-only] [--ingest-runs N (default 3; 0 = none)] [--node-arg FLAG (repeatable: a node flag for every store node)]\nBulk load, `shardpipe ingest` of a Parquet drop, Put and Get at RF=1 vs RF=3 on the same 3 store nodes (and where the time of a Put goes); bytes forwarded per row; head failover; full sync MB/s vs a plain scan and the write pause during a sync.');
  process.exit(0);
}
const ROWS = wholeNumber('--rows', values.rows);
const OPS = wholeNumber('--ops', values.ops);
const CONCURRENCY = wholeNumber('--concurrency', values.concurrency);
const PROFILE_DIR = values['cpu-prof'];
const LOAD_ONLY = values['load-only'] === true;
const INGEST_RUNS = values['ingest-runs'] === '0' ? 0 : wholeNumber('--ingest-runs', values['ingest-runs']);
const NODE_ARGS = values['node-arg'];
const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const CHUNK_ROWS = 4096;

function wholeNumber(flag: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${flag} must be a whole number ≥ 1, got ${text}`);
  return n;
}

function keyOf(i: number, count: number): Buffer {
  const key = Buffer.alloc(KEY_BYTES);
  // Spread over the keyspace so each of the three partitions gets a third; sorted by i.
  key.writeUInt32BE(Math.floor((i / count) * 0xffffffff));
  key.writeUInt32BE(i, 4);
  return key;
}

function* chunks(count: number): Generator<PackedRows> {
  const value = Buffer.alloc(VALUE_BYTES, 0x61);
  let builder = new PackedRowsBuilder({ rowsHint: CHUNK_ROWS, bytesHint: CHUNK_ROWS * (KEY_BYTES + VALUE_BYTES) });
  for (let i = 0; i < count; i++) {
    builder.add(keyOf(i, count), value);
    if (builder.count === CHUNK_ROWS) {
      yield builder.finish();
      builder = new PackedRowsBuilder({ rowsHint: CHUNK_ROWS, bytesHint: CHUNK_ROWS * (KEY_BYTES + VALUE_BYTES) });
    }
  }
  if (builder.count > 0) yield builder.finish();
}

function mapOf(replicas: 1 | 3): (addresses: string[]) => PartitionMap {
  return (addresses) => chained(PartitionMap.evenlySplit(1, addresses, 3), addresses, replicas);
}

/** `base` (chains of one) with chains of `replicas`: partition i's chain starts at node i mod 3, so heads are spread. */
function chained(base: PartitionMap, addresses: string[], replicas: 1 | 3): PartitionMap {
  if (replicas === 1) return base;
  return PartitionMap.create(
    1,
    base.partitions.map((p, i) => ({
      id: p.id,
      start: p.start,
      end: p.end,
      chain: [0, 1, 2].map((k) => ({ node: addresses[(i + k) % 3]!, state: 'serving' as const })),
      epoch: 1,
    })),
    { replicas: 3 },
  );
}

interface Figures {
  loadRowsPerSec: number;
  cpuSecondsPer1M: number;
  putOpsPerSec: number;
  getOpsPerSec: number;
  putTiming?: PutTiming;
}

/**
 * Where a Put's time goes, from its reply's timing (medians over the run's puts, ms): the
 * caller's wait; the head's write (queued to durable); the writes down the chain (every other
 * hop's, queued to durable, summed); and the rest of the head's wait for the tail's ack — the
 * forward calls' transit both ways and each hop's turn on its event loop.
 */
interface PutTiming {
  latencyP50Ms: number;
  latencyP99Ms: number;
  headWriteP50Ms: number;
  chainWritesP50Ms: number;
  transitP50Ms: number;
}

async function cpu(cluster: BenchCluster): Promise<number> {
  let total = 0;
  for (const n of cluster.nodes) total += (await n.cpuSeconds()) ?? 0;
  return total;
}

/** The medians (and the latency's p99) of PutTiming over the puts' latencies and reply timings. */
function putTiming(latencies: readonly number[], timings: readonly WriteReplyTiming[]): PutTiming {
  const chainWrites = timings.map((t) => t.hops.reduce((sum, h) => sum + h.writeMs, 0));
  return {
    latencyP50Ms: median(latencies),
    latencyP99Ms: quantile(latencies, 0.99),
    headWriteP50Ms: median(timings.map((t) => t.writeMs)),
    chainWritesP50Ms: median(chainWrites),
    transitP50Ms: median(timings.map((t, i) => t.forwardMs - chainWrites[i]!)),
  };
}

async function ops(count: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) await op(next++);
    }),
  );
  return count / ((performance.now() - started) / 1000);
}

/** The store nodes' flags: `--node-arg`s, and for `--cpu-prof DIR` profiles into DIR/`name`. */
function nodeArgs(name: string): string[] {
  return PROFILE_DIR === undefined ? NODE_ARGS : [...NODE_ARGS, '--cpu-prof', `--cpu-prof-dir=${join(PROFILE_DIR, name)}`];
}

async function measure(replicas: 1 | 3, workDir: string): Promise<Figures> {
  const cluster = await startBenchCluster(join(workDir, `rf${replicas}`), 3, mapOf(replicas), { nodeArgs: nodeArgs(`rf${replicas}`) });
  const client = new StoreClient({ seeds: cluster.addresses });
  try {
    const cpuBefore = await cpu(cluster);
    const started = performance.now();
    const result = await client.bulkPutAll(chunks(ROWS));
    const seconds = (performance.now() - started) / 1000;
    if (result.rows !== ROWS) throw new Error(`RF=${replicas}: bulk load stored ${result.rows} of ${ROWS} rows`);
    const cpuSeconds = (await cpu(cluster)) - cpuBefore;
    const digest = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));
    if (digest.count !== ROWS) throw new Error(`RF=${replicas}: the tails hold ${digest.count} of ${ROWS} rows`);
    if (LOAD_ONLY) return { loadRowsPerSec: ROWS / seconds, cpuSecondsPer1M: (cpuSeconds / ROWS) * 1e6, putOpsPerSec: NaN, getOpsPerSec: NaN };
    const value = Buffer.alloc(VALUE_BYTES, 0x62);
    const latencies: number[] = [];
    const timings: WriteReplyTiming[] = [];
    const putOpsPerSec = await ops(OPS, async (i) => {
      const sent = performance.now();
      const result = await client.put(Key.fromBytes(keyOf(i * 7919, OPS * 7919)), value);
      latencies.push(performance.now() - sent);
      if (result.timing !== undefined) timings.push(result.timing);
    });
    const getOpsPerSec = await ops(OPS, (i) => client.get(Key.fromBytes(keyOf(i, ROWS))));
    return { loadRowsPerSec: ROWS / seconds, cpuSecondsPer1M: (cpuSeconds / ROWS) * 1e6, putOpsPerSec, getOpsPerSec, putTiming: putTiming(latencies, timings) };
  } finally {
    client.close();
    await cluster.stop();
  }
}

/** Partitions of the ingest phase, as `bench:ingest` cuts its drop: 3 nodes × 6 partitions. */
const INGEST_PARTITIONS = 6;

interface IngestFigures {
  rowsPerSec: number;
  nodeCpuSecondsPer1M: number;
}

/**
 * The plain `shardpipe ingest DROP --key-column id --value-column payload --seeds … --redis …
 * --wait --json` (CLI start included, default flags) into three fresh nodes whose six partitions
 * are cut at the drop's split keys, with chains of `replicas`.
 */
async function ingestOnce(replicas: 1 | 3, drop: Drop, workDir: string, runIndex: number): Promise<IngestFigures> {
  const keys = splitKeys(ROWS, INGEST_PARTITIONS).map((k) => Buffer.from(k));
  const cluster = await startBenchCluster(workDir, 3, (addresses) => chained(PartitionMap.fromSplitKeys(1, addresses, keys), addresses, replicas), { nodeArgs: nodeArgs(`ingest-rf${replicas}-${runIndex}`) });
  try {
    const cpuBefore = await cpu(cluster);
    const run = await runIngest(cluster, drop.dir, ROWS, ['--key-column', KEY_COLUMN, '--value-column', VALUE_COLUMN], { cwd: join(workDir, 'ingest-cwd') });
    const cpuSeconds = (await cpu(cluster)) - cpuBefore;
    const client = new StoreClient({ seeds: cluster.addresses });
    try {
      const digest = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));
      if (digest.count !== ROWS) throw new Error(`ingest at RF=${replicas}: the tails hold ${digest.count} of ${ROWS} rows`);
    } finally {
      client.close();
    }
    return { rowsPerSec: ROWS / (run.ms / 1000), nodeCpuSecondsPer1M: (cpuSeconds / ROWS) * 1e6 };
  } finally {
    await cluster.stop();
  }
}

/** INGEST_RUNS runs at each RF, alternated (RF=1, RF=3, RF=1, …) so that drift hits both; medians and every run. */
async function ingestFigures(workDir: string): Promise<{ rf1: IngestFigures[]; rf3: IngestFigures[]; drop: Drop }> {
  process.stderr.write(`generating the drop: ${ROWS} rows in ${Math.min(DROP_FILES, ROWS)} snappy part files…\n`);
  const drop = await writeDrop(join(workDir, 'drop'), ROWS);
  const rf1: IngestFigures[] = [];
  const rf3: IngestFigures[] = [];
  for (let i = 0; i < INGEST_RUNS; i++) {
    process.stderr.write(`shardpipe ingest, run ${i + 1} of ${INGEST_RUNS}: RF=1, then RF=3…\n`);
    rf1.push(await ingestOnce(1, drop, join(workDir, `ingest-rf1-${i}`), i));
    rf3.push(await ingestOnce(3, drop, join(workDir, `ingest-rf3-${i}`), i));
  }
  return { rf1, rf3, drop };
}

const LEASE_MS = 2000;

/** A CLI child (a store node with the `--node-arg`s); resolves once it printed `{"event": name}` on stdout. */
function cliChild(args: string[], event: string | undefined): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, [...(args[0] === 'store' ? NODE_ARGS : []), MAIN_JS, ...args, '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${args.slice(0, 2).join(' ')} exited (${code}) before "${event}"`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (event !== undefined && line.startsWith('{') && (JSON.parse(line) as { event?: string }).event === event) resolve();
    });
  });
  return { child, ready };
}

/** Milliseconds from SIGKILL of a chain head to a put on that partition accepted by its successor. */
async function failoverMs(workDir: string): Promise<number> {
  const etcd = await PrivateEtcd.start({ dataDir: join(workDir, 'etcd') });
  const children: ChildProcess[] = [];
  try {
    const addresses = await Promise.all([0, 1, 2].map(async () => `127.0.0.1:${await findFreePort()}`));
    const nodes = addresses.map((a, i) => cliChild(['store', 'start', '--etcd', etcd.url, '--node', a, '--data', join(workDir, `etcd-node-${i}`), '--lease', `${LEASE_MS / 1000}s`, '--no-sync'], 'ready'));
    children.push(...nodes.map((n) => n.child));
    const coordinator = cliChild(['coordinator', '--etcd', etcd.url, '--lease', `${LEASE_MS / 1000}s`], 'ready');
    children.push(coordinator.child);
    await coordinator.ready;
    // Its "wrote map version 1" line is not printed: the bench's stdout is its JSON alone.
    await cliRun(['cluster', 'init', '--etcd', etcd.url, '--partitions', '3', '--replicas', '3']);
    await Promise.all(nodes.map((n) => n.ready));
    const client = new StoreClient({ seeds: addresses, operationTimeoutMs: 60_000 });
    try {
      const key = Key.fromBytes(Buffer.from([0x00, 0x01]));
      await client.put(key, Buffer.from('before'));
      const head = (await client.map()).lookup(key.bytes).node;
      const victim = children[addresses.indexOf(head)]!;
      const exited = once(victim, 'exit');
      const killedAt = performance.now();
      victim.kill('SIGKILL');
      await exited;
      await client.put(key, Buffer.from('after'));
      return performance.now() - killedAt;
    } finally {
      client.close();
    }
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : undefined)));
    await etcd.stop();
  }
}

interface SyncFigures {
  mb: number;
  scanMBPerSec: number;
  syncMBPerSec: number;
  syncSeconds: number;
  idle: Latencies;
  during: Latencies;
}

interface Latencies {
  puts: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Sequential puts (one at a time) to keys outside the loaded ones while `going()` holds (at least `min`). */
async function putLatencies(client: StoreClient, tag: string, going: () => boolean, min: number): Promise<Latencies> {
  const latencies: number[] = [];
  const value = Buffer.alloc(VALUE_BYTES, 0x63);
  for (let i = 0; going() || latencies.length < min; i++) {
    const t = performance.now();
    await client.put(Key.fromUtf8(`put-${tag}-${i}`), value);
    latencies.push(performance.now() - t);
  }
  return { puts: latencies.length, p50Ms: median(latencies), p99Ms: quantile(latencies, 0.99), maxMs: quantile(latencies, 1) };
}

/** A full sync of a replica (cluster repair of a chain's tail) against a plain scan, with the puts' latency during it. */
async function syncFigures(workDir: string): Promise<SyncFigures> {
  const etcd = await PrivateEtcd.start({ dataDir: join(workDir, 'sync-etcd') });
  const children: ChildProcess[] = [];
  try {
    const addresses = await Promise.all([0, 1, 2].map(async () => `127.0.0.1:${await findFreePort()}`));
    const nodes = addresses.map((a, i) => cliChild(['store', 'start', '--etcd', etcd.url, '--node', a, '--data', join(workDir, `sync-node-${i}`), '--lease', `${LEASE_MS / 1000}s`], 'ready'));
    children.push(...nodes.map((n) => n.child));
    const coordinator = cliChild(['coordinator', '--etcd', etcd.url, '--lease', `${LEASE_MS / 1000}s`], 'ready');
    children.push(coordinator.child);
    await coordinator.ready;
    await cliRun(['cluster', 'init', '--etcd', etcd.url, '--partitions', '1', '--replicas', '3']);
    await Promise.all(nodes.map((n) => n.ready));
    const client = new StoreClient({ seeds: addresses, operationTimeoutMs: 120_000 });
    try {
      const loaded = await client.bulkPutAll(chunks(ROWS));
      if (loaded.rows !== ROWS) throw new Error(`sync: bulk load stored ${loaded.rows} of ${ROWS} rows`);
      const started = performance.now();
      let bytes = 0;
      for await (const batch of client.scanAllPacked(Buffer.alloc(0), Buffer.alloc(0))) bytes += batch.bytes;
      const scanSeconds = (performance.now() - started) / 1000;
      const idleUntil = performance.now() + Math.max(2000, scanSeconds * 1000);
      const idle = await putLatencies(client, 'idle', () => performance.now() < idleUntil, 50);

      const chain = (await client.refreshMap()).partitions[0]!.chain;
      const tail = chain[chain.length - 1]!.node;
      let syncing = true;
      const syncStarted = performance.now();
      const during = putLatencies(client, 'sync', () => syncing, 20);
      await cliRun(['cluster', 'repair', '0', '--replica', tail, '--etcd', etcd.url]);
      // Syncing once the repair is in; done when the coordinator promoted the verified copy.
      for (let sawSyncing = false; ; await new Promise((r) => setTimeout(r, 20))) {
        const now = (await client.refreshMap()).partitions[0]!.chain;
        if (now.some((r) => r.state === 'syncing')) sawSyncing = true;
        else if (sawSyncing && now.length === 3) break;
      }
      const syncSeconds = (performance.now() - syncStarted) / 1000;
      syncing = false;
      const pause = await during;
      return { mb: bytes / 1e6, scanMBPerSec: bytes / 1e6 / scanSeconds, syncMBPerSec: bytes / 1e6 / syncSeconds, syncSeconds, idle, during: pause };
    } finally {
      client.close();
    }
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : undefined)));
    await etcd.stop();
  }
}

/** The ingest phase's JSON: medians of each RF, their ratio (the goal's figure) and every run. */
function ingestReport(figures: { rf1: IngestFigures[]; rf3: IngestFigures[]; drop: Drop }, round: (n: number) => number): Record<string, unknown> {
  const of = (runs: IngestFigures[]): Record<string, unknown> => ({
    rowsPerSec: Math.round(median(runs.map((r) => r.rowsPerSec))),
    nodeCpuSecondsPer1MRows: round(median(runs.map((r) => r.nodeCpuSecondsPer1M))),
    runs: runs.map((r) => Math.round(r.rowsPerSec)),
  });
  return {
    command: `shardpipe ingest DROP --key-column ${KEY_COLUMN} --value-column ${VALUE_COLUMN} --seeds A,B,C --redis URL --wait --json`,
    drop: { files: figures.drop.files, mb: round(figures.drop.bytesOnDisk / 1e6), partitions: INGEST_PARTITIONS },
    rf1: of(figures.rf1),
    rf3: of(figures.rf3),
    rf3OverRf1: round(median(figures.rf3.map((r) => r.rowsPerSec)) / median(figures.rf1.map((r) => r.rowsPerSec))),
    goal: '≥ 0.5',
  };
}

/** Runs a CLI command to its end; throws unless it exits 0. */
async function cliRun(args: string[]): Promise<void> {
  const child = spawn(process.execPath, [MAIN_JS, ...args, '--log-level', 'error'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`shardpipe ${args.slice(0, 2).join(' ')} exited ${code}`);
}

/** Wire bytes of the Forward of one full bulk chunk, per row, over the two hops of a chain of three. */
function forwardedBytesPerRow(): { perHop: number; perRow: number; payloadPerRow: number } {
  const rows = chunks(CHUNK_ROWS).next().value as PackedRows;
  const wire = forwardWireBytes({ partitionId: 0, epoch: 1, from: '127.0.0.1:65535', streamId: 'ffffffffffffffff', seq: 123_456_789, op: { kind: 'bulk', rows, assigned: { firstEtag: 123_456_789, nowMs: Date.now() } } });
  return { perHop: wire / rows.count, perRow: (2 * wire) / rows.count, payloadPerRow: KEY_BYTES + VALUE_BYTES };
}

function roundTiming(t: PutTiming, round: (n: number) => number): PutTiming {
  return Object.fromEntries(Object.entries(t).map(([name, value]) => [name, round(value)])) as unknown as PutTiming;
}

const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-replication-bench-'));
try {
  const rf1 = await measure(1, workDir);
  const rf3 = await measure(3, workDir);
  const fwd = forwardedBytesPerRow();
  const round = (n: number): number => Math.round(n * 100) / 100;
  const roundAll = (l: Latencies): Latencies => ({ puts: l.puts, p50Ms: round(l.p50Ms), p99Ms: round(l.p99Ms), maxMs: round(l.maxMs) });
  const failover = LOAD_ONLY ? undefined : await failoverMs(workDir);
  const sync = LOAD_ONLY ? undefined : await syncFigures(workDir);
  const ingest = LOAD_ONLY || INGEST_RUNS === 0 ? undefined : await ingestFigures(workDir);
  console.log(
    JSON.stringify(
      {
        rows: ROWS,
        ops: OPS,
        concurrency: CONCURRENCY,
        rf1: { loadRowsPerSec: Math.round(rf1.loadRowsPerSec), nodeCpuSecondsPer1MRows: round(rf1.cpuSecondsPer1M), putOpsPerSec: Math.round(rf1.putOpsPerSec), getOpsPerSec: Math.round(rf1.getOpsPerSec) },
        rf3: { loadRowsPerSec: Math.round(rf3.loadRowsPerSec), nodeCpuSecondsPer1MRows: round(rf3.cpuSecondsPer1M), putOpsPerSec: Math.round(rf3.putOpsPerSec), getOpsPerSec: Math.round(rf3.getOpsPerSec) },
        ratios: {
          loadRf3OverRf1: round(rf3.loadRowsPerSec / rf1.loadRowsPerSec),
          loadGoal: '≥ 0.5',
          putRf3OverRf1: round(rf3.putOpsPerSec / rf1.putOpsPerSec),
          getRf3OverRf1: round(rf3.getOpsPerSec / rf1.getOpsPerSec),
          cpuRf3OverRf1: round(rf3.cpuSecondsPer1M / rf1.cpuSecondsPer1M),
        },
        putTimingMs: rf1.putTiming === undefined || rf3.putTiming === undefined ? 'not run (--load-only)' : { rf1: roundTiming(rf1.putTiming, round), rf3: roundTiming(rf3.putTiming, round) },
        ingest: ingest === undefined ? 'not run (--load-only or --ingest-runs 0)' : ingestReport(ingest, round),
        forwardedBytesPerRow: { perHop: round(fwd.perHop), chainOfThree: round(fwd.perRow), rowPayload: fwd.payloadPerRow },
        failover: failover === undefined ? 'not run (--load-only)' : { leaseMs: LEASE_MS, sigkillToFirstAcceptedWriteMs: Math.round(failover), overLease: round(failover / LEASE_MS), goal: '< 2 × lease' },
        sync: sync === undefined ? 'not run (--load-only)' : {
          partitionMB: round(sync.mb),
          plainScanMBPerSec: round(sync.scanMBPerSec),
          fullSyncMBPerSec: round(sync.syncMBPerSec),
          syncOverScan: round(sync.syncMBPerSec / sync.scanMBPerSec),
          syncSeconds: round(sync.syncSeconds),
          putIdle: roundAll(sync.idle),
          putDuringSync: roundAll(sync.during),
          p99DuringOverIdle: round(sync.during.p99Ms / sync.idle.p99Ms),
          writePauseMs: round(sync.during.maxMs),
          longestPutDuringOverIdle: round(sync.during.maxMs / sync.idle.maxMs),
        },
      },
      null,
      2,
    ),
  );
} finally {
  await rm(workDir, { recursive: true, force: true });
}
