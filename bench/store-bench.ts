/**
 * Store write/read benchmark (a measurement, not a test).
 *
 * Measures, for N sorted rows of 16-byte keys and 100-byte values (default 1,000,000):
 *   1. a baseline in this process: classic-level chained batches of 1000 rows into a fresh LevelDB
 *      (no sync, as classic-level defaults);
 *   2. BulkInsert through gRPC into one store node run as a child process (`store start`, 4
 *      partitions) with `StoreClient.bulkPutAll(…, { maxInFlight: 4 })`, once with fsync per batch
 *      (the default) and once with `--no-sync`: rows/s, MB/s (key + value bytes, 1 MB = 10^6 B) and
 *      the ratio to the baseline;
 *   3. Get and Put ops/s with p50/p99 latency at concurrency 1 and 32 against each node;
 *   4. peak RSS of this process and of each node child; CPU seconds (user + system) of the node and of
 *      this process (the client) during each bulk load.
 * Prints a table, then one JSON line with every figure.
 *
 * Run: `npm run bench:store` (builds first), or after `npx tsc -p tsconfig.json`:
 *   node dist/bench/store-bench.js [--rows N] [--ops N (Get/Put calls per run at concurrency 1; 4× that at 32)]
 *     [--node-cpu-prof DIR (profile each node child with node --cpu-prof into DIR)]
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ClassicLevel } from 'classic-level';
import { findFreePort } from '../common/index.js';
import { Key, PartitionMap, StoreClient, type BulkRowInput, type WriteTiming } from '../store/index.js';
import { readCpuSeconds, readPeakRssMb, selfCpuSeconds, selfPeakRssMb, stopChild, waitForReady } from './bench-processes.js';
import { fixed, int, roundNumbers, table } from './bench-format.js';

const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const CHUNK_ROWS = 1000;
const PARTITIONS = 4;
const MAX_IN_FLIGHT = 4;
const OP_CONCURRENCY = [1, 32] as const;
/** `--node-cpu-prof DIR`: run each node under `node --cpu-prof`, profiles written to DIR when it stops. */
let nodeCpuProfDir: string | undefined;
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

interface BulkFigures extends WriteFigures {
  ratioToBaseline: number;
  calls: number;
  storedRows: number;
  serverTiming: WriteTiming;
  /** User + system CPU seconds of the node during the load. */
  nodeCpuSeconds: number | undefined;
  /** User + system CPU seconds of this process (the client) during the load. */
  clientCpuSeconds: number;
}

interface OpFigures {
  op: 'get' | 'put';
  concurrency: number;
  ops: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  misses: number;
}

interface NodeRun {
  label: string;
  sync: boolean;
  bulk: BulkFigures;
  ops: OpFigures[];
  peakRssMb: number | undefined;
}

interface NodeProcess {
  address: string;
  pid: number;
  peakRssMb(): Promise<number | undefined>;
  cpuSeconds(): Promise<number | undefined>;
  stop(): Promise<void>;
}

async function main(): Promise<void> {
  const { rows, ops, nodeCpuProf } = parseCommandLine();
  nodeCpuProfDir = nodeCpuProf;
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-bench-'));
  try {
    process.stderr.write(`baseline: classic-level, ${rows} rows…\n`);
    const baseline = await measureBaseline(rows, join(workDir, 'baseline'));
    const runs: NodeRun[] = [];
    for (const sync of [true, false]) {
      const label = sync ? 'fsync per batch' : '--no-sync';
      process.stderr.write(`store node (${label}): bulk load and ops…\n`);
      runs.push(await measureNode(rows, ops, sync, label, baseline, join(workDir, sync ? 'node-sync' : 'node-nosync')));
    }
    const benchPeakRssMb = (await selfPeakRssMb()) ?? Number.NaN;
    printReport(rows, baseline, runs, benchPeakRssMb);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function parseCommandLine(): { rows: number; ops: number; nodeCpuProf: string | undefined } {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, ops: { type: 'string', default: '5000' }, 'node-cpu-prof': { type: 'string' } } });
  const rows = Number(values.rows);
  if (!Number.isSafeInteger(rows) || rows < 1) throw new RangeError(`--rows must be a whole number ≥ 1, got ${values.rows}`);
  const ops = Number(values.ops);
  if (!Number.isSafeInteger(ops) || ops < 1) throw new RangeError(`--ops must be a whole number ≥ 1, got ${values.ops}`);
  return { rows, ops, nodeCpuProf: values['node-cpu-prof'] };
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
function* rowChunks(count: number): Generator<BulkRowInput[]> {
  for (let from = 0; from < count; from += CHUNK_ROWS) {
    const n = Math.min(CHUNK_ROWS, count - from);
    const keySlab = Buffer.allocUnsafe(n * KEY_BYTES);
    const chunk: BulkRowInput[] = new Array(n);
    for (let j = 0; j < n; j++) {
      chunk[j] = { key: keyOf(from + j, count, keySlab.subarray(j * KEY_BYTES, (j + 1) * KEY_BYTES)), value: valueOf(from + j) };
    }
    yield chunk;
  }
}

async function measureBaseline(rows: number, location: string): Promise<WriteFigures> {
  const db = new ClassicLevel<Buffer, Buffer>(location, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  try {
    const started = performance.now();
    for (const chunk of rowChunks(rows)) {
      const batch = db.batch();
      for (const row of chunk) batch.put(row.key, row.value);
      await batch.write();
    }
    return writeFigures(rows, performance.now() - started);
  } finally {
    await db.close();
  }
}

function writeFigures(rows: number, ms: number): WriteFigures {
  const seconds = ms / 1000;
  return { rows, ms, rowsPerSec: rows / seconds, mbPerSec: (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6 / seconds };
}

/** Starts a node child, bulk-loads it, measures ops against it, and reads its peak RSS before stopping it. */
async function measureNode(rows: number, opCount: number, sync: boolean, label: string, baseline: WriteFigures, dataDir: string): Promise<NodeRun> {
  const node = await startNode(dataDir, sync);
  const client = new StoreClient({ seeds: [node.address] });
  try {
    const bulk = await measureBulk(client, node, rows, baseline);
    const ops: OpFigures[] = [];
    for (const op of ['get', 'put'] as const) {
      for (const concurrency of OP_CONCURRENCY) ops.push(await measureOps(client, op, concurrency, concurrency === 1 ? opCount : 4 * opCount, rows));
    }
    return { label, sync, bulk, ops, peakRssMb: await node.peakRssMb() };
  } finally {
    client.close();
    await node.stop();
  }
}

async function startNode(dataDir: string, sync: boolean): Promise<NodeProcess> {
  const address = `127.0.0.1:${await findFreePort()}`;
  const mapFile = `${dataDir}-map.json`;
  await writeFile(mapFile, JSON.stringify(PartitionMap.evenlySplit(1, [address], PARTITIONS).toJson()));
  const profile = nodeCpuProfDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', nodeCpuProfDir];
  const args = [...profile, MAIN_JS, 'store', 'start', '--map', mapFile, '--node', address, '--data', dataDir, '--log-level', 'warn'];
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
  return {
    address,
    pid: child.pid!,
    peakRssMb: () => readPeakRssMb(child.pid!),
    cpuSeconds: () => readCpuSeconds(child.pid!),
    stop: () => stopChild(child, exited),
  };
}


async function measureBulk(client: StoreClient, node: NodeProcess, rows: number, baseline: WriteFigures): Promise<BulkFigures> {
  await client.map();
  const nodeCpuBefore = await node.cpuSeconds();
  const clientCpuBefore = selfCpuSeconds();
  const started = performance.now();
  const result = await client.bulkPutAll(rowChunks(rows), { maxInFlight: MAX_IN_FLIGHT });
  const figures = writeFigures(result.rows, performance.now() - started);
  const clientCpuSeconds = selfCpuSeconds() - clientCpuBefore;
  const nodeCpuAfter = await node.cpuSeconds();
  return {
    ...figures,
    ratioToBaseline: figures.rowsPerSec / baseline.rowsPerSec,
    calls: result.calls,
    storedRows: await storedRowCount(client),
    serverTiming: result.serverTiming,
    nodeCpuSeconds: nodeCpuAfter === undefined || nodeCpuBefore === undefined ? undefined : nodeCpuAfter - nodeCpuBefore,
    clientCpuSeconds,
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

/** `ops` random gets or puts of loaded keys from `concurrency` workers sharing one counter. */
async function measureOps(client: StoreClient, op: 'get' | 'put', concurrency: number, ops: number, rows: number): Promise<OpFigures> {
  const latencies = new Float64Array(ops);
  let next = 0;
  let misses = 0;
  const worker = async (): Promise<void> => {
    while (next < ops) {
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
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ms = performance.now() - started;
  latencies.sort();
  return { op, concurrency, ops, opsPerSec: ops / (ms / 1000), p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99), misses };
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function printReport(rows: number, baseline: WriteFigures, runs: NodeRun[], benchPeakRssMb: number): void {
  const totalMb = (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6;
  const out: string[] = [];
  out.push(`shardpipe store bench: ${int(rows)} rows × (${KEY_BYTES} B key + ${VALUE_BYTES} B value) = ${totalMb.toFixed(1)} MB, 1 node, ${PARTITIONS} partitions`);
  out.push('');
  out.push(
    table(
      ['write path', 'rows/s', 'MB/s', 'vs baseline', 'seconds', 'calls', 'rows stored'],
      [
        ['classic-level chained batch, in-process (baseline)', int(baseline.rowsPerSec), fixed(baseline.mbPerSec, 1), '1.00×', fixed(baseline.ms / 1000, 2), '-', '-'],
        ...runs.map((r) => [
          `BulkInsert via gRPC, ${r.label}`,
          int(r.bulk.rowsPerSec),
          fixed(r.bulk.mbPerSec, 1),
          `${fixed(r.bulk.ratioToBaseline, 2)}×`,
          fixed(r.bulk.ms / 1000, 2),
          int(r.bulk.calls),
          int(r.bulk.storedRows),
        ]),
      ],
    ),
  );
  out.push('');
  for (const r of runs) {
    const t = r.bulk.serverTiming;
    out.push(`server time summed over BulkInsert calls (${r.label}): queue ${fixed(t.queueMs / 1000, 2)} s, build ${fixed(t.writeMs / 1000, 2)} s, write+fsync ${fixed(t.fsyncMs / 1000, 2)} s`);
    const perM = (sec: number | undefined): string => (sec === undefined ? 'n/a' : fixed((sec / r.bulk.rows) * 1e6, 2));
    out.push(`CPU s per 1M rows loaded (${r.label}): node ${perM(r.bulk.nodeCpuSeconds)}, client (this process) ${perM(r.bulk.clientCpuSeconds)}`);
  }
  out.push('');
  out.push(
    table(
      ['op', 'node', 'concurrency', 'ops', 'ops/s', 'p50 ms', 'p99 ms', 'misses'],
      runs.flatMap((r) => r.ops.map((o) => [o.op, r.label, String(o.concurrency), int(o.ops), int(o.opsPerSec), fixed(o.p50Ms, 3), fixed(o.p99Ms, 3), String(o.misses)])),
    ),
  );
  out.push('');
  const nodeRss = runs.map((r) => `node (${r.label}) ${r.peakRssMb === undefined ? 'n/a' : `${fixed(r.peakRssMb, 0)} MiB`}`).join(', ');
  out.push(`peak RSS: bench process ${fixed(benchPeakRssMb, 0)} MiB, ${nodeRss}`);
  out.push(JSON.stringify({ bench: 'store', rows, keyBytes: KEY_BYTES, valueBytes: VALUE_BYTES, partitions: PARTITIONS, maxInFlight: MAX_IN_FLIGHT, baseline, nodes: runs, benchPeakRssMb }, roundNumbers));
  process.stdout.write(out.join('\n') + '\n');
}


await main();
