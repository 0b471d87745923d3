/**
 * Store write/read benchmark (a measurement, not a test).
 *
 * Measures, for N sorted rows of 16-byte keys and 100-byte values (default 1,000,000):
 *   1. a baseline in this process: classic-level chained batches of 1000 rows into a fresh LevelDB
 *      (no sync, as classic-level defaults) — every ratio below is to it; beside it, the same rows in
 *      batches of one BulkInsert call's rows (1 MiB) with fsync per batch, the raw cost of what the
 *      fsync node does (its ratio is printed too), and the CPU seconds of each;
 *   2. BulkInsert through gRPC into one store node run as a child process (`store start`, 4
 *      partitions) with `StoreClient.bulkPutAll` of PackedRows batches at its defaults (the path of
 *      ingest and restore), once with fsync per batch (the default) and once with `--no-sync`, and
 *      into a third node (fsync) in the per-row form of old clients (a BulkRow message per row,
 *      1,000 rows per call, 4 in flight): rows/s, MB/s (key + value bytes, 1 MB = 10^6 B) and the
 *      ratio to the baseline;
 *   3. Get and Put ops/s through the real StoreClient, with p50/p99 latency and CPU seconds of the
 *      node and of this process per 1M ops, at concurrency 1 and 32 against each node, each against
 *      a no-op grpc-js unary call (the transport ceiling, raw bytes) at the same concurrency measured
 *      in alternating rounds with it (the machine's load moves both alike); and redis-benchmark
 *      GET/SET (AOF always, 100-byte values) in the same run;
 *   4. peak RSS of this process and of each node child; CPU seconds (user + system) of the node and of
 *      this process (the client) during each bulk load.
 * Prints a table, then one JSON line with every figure.
 *
 * Run: `npm run bench:store` (builds first), or after `npx tsc -p tsconfig.json`:
 *   node dist/bench/store-bench.js [--rows N] [--ops N (Get/Put calls per run at concurrency 1; 4× that at 32)]
 *     [--node-cpu-prof DIR (run the node children with node --cpu-prof, profiles into DIR)]
 *     [--point-calls-in-flight N (StoreClient pointCallsInFlight for the Get/Put runs; default: the client's)]
 *     [--points-only (only the fsync node's Get/Put phases, after a bulk load of --rows, and redis-benchmark: for profiling them)]
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { findFreePort } from '../common/index.js';
import { DEFAULT_BULK_BATCH_MAX_BYTES, Key, PartitionMap, PackedRows, PackedRowsBuilder, StoreClient, type BulkRowInput, type WriteTiming } from '../store/index.js';
import { measureRedisBenchmark, runCalls, startNoopGrpc, type NoopGrpc, type RedisBenchmarkFigures } from './bench-peers.js';
import { readCpuSeconds, readPeakRssMb, selfCpuSeconds, selfPeakRssMb, stopChild, waitForReady } from './bench-processes.js';
import { fixed, int, roundNumbers, table } from './bench-format.js';
import { MemorySampler, describeMemoryAtPeak, type MemoryAtPeak } from './bench-memory.js';
import { parseBenchArgs } from './bench-args.js';

const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const CHUNK_ROWS = 1000;
const PARTITIONS = 4;
const MAX_IN_FLIGHT = 4;
const OP_CONCURRENCY = [1, 32] as const;
const MAIN_JS = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');

// Values are views into one random pool, 100 bytes apart, so LevelDB's block compression sees
// realistic (incompressible) data without generating 100 MB of random bytes.
const VALUE_POOL = randomBytes(1024 * 1024);
const VALUE_SLOTS = Math.floor(VALUE_POOL.length / VALUE_BYTES);

interface WriteFigures {
  rows: number;
  ms: number;
  rowsPerSec: number;
  mbPerSec: number;
}

/** A raw classic-level load in this process, with its batch size, sync and CPU seconds. */
interface BaselineFigures extends WriteFigures {
  batchRows: number;
  sync: boolean;
  cpuSeconds: number;
}

interface BulkFigures extends WriteFigures {
  ratioToBaseline: number;
  calls: number;
  storedRows: number;
  serverTiming: WriteTiming;
  /** User + system CPU seconds of the node during the load. */
  nodeCpuSeconds: number | undefined;
  /** User + system CPU seconds of this process (the client) during the load. */
  clientCpuSeconds: number;
  /** The node's peak RSS right after the load, MiB. */
  nodePeakRssMb: number | undefined;
}

/** The BulkInsert load through the per-row form (old clients), on a node of its own. */
interface PerRowRun {
  label: string;
  bulk: BulkFigures;
}

interface OpFigures {
  op: 'get' | 'put';
  concurrency: number;
  ops: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  misses: number;
  /** The no-op grpc-js call at the same concurrency, in rounds alternating with these ops. */
  noopCallsPerSec: number;
  noopP50Ms: number;
  /** opsPerSec / noopCallsPerSec. */
  ratioToNoop: number;
  /**
   * Put at concurrency 1 only: one-row classic-level batches with fsync, in-process, one at a time,
   * in rounds alternating with these ops (what the disk gives a lone writer), and the ceiling of a
   * lone Put — a no-op call and such a write back to back, 1 / (1/no-op + 1/write) — with the ratio.
   */
  syncWrite?: { writesPerSec: number; p50Ms: number; ceilingOpsPerSec: number; ratioToCeiling: number };
  /** User + system CPU seconds per 1M ops of the node and of this process (the client). */
  nodeCpuPerMOps: number | undefined;
  clientCpuPerMOps: number;
}

/** The peers of the point operations, measured in the same run. */
interface PointPeers {
  /** The no-op call per concurrency, over the rounds of the fsync node's Get and Put runs. */
  noop: Array<{ concurrency: number; calls: number; callsPerSec: number }>;
  redisBenchmark: RedisBenchmarkFigures[];
}

/** Rounds each op run is cut into, alternating with as many no-op calls. */
const OP_ROUNDS = 5;

interface NodeRun {
  label: string;
  sync: boolean;
  bulk: BulkFigures;
  ops: OpFigures[];
  peakRssMb: number | undefined;
  /** The split of the node's largest sampled RSS over the whole run (load and ops). */
  memoryAtPeak: MemoryAtPeak | undefined;
}

interface NodeProcess {
  address: string;
  pid: number;
  peakRssMb(): Promise<number | undefined>;
  /** Anonymous and file-backed memory at the node's largest sampled RSS so far (bench-memory.ts). */
  memoryAtPeak(): MemoryAtPeak | undefined;
  cpuSeconds(): Promise<number | undefined>;
  stop(): Promise<void>;
}

async function main(): Promise<void> {
  const { rows, ops, nodeCpuProfDir, pointCallsInFlight, pointsOnly } = parseCommandLine();
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-bench-'));
  try {
    if (pointsOnly) {
      await measurePointsOnly(rows, ops, workDir, nodeCpuProfDir, pointCallsInFlight);
      return;
    }
    process.stderr.write(`baseline: classic-level, ${rows} rows…\n`);
    const baseline = await measureBaseline(rows, join(workDir, 'baseline'), CHUNK_ROWS, false);
    process.stderr.write(`baseline with fsync per ${PACKED_CHUNK_ROWS}-row batch…\n`);
    const syncBaseline = await measureBaseline(rows, join(workDir, 'baseline-sync'), PACKED_CHUNK_ROWS, true);
    const runs: NodeRun[] = [];
    const noop = await startNoopGrpc();
    try {
      for (const sync of [true, false]) {
        const label = sync ? 'fsync per batch' : '--no-sync';
        process.stderr.write(`store node (${label}): bulk load and ops…\n`);
        runs.push(await measureNode(rows, ops, sync, label, baseline, join(workDir, sync ? 'node-sync' : 'node-nosync'), noop, nodeCpuProfDir, pointCallsInFlight));
      }
    } finally {
      await noop.close();
    }
    process.stderr.write('store node (fsync per batch): bulk load, per-row form (old clients)…\n');
    const perRow = await measurePerRowNode(rows, baseline, join(workDir, 'node-per-row'), nodeCpuProfDir);
    process.stderr.write('peers: redis-benchmark GET/SET…\n');
    const peers = await measurePointPeers(runs.find((r) => r.sync)!, ops, workDir);
    const benchPeakRssMb = (await selfPeakRssMb()) ?? Number.NaN;
    printReport(rows, baseline, syncBaseline, runs, perRow, peers, benchPeakRssMb);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function parseCommandLine(): { rows: number; ops: number; nodeCpuProfDir: string | undefined; pointCallsInFlight: number | undefined; pointsOnly: boolean } {
  const { values } = parseBenchArgs(
    'node dist/bench/store-bench.js [--rows N (default 1000000)] [--ops N (Get/Put calls per run at concurrency 1; 4× that at 32; default 5000)] [--node-cpu-prof DIR] [--point-calls-in-flight N (1–64)] [--points-only (only the fsync node\'s bulk load, Get/Put runs and redis-benchmark)]',
    { options: { rows: { type: 'string', default: '1000000' }, ops: { type: 'string', default: '5000' }, 'node-cpu-prof': { type: 'string' }, 'point-calls-in-flight': { type: 'string' }, 'points-only': { type: 'boolean', default: false } } },
  );
  const inFlight = values['point-calls-in-flight'] === undefined ? undefined : Number(values['point-calls-in-flight']);
  if (inFlight !== undefined && (!Number.isSafeInteger(inFlight) || inFlight < 1 || inFlight > 64)) throw new RangeError(`--point-calls-in-flight must be 1–64, got ${values['point-calls-in-flight']}`);
  const rows = Number(values.rows);
  if (!Number.isSafeInteger(rows) || rows < 1) throw new RangeError(`--rows must be a whole number ≥ 1, got ${values.rows}`);
  const ops = Number(values.ops);
  if (!Number.isSafeInteger(ops) || ops < 1) throw new RangeError(`--ops must be a whole number ≥ 1, got ${values.ops}`);
  return { rows, ops, nodeCpuProfDir: values['node-cpu-prof'], pointCallsInFlight: inFlight, pointsOnly: values['points-only'] === true };
}

/** `--points-only`: the fsync node's Get/Put runs (after its bulk load) and redis-benchmark, with the ops table alone. */
async function measurePointsOnly(rows: number, ops: number, workDir: string, cpuProfDir: string | undefined, pointCallsInFlight: number | undefined): Promise<void> {
  // The bulk load's ratio needs a baseline; these runs do not print it.
  const noBaseline: WriteFigures = { rows, ms: Number.NaN, rowsPerSec: Number.NaN, mbPerSec: Number.NaN };
  const noop = await startNoopGrpc();
  let run: NodeRun;
  try {
    process.stderr.write('store node (fsync per batch): bulk load and ops…\n');
    run = await measureNode(rows, ops, true, 'fsync per batch', noBaseline, join(workDir, 'node-sync'), noop, cpuProfDir, pointCallsInFlight);
  } finally {
    await noop.close();
  }
  process.stderr.write('peers: redis-benchmark GET/SET…\n');
  const peers = await measurePointPeers(run, ops, workDir);
  const out = [opsTable([run], peers)];
  out.push(JSON.stringify({ bench: 'store', pointsOnly: true, rows, ops: run.ops, pointPeers: peers }, roundNumbers));
  process.stdout.write(out.join('\n') + '\n');
}

/** The i-th of `count` sorted keys, spread over the whole keyspace so every partition gets a share. */
function keyOf(i: number, count: number, into: Buffer = Buffer.allocUnsafe(KEY_BYTES)): Buffer {
  into.fill(0);
  into.writeUIntBE(Math.floor(i * (2 ** 48 / count)), 0, 6);
  into.writeUInt32BE(i, 12);
  return into;
}

function valueOf(i: number): Buffer {
  const offset = (i % VALUE_SLOTS) * VALUE_BYTES;
  return VALUE_POOL.subarray(offset, offset + VALUE_BYTES);
}

/** The benchmark rows in sorted chunks, generated lazily so the rows themselves do not inflate RSS. */
function* rowChunks(count: number, chunkRows = CHUNK_ROWS): Generator<BulkRowInput[]> {
  for (let from = 0; from < count; from += chunkRows) {
    const n = Math.min(chunkRows, count - from);
    const keySlab = Buffer.allocUnsafe(n * KEY_BYTES);
    const chunk: BulkRowInput[] = new Array(n);
    for (let j = 0; j < n; j++) {
      chunk[j] = { key: keyOf(from + j, count, keySlab.subarray(j * KEY_BYTES, (j + 1) * KEY_BYTES)), value: valueOf(from + j) };
    }
    yield chunk;
  }
}

/** Rows per packed chunk: one default BulkInsert batch's worth of bytes. */
const PACKED_CHUNK_ROWS = Math.floor(DEFAULT_BULK_BATCH_MAX_BYTES / (KEY_BYTES + VALUE_BYTES));

/** The benchmark rows as packed batches, built the way ingest and restore build them (PackedRowsBuilder). */
function* packedChunks(count: number): Generator<PackedRows> {
  const key = Buffer.allocUnsafe(KEY_BYTES);
  const builder = new PackedRowsBuilder({ rowsHint: PACKED_CHUNK_ROWS, bytesHint: PACKED_CHUNK_ROWS * (KEY_BYTES + VALUE_BYTES) });
  for (let i = 0; i < count; i++) {
    builder.add(keyOf(i, count, key), valueOf(i));
    if (builder.count === PACKED_CHUNK_ROWS) yield builder.finish();
  }
  if (builder.count > 0) yield builder.finish();
}

/** Raw classic-level chained batches of `batchRows` rows (the bench's rows, generated in the timed loop). */
async function measureBaseline(rows: number, location: string, batchRows: number, sync: boolean): Promise<BaselineFigures> {
  const db = new ClassicLevel<Buffer, Buffer>(location, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  try {
    const cpuBefore = selfCpuSeconds();
    const started = performance.now();
    for (const chunk of rowChunks(rows, batchRows)) {
      const batch = db.batch();
      for (const row of chunk) batch.put(row.key, row.value);
      await batch.write({ sync });
    }
    return { ...writeFigures(rows, performance.now() - started), batchRows, sync, cpuSeconds: selfCpuSeconds() - cpuBefore };
  } finally {
    await db.close();
  }
}

function writeFigures(rows: number, ms: number): WriteFigures {
  const seconds = ms / 1000;
  return { rows, ms, rowsPerSec: rows / seconds, mbPerSec: (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6 / seconds };
}

/** Starts a node child, bulk-loads it, measures ops against it, and reads its peak RSS before stopping it. */
async function measureNode(
  rows: number,
  opCount: number,
  sync: boolean,
  label: string,
  baseline: WriteFigures,
  dataDir: string,
  noop: NoopGrpc,
  cpuProfDir: string | undefined,
  pointCallsInFlight: number | undefined,
): Promise<NodeRun> {
  const node = await startNode(dataDir, sync, cpuProfDir);
  const client = new StoreClient({ seeds: [node.address], pointCallsInFlight });
  try {
    const bulk = await measureBulk(client, node, rows, baseline);
    const ops: OpFigures[] = [];
    // A lone Put waits for one fsync: beside its rounds, the same writes straight into a classic-level of this disk.
    const syncPeer = sync ? new ClassicLevel<Buffer, Buffer>(`${dataDir}-fsync-peer`, { keyEncoding: 'buffer', valueEncoding: 'buffer' }) : undefined;
    await syncPeer?.open();
    try {
      for (const op of ['get', 'put'] as const) {
        for (const concurrency of OP_CONCURRENCY) ops.push(await measureOps(client, node, noop, op, concurrency, concurrency === 1 ? opCount : 4 * opCount, rows, op === 'put' && concurrency === 1 ? syncPeer : undefined));
      }
    } finally {
      await syncPeer?.close();
    }
    return { label, sync, bulk, ops, peakRssMb: await node.peakRssMb(), memoryAtPeak: node.memoryAtPeak() };
  } finally {
    client.close();
    await node.stop();
  }
}

async function startNode(dataDir: string, sync: boolean, cpuProfDir: string | undefined): Promise<NodeProcess> {
  const address = `127.0.0.1:${await findFreePort()}`;
  const mapFile = `${dataDir}-map.json`;
  await writeFile(mapFile, JSON.stringify(PartitionMap.evenlySplit(1, [address], PARTITIONS).toJson()));
  const args = [...(cpuProfDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', cpuProfDir]), MAIN_JS, 'store', 'start', '--map', mapFile, '--node', address, '--data', dataDir, '--log-level', 'warn'];
  if (!sync) args.push('--no-sync');
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stderr!.on('data', (data: Buffer) => process.stderr.write(`[node] ${data.toString()}`));
  try {
    await waitForReady(child);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
  const memory = MemorySampler.start(child.pid!);
  return {
    address,
    pid: child.pid!,
    peakRssMb: () => readPeakRssMb(child.pid!),
    memoryAtPeak: () => memory.peak,
    cpuSeconds: () => readCpuSeconds(child.pid!),
    stop: async () => {
      await memory.stop();
      await stopChild(child, exited);
    },
  };
}


/** A per-row (old client) load into a fresh node with fsync per batch: figures and the node's peak RSS. */
async function measurePerRowNode(rows: number, baseline: WriteFigures, dataDir: string, cpuProfDir: string | undefined): Promise<PerRowRun> {
  const node = await startNode(dataDir, true, cpuProfDir);
  const client = new StoreClient({ seeds: [node.address] });
  try {
    return { label: 'fsync per batch', bulk: await measureBulk(client, node, rows, baseline, 'per-row') };
  } finally {
    client.close();
    await node.stop();
  }
}

/**
 * The bulk load through the client: `packed` — PackedRows batches with bulkPutAll's defaults (the
 * path of ingest and restore); `per-row` — row objects sent as one BulkRow message each, 1,000 rows
 * and 4 calls in flight, as clients before packed batches did.
 */
async function measureBulk(client: StoreClient, node: NodeProcess, rows: number, baseline: WriteFigures, form: 'packed' | 'per-row' = 'packed'): Promise<BulkFigures> {
  await client.map();
  const nodeCpuBefore = await node.cpuSeconds();
  const clientCpuBefore = selfCpuSeconds();
  const started = performance.now();
  const result =
    form === 'packed'
      ? await client.bulkPutAll(packedChunks(rows))
      : await client.bulkPutAll(rowChunks(rows), { maxInFlight: MAX_IN_FLIGHT, batchMaxRows: CHUNK_ROWS, batchMaxBytes: 4 * 1024 * 1024, perRowForm: true });
  const figures = writeFigures(result.rows, performance.now() - started);
  const clientCpuSeconds = selfCpuSeconds() - clientCpuBefore;
  const nodeCpuAfter = await node.cpuSeconds();
  const nodePeakRssMb = await node.peakRssMb();
  return {
    ...figures,
    ratioToBaseline: figures.rowsPerSec / baseline.rowsPerSec,
    calls: result.calls,
    storedRows: await storedRowCount(client),
    serverTiming: result.serverTiming,
    nodeCpuSeconds: nodeCpuAfter === undefined || nodeCpuBefore === undefined ? undefined : nodeCpuAfter - nodeCpuBefore,
    clientCpuSeconds,
    nodePeakRssMb,
  };
}

/** Rows the node reports holding: a check that the load really landed. */
async function storedRowCount(client: StoreClient): Promise<number> {
  let total = 0;
  for (const node of await client.stats()) {
    if (!node.result.ok) throw node.result.error;
    for (const p of node.result.partitions) total += p.approxCount;
  }
  return total;
}

/**
 * `ops` random gets or puts of loaded keys from `concurrency` workers, through the real
 * StoreClient (map cache, routing, coalescing), with the CPU time of node and client; in
 * OP_ROUNDS rounds, each after as many no-op grpc-js calls at the same concurrency.
 */
async function measureOps(client: StoreClient, node: NodeProcess, noop: NoopGrpc, op: 'get' | 'put', concurrency: number, ops: number, rows: number, syncPeer?: ClassicLevel<Buffer, Buffer>): Promise<OpFigures> {
  const latencies = new Float64Array(ops);
  const noopP50s: number[] = [];
  const syncLatencies = syncPeer === undefined ? undefined : new Float64Array(ops);
  let syncMs = 0;
  let next = 0;
  let misses = 0;
  let opMs = 0;
  let noopMs = 0;
  let nodeCpu: number | undefined = 0;
  let clientCpu = 0;
  const worker = async (end: number): Promise<void> => {
    while (next < end) {
      const n = next++;
      const i = randomInt(rows);
      const key = Key.fromBytes(keyOf(i, rows));
      const started = performance.now();
      if (op === 'get') {
        if ((await client.get(key)) === undefined) misses++;
      } else {
        await client.put(key, valueOf(i + 1));
      }
      latencies[n] = performance.now() - started;
    }
  };
  // The monotonic clock is the one --cpu-prof profiles are stamped with: it cuts them to this run.
  const monotonicUs = (): string => String(process.hrtime.bigint() / 1000n);
  process.stderr.write(`${op} at concurrency ${concurrency}, ${ops} ops: from ${monotonicUs()} µs (monotonic)…\n`);
  for (let round = 0; round < OP_ROUNDS; round++) {
    const end = Math.round(((round + 1) * ops) / OP_ROUNDS);
    const calls = end - next;
    const noopRound = await runCalls(noop.call, concurrency, calls);
    noopMs += (calls / noopRound.callsPerSec) * 1000;
    noopP50s.push(noopRound.p50Ms);
    if (syncPeer !== undefined) syncMs += await syncWrites(syncPeer, next, end, rows, syncLatencies!);
    const nodeCpuBefore = await node.cpuSeconds();
    const clientCpuBefore = selfCpuSeconds();
    const started = performance.now();
    await Promise.all(Array.from({ length: concurrency }, () => worker(end)));
    opMs += performance.now() - started;
    clientCpu += selfCpuSeconds() - clientCpuBefore;
    const nodeCpuAfter = await node.cpuSeconds();
    nodeCpu = nodeCpu === undefined || nodeCpuBefore === undefined || nodeCpuAfter === undefined ? undefined : nodeCpu + nodeCpuAfter - nodeCpuBefore;
  }
  process.stderr.write(`${op} at concurrency ${concurrency}: done at ${monotonicUs()} µs (monotonic)\n`);
  latencies.sort();
  noopP50s.sort((a, b) => a - b);
  const opsPerSec = ops / (opMs / 1000);
  const noopCallsPerSec = ops / (noopMs / 1000);
  let syncWrite: OpFigures['syncWrite'];
  if (syncLatencies !== undefined) {
    syncLatencies.sort();
    const writesPerSec = ops / (syncMs / 1000);
    const ceilingOpsPerSec = 1 / (1 / noopCallsPerSec + 1 / writesPerSec);
    syncWrite = { writesPerSec, p50Ms: percentile(syncLatencies, 0.5), ceilingOpsPerSec, ratioToCeiling: opsPerSec / ceilingOpsPerSec };
  }
  return {
    ...(syncWrite === undefined ? {} : { syncWrite }),
    op,
    concurrency,
    ops,
    opsPerSec,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    misses,
    noopCallsPerSec,
    noopP50Ms: noopP50s[noopP50s.length >> 1]!,
    ratioToNoop: opsPerSec / noopCallsPerSec,
    nodeCpuPerMOps: nodeCpu === undefined ? undefined : (nodeCpu / ops) * 1e6,
    clientCpuPerMOps: (clientCpu / ops) * 1e6,
  };
}

/** Writes ops `from`..`end` as one-row batches with fsync into `db`, one at a time; their latencies go to `into`; the ms they took. */
async function syncWrites(db: ClassicLevel<Buffer, Buffer>, from: number, end: number, rows: number, into: Float64Array): Promise<number> {
  const started = performance.now();
  for (let n = from; n < end; n++) {
    const i = randomInt(rows);
    const t = performance.now();
    await db.batch().put(keyOf(i, rows), valueOf(i + 1)).write({ sync: true });
    into[n] = performance.now() - t;
  }
  return performance.now() - started;
}

/** The no-op call rates of the fsync node's op runs per concurrency, and redis-benchmark GET/SET (AOF always) at both concurrencies. */
async function measurePointPeers(run: NodeRun, opCount: number, workDir: string): Promise<PointPeers> {
  const noop = OP_CONCURRENCY.map((concurrency) => {
    const rows = run.ops.filter((o) => o.concurrency === concurrency);
    const calls = rows.reduce((sum, o) => sum + o.ops, 0);
    const seconds = rows.reduce((sum, o) => sum + o.ops / o.noopCallsPerSec, 0);
    return { concurrency, calls, callsPerSec: calls / seconds };
  });
  const redisBenchmark: RedisBenchmarkFigures[] = [];
  for (const concurrency of OP_CONCURRENCY) redisBenchmark.push(...(await measureRedisBenchmark(workDir, 'always', concurrency, Math.max(10 * opCount, 10_000))));
  return { noop, redisBenchmark };
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function printReport(rows: number, baseline: BaselineFigures, syncBaseline: BaselineFigures, runs: NodeRun[], perRow: PerRowRun, peers: PointPeers, benchPeakRssMb: number): void {
  const totalMb = (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6;
  const out: string[] = [];
  out.push(`shardpipe store bench: ${int(rows)} rows × (${KEY_BYTES} B key + ${VALUE_BYTES} B value) = ${totalMb.toFixed(1)} MB, 1 node, ${PARTITIONS} partitions`);
  out.push('');
  out.push(
    table(
      ['write path', 'rows/s', 'MB/s', 'vs baseline', 'seconds', 'calls', 'rows stored'],
      [
        ['classic-level chained batch, in-process (baseline)', int(baseline.rowsPerSec), fixed(baseline.mbPerSec, 1), '1.00×', fixed(baseline.ms / 1000, 2), '-', '-'],
        [
          `classic-level, in-process, ${int(syncBaseline.batchRows)}-row batches, fsync each`,
          int(syncBaseline.rowsPerSec),
          fixed(syncBaseline.mbPerSec, 1),
          `${fixed(syncBaseline.rowsPerSec / baseline.rowsPerSec, 2)}×`,
          fixed(syncBaseline.ms / 1000, 2),
          '-',
          '-',
        ],
        ...runs.map((r) => [
          `BulkInsert via gRPC, ${r.label}`,
          int(r.bulk.rowsPerSec),
          fixed(r.bulk.mbPerSec, 1),
          `${fixed(r.bulk.ratioToBaseline, 2)}×`,
          fixed(r.bulk.ms / 1000, 2),
          int(r.bulk.calls),
          int(r.bulk.storedRows),
        ]),
        [
          `BulkInsert, per-row form (old clients), ${perRow.label}`,
          int(perRow.bulk.rowsPerSec),
          fixed(perRow.bulk.mbPerSec, 1),
          `${fixed(perRow.bulk.ratioToBaseline, 2)}×`,
          fixed(perRow.bulk.ms / 1000, 2),
          int(perRow.bulk.calls),
          int(perRow.bulk.storedRows),
        ],
      ],
    ),
  );
  out.push('');
  const perMRows = (b: BaselineFigures): string => fixed((b.cpuSeconds / b.rows) * 1e6, 2);
  out.push(`CPU s per 1M rows of the raw loads (this process, LevelDB's threads included): ${int(baseline.batchRows)}-row batches ${perMRows(baseline)}, ${int(syncBaseline.batchRows)}-row batches with fsync ${perMRows(syncBaseline)}`);
  const syncRun = runs.find((r) => r.sync);
  if (syncRun !== undefined) out.push(`BulkInsert fsync per batch ÷ raw classic-level with fsync per ${int(syncBaseline.batchRows)}-row batch: ${fixed(syncRun.bulk.rowsPerSec / syncBaseline.rowsPerSec, 2)}×`);
  out.push('');
  const mib = (mb: number | undefined): string => (mb === undefined ? 'n/a' : `${fixed(mb, 0)} MiB`);
  for (const r of [...runs, { label: `per-row form, ${perRow.label}`, bulk: perRow.bulk }]) {
    const t = r.bulk.serverTiming;
    out.push(`server time summed over BulkInsert calls (${r.label}): queue ${fixed(t.queueMs / 1000, 2)} s, build ${fixed(t.writeMs / 1000, 2)} s, write+fsync ${fixed(t.fsyncMs / 1000, 2)} s`);
    const perM = (sec: number | undefined): string => (sec === undefined ? 'n/a' : fixed((sec / r.bulk.rows) * 1e6, 2));
    out.push(`CPU s per 1M rows loaded (${r.label}): node ${perM(r.bulk.nodeCpuSeconds)}, client (this process) ${perM(r.bulk.clientCpuSeconds)}; node peak RSS after the load ${mib(r.bulk.nodePeakRssMb)}`);
  }
  out.push('');
  out.push(opsTable(runs, peers));
  out.push('');
  const nodeRss = runs.map((r) => `node (${r.label}) ${r.peakRssMb === undefined ? 'n/a' : `${fixed(r.peakRssMb, 0)} MiB`}`).join(', ');
  out.push(`peak RSS: bench process ${fixed(benchPeakRssMb, 0)} MiB, ${nodeRss}`);
  out.push(`nodes at their sampled peak, MiB: ${runs.map((r) => `${r.label} ${describeMemoryAtPeak(r.memoryAtPeak)}`).join('; ')}`);
  out.push(JSON.stringify({ bench: 'store', rows, keyBytes: KEY_BYTES, valueBytes: VALUE_BYTES, partitions: PARTITIONS, maxInFlight: MAX_IN_FLIGHT, baseline, syncBaseline, nodes: runs, perRow, pointPeers: peers, benchPeakRssMb }, roundNumbers));
  process.stdout.write(out.join('\n') + '\n');
}

/** The Get/Put table: each op run against its no-op call, then redis-benchmark. */
function opsTable(runs: NodeRun[], peers: PointPeers): string {
  return table(
      ['op', 'node', 'concurrency', 'ops', 'ops/s', 'no-op calls/s', 'vs no-op call', 'p50 ms', 'no-op p50 ms', 'p99 ms', 'misses', 'node CPU s/1M ops', 'client CPU s/1M ops'],
      [
        ...runs.flatMap((r) =>
          r.ops.map((o) => [
            o.op,
            r.label,
            String(o.concurrency),
            int(o.ops),
            int(o.opsPerSec),
            int(o.noopCallsPerSec),
            `${fixed(o.ratioToNoop, 2)}×`,
            fixed(o.p50Ms, 3),
            fixed(o.noopP50Ms, 3),
            fixed(o.p99Ms, 3),
            String(o.misses),
            o.nodeCpuPerMOps === undefined ? 'n/a' : fixed(o.nodeCpuPerMOps, 1),
            fixed(o.clientCpuPerMOps, 1),
          ]),
        ),
        ...peers.redisBenchmark.map((b) => [`redis-benchmark ${b.test} (peer${b.test === 'SET' ? ', AOF always' : ''})`, '-', String(b.concurrency), int(b.requests), int(b.opsPerSec), '-', '-', '-', '-', '-', '-', '-', '-']),
        ...runs.flatMap((r) =>
          r.ops.flatMap((o) => (o.syncWrite === undefined ? [] : [['classic-level one-row batch + fsync, in-process (peer)', r.label, String(o.concurrency), int(o.ops), int(o.syncWrite.writesPerSec), '-', '-', fixed(o.syncWrite.p50Ms, 3), '-', '-', '-', '-', '-']])),
        ),
      ],
    ) + ceilingLines(runs);
}

/** The lone Put against its ceiling: a no-op call and one fsync'd write back to back (OpFigures.syncWrite). */
function ceilingLines(runs: NodeRun[]): string {
  const lines = runs.flatMap((r) =>
    r.ops.flatMap((o) =>
      o.syncWrite === undefined
        ? []
        : [`Put at concurrency ${o.concurrency} (${r.label}) ÷ its ceiling here (a no-op call, then a one-row fsync'd write: 1 / (1/${int(o.noopCallsPerSec)} + 1/${int(o.syncWrite.writesPerSec)}) = ${int(o.syncWrite.ceilingOpsPerSec)} ops/s): ${fixed(o.syncWrite.ratioToCeiling, 2)}×; the ceiling is ${fixed(o.syncWrite.ceilingOpsPerSec / o.noopCallsPerSec, 2)}× the no-op call`],
    ),
  );
  return lines.length === 0 ? '' : `\n${lines.join('\n')}`;
}

await main();
