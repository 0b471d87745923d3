/**
 * Ingest benchmark (a measurement, not a test).
 *
 * Generates a sorted Spark-like drop of N rows (default 1,000,000) in a temp folder: 8 snappy
 * Parquet part files written by parquet-wasm, `.crc` side files and `_SUCCESS`; column `id` holds
 * 16-byte keys (fixed-width strings `k000000000000042`, which sort as they count), column `payload`
 * 100-byte values (incompressible base64 text). Then measures:
 *   1. end to end: `shardpipe ingest DROP --key-column id --value-column payload --json` as a child
 *      process (local worker in-process, default concurrency) against a private redis-server
 *      (PrivateRedis) and a local cluster of 3 store node children (`store start`, fsync per batch as
 *      they default) whose map is cut by `cluster init --split-keys` into 6 partitions holding a
 *      sixth of the keys each: wall time, rows/s, MB/s (key + value bytes, 1 MB = 10^6 B), the peak
 *      RSS (VmHWM) of the ingest child, and the rows each partition then holds;
 *   2. the in-process limit, after the cluster is stopped: for each file in turn, readRecordBatches →
 *      createRowMapper().mapBatch → one classic-level chained batch per mapped batch (no sync, as
 *      classic-level defaults) into one fresh LevelDB; and the ratio end to end / limit;
 *   3. the reader alone: readRecordBatches + mapBatch, nothing written.
 * Both in-process figures follow an unmeasured read of the first file (decoder thread, wasm, JIT
 * warm); the ingest child is measured cold, as a user runs it.
 * Prints a table, then one JSON line with every figure.
 *
 * Run: `npm run bench:ingest` (builds first), or after `npx tsc -p tsconfig.json`:
 *   node dist/bench/ingest-bench.js [--rows N]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Table, Utf8, makeData, makeVector, tableToIPC } from 'apache-arrow';
import { ClassicLevel } from 'classic-level';
import * as parquet from 'parquet-wasm';
import { findFreePort } from '../common/index.js';
import { createRowMapper, readRecordBatches, scanDrop, type DropFile } from '../ingest/index.js';
import { PrivateRedis } from '../jobs/index.js';
import { PartitionMap, StoreClient, displayBytes } from '../store/index.js';
import { readPeakRssMb, stopChild, waitForReady } from './bench-processes.js';
import { fixed, int, roundNumbers, table } from './bench-format.js';

const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const FILES = 8;
/** Rows per Parquet row group: two row groups per part file at the default size. */
const ROW_GROUP_ROWS = 62_500;
const NODES = 3;
const PARTITIONS = 6;
const KEY_COLUMN = 'id';
const VALUE_COLUMN = 'payload';
const RSS_POLL_MS = 20;
const MAIN_JS = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');

// Values are 100-character windows of one random base64 text, so Parquet's snappy and LevelDB's
// block compression see (nearly) incompressible data without generating 100 MB of random bytes.
const VALUE_POOL = Buffer.from(randomBytes(768 * 1024).toString('base64'), 'latin1');
const VALUE_SLOTS = Math.floor(VALUE_POOL.length / VALUE_BYTES);

interface WriteFigures {
  rows: number;
  ms: number;
  rowsPerSec: number;
  mbPerSec: number;
}

interface Drop {
  dir: string;
  files: number;
  bytesOnDisk: number;
}

interface PartitionRows {
  id: number;
  node: string;
  range: string;
  rows: number;
}

interface EndToEnd extends WriteFigures {
  ratioToLimit: number;
  /** The report the ingest printed (--json). */
  report: { rowsIngested: number; rowsRejected: number; filesOk: number; filesFailed: number; durationMs: number; rowsPerSecond: number };
  exitCode: number | null;
  peakRssMb: number | undefined;
  nodePeakRssMb: Array<number | undefined>;
  partitions: PartitionRows[];
  storedRows: number;
}

interface InProcess extends WriteFigures {
  ratioToLimit: number;
  batches: number;
}

interface NodeProcess {
  address: string;
  pid: number;
  peakRssMb(): Promise<number | undefined>;
  stop(): Promise<void>;
}

async function main(): Promise<void> {
  const rows = parseRowCount();
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-ingest-bench-'));
  try {
    process.stderr.write(`generating the drop: ${rows} rows in ${Math.min(FILES, rows)} snappy part files…\n`);
    const drop = await writeDrop(join(workDir, 'drop'), rows);
    process.stderr.write('end to end: shardpipe ingest into 3 store nodes…\n');
    const endToEnd = await measureEndToEnd(rows, drop, workDir);
    const files = (await scanDrop(drop.dir)).files;
    // Unmeasured: the first read of a process pays for the decoder thread, compiling parquet-wasm
    // and JIT warm-up, which would otherwise all land on whichever measurement runs first.
    process.stderr.write('in-process: warm-up (first file, read + map)…\n');
    await warmUp(files[0]!);
    process.stderr.write('in-process: reader alone…\n');
    const reader = await measureInProcess(rows, files, undefined);
    process.stderr.write('in-process: reader + classic-level (the limit)…\n');
    const limit = await measureInProcess(rows, files, join(workDir, 'limit-db'));
    endToEnd.ratioToLimit = endToEnd.rowsPerSec / limit.rowsPerSec;
    reader.ratioToLimit = reader.rowsPerSec / limit.rowsPerSec;
    limit.ratioToLimit = 1;
    const benchPeakRssMb = process.resourceUsage().maxRSS / 1024;
    printReport(rows, drop, endToEnd, limit, reader, benchPeakRssMb);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function parseRowCount(): number {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' } } });
  const rows = Number(values.rows);
  if (!Number.isSafeInteger(rows) || rows < 1) throw new RangeError(`--rows must be a whole number ≥ 1, got ${values.rows}`);
  return rows;
}

/** The i-th key: `k` and i in 15 digits, 16 ASCII bytes, so string order is row order. */
function keyText(i: number): string {
  return `k${String(i).padStart(KEY_BYTES - 1, '0')}`;
}

/** Keys cutting the rows into PARTITIONS equal ranges (fewer for tiny runs: no key twice). */
function splitKeys(rows: number): string[] {
  const keys: string[] = [];
  for (let p = 1; p < PARTITIONS; p++) {
    const key = keyText(Math.floor((p * rows) / PARTITIONS));
    if (keys.at(-1) !== key) keys.push(key);
  }
  return keys;
}

/** Sorted part files the way Spark writes them (keys ascending across files), `.crc` files, `_SUCCESS`. */
async function writeDrop(dir: string, rows: number): Promise<Drop> {
  await mkdir(dir, { recursive: true });
  const files = Math.min(FILES, rows);
  let bytesOnDisk = 0;
  for (let f = 0; f < files; f++) {
    const from = Math.floor((f * rows) / files);
    const to = Math.floor(((f + 1) * rows) / files);
    const name = `part-${String(f).padStart(5, '0')}-5b2e9c1d-0000-4000-8000-000000000000-c000.snappy.parquet`;
    const bytes = partFile(from, to);
    await writeFile(join(dir, name), bytes);
    await writeFile(join(dir, `.${name}.crc`), 'crc');
    bytesOnDisk += bytes.byteLength;
  }
  await writeFile(join(dir, '_SUCCESS'), '');
  return { dir, files, bytesOnDisk };
}

/** Parquet bytes (snappy, parquet-wasm) of rows [from, to): plain Utf8 columns, as Spark's strings read back. */
function partFile(from: number, to: number): Uint8Array {
  const n = to - from;
  const ids = Buffer.allocUnsafe(n * KEY_BYTES);
  const payloads = Buffer.allocUnsafe(n * VALUE_BYTES);
  const idOffsets = new Int32Array(n + 1);
  const payloadOffsets = new Int32Array(n + 1);
  for (let j = 0; j < n; j++) {
    const i = from + j;
    ids.write(keyText(i), j * KEY_BYTES, 'latin1');
    const slot = (i % VALUE_SLOTS) * VALUE_BYTES;
    VALUE_POOL.copy(payloads, j * VALUE_BYTES, slot, slot + VALUE_BYTES);
    idOffsets[j + 1] = (j + 1) * KEY_BYTES;
    payloadOffsets[j + 1] = (j + 1) * VALUE_BYTES;
  }
  const utf8 = (data: Buffer, valueOffsets: Int32Array) => makeVector(makeData({ type: new Utf8(), length: n, nullCount: 0, valueOffsets, data }));
  const table = new Table({ [KEY_COLUMN]: utf8(ids, idOffsets), [VALUE_COLUMN]: utf8(payloads, payloadOffsets) });
  const wasmTable = parquet.Table.fromIPCStream(tableToIPC(table, 'stream'));
  const props = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.SNAPPY).setMaxRowGroupSize(ROW_GROUP_ROWS).build();
  return parquet.writeParquet(wasmTable, props);
}

/** Redis, a 3-node cluster cut at the split keys, then the ingest CLI as a child; everything stopped before returning. */
async function measureEndToEnd(rows: number, drop: Drop, workDir: string): Promise<EndToEnd> {
  const clusterDir = join(workDir, 'cluster');
  await mkdir(clusterDir, { recursive: true });
  const redis = await PrivateRedis.start({ dataDir: join(workDir, 'redis') });
  const nodes: NodeProcess[] = [];
  try {
    const addresses = await Promise.all(Array.from({ length: NODES }, async () => `127.0.0.1:${await findFreePort()}`));
    const splitFile = join(clusterDir, 'split-keys.txt');
    const mapFile = join(clusterDir, 'map.json');
    await writeFile(splitFile, splitKeys(rows).join('\n') + '\n');
    const init = await runToEnd([MAIN_JS, 'cluster', 'init', '--nodes', addresses.join(','), '--split-keys', splitFile, '--out', mapFile]);
    if (init.code !== 0) throw new Error(`cluster init exited with code ${init.code}: ${init.stderr}`);
    const map = PartitionMap.fromJson(JSON.parse(await readFile(mapFile, 'utf8')));
    const starts = await Promise.allSettled(addresses.map((address, i) => startNode(address, mapFile, join(clusterDir, `node-${i}`))));
    for (const s of starts) if (s.status === 'fulfilled') nodes.push(s.value);
    const failed = starts.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;

    const args = [MAIN_JS, 'ingest', drop.dir, '--key-column', KEY_COLUMN, '--value-column', VALUE_COLUMN, '--seeds', addresses.join(','), '--redis', redis.url, '--data-dir', join(workDir, 'ingest-data'), '--json', '--log-level', 'warn'];
    const started = performance.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const [result, peakRssMb] = await Promise.all([collect(child), pollPeakRssMb(child)]);
    const ms = performance.now() - started;
    if (result.stderr.trim()) process.stderr.write(`[ingest] ${result.stderr.trim().replaceAll('\n', '\n[ingest] ')}\n`);
    const report = parseReport(result.stdout);
    if (report === undefined) throw new Error(`ingest (exit code ${result.code}) printed no JSON report; stdout: ${result.stdout.trim() || '(empty)'}`);
    if (report.rowsIngested !== rows) {
      throw new Error(`ingest reports rowsIngested ${report.rowsIngested}, expected ${rows} (exit code ${result.code}, rejected ${report.rowsRejected}, files failed ${report.filesFailed}): ${JSON.stringify(report)}`);
    }
    if (result.code !== 0) throw new Error(`ingest exited with code ${result.code} although it reports all ${rows} rows ingested: ${JSON.stringify(report)}`);

    const partitions = await partitionRows(addresses, map);
    const storedRows = partitions.reduce((s, p) => s + p.rows, 0);
    if (storedRows !== rows) process.stderr.write(`WARNING: the nodes report ${storedRows} rows stored, expected ${rows}\n`);
    const nodePeakRssMb = await Promise.all(nodes.map((n) => n.peakRssMb()));
    return { ...writeFigures(rows, ms), ratioToLimit: 0, report, exitCode: result.code, peakRssMb, nodePeakRssMb, partitions, storedRows };
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
  }
}

interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function collect(child: ChildProcess): Promise<ChildResult> {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function runToEnd(args: string[]): Promise<ChildResult> {
  return collect(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/**
 * Largest VmHWM seen while the child runs. VmHWM only grows, so the last reading is the peak up to
 * RSS_POLL_MS before the exit.
 */
async function pollPeakRssMb(child: ChildProcess): Promise<number | undefined> {
  let peak: number | undefined;
  if (child.pid === undefined) return undefined;
  while (child.exitCode === null && child.signalCode === null) {
    const mb = await readPeakRssMb(child.pid!);
    if (mb !== undefined) peak = Math.max(peak ?? 0, mb);
    await sleep(RSS_POLL_MS);
  }
  return peak;
}

function parseReport(stdout: string): EndToEnd['report'] | undefined {
  for (const line of stdout.split('\n').reverse()) {
    try {
      const parsed = JSON.parse(line) as Partial<EndToEnd['report']>;
      if (typeof parsed.rowsIngested === 'number') return parsed as EndToEnd['report'];
    } catch {
      // not the report line
    }
  }
  return undefined;
}

/** Rows each partition holds, as the nodes report them: the check that the load landed, and where. */
async function partitionRows(seeds: string[], map: PartitionMap): Promise<PartitionRows[]> {
  const client = new StoreClient({ seeds });
  try {
    const out: PartitionRows[] = [];
    for (const node of await client.stats()) {
      if (!node.result.ok) throw node.result.error;
      for (const p of node.result.partitions) {
        const part = map.byId(p.id);
        out.push({ id: p.id, node: part?.node ?? '?', range: part ? `[${displayBytes(part.start) || '−∞'}, ${displayBytes(part.end) || '+∞'})` : '?', rows: p.approxCount });
      }
    }
    return out.sort((a, b) => a.id - b.id);
  } finally {
    client.close();
  }
}

async function startNode(address: string, mapFile: string, dataDir: string): Promise<NodeProcess> {
  const args = [MAIN_JS, 'store', 'start', '--map', mapFile, '--node', address, '--data', dataDir, '--log-level', 'warn'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stderr!.on('data', (data: Buffer) => process.stderr.write(`[node ${address}] ${data.toString()}`));
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
    stop: () => stopChild(child, exited),
  };
}


async function warmUp(file: DropFile): Promise<void> {
  const mapper = createRowMapper({ keyColumn: KEY_COLUMN, valueColumn: VALUE_COLUMN });
  for await (const { rowGroup, rowOffset, batch } of readRecordBatches(file)) mapper.mapBatch(batch, { file: file.relativePath, rowGroup, rowOffset });
}

/**
 * The files one after the other: read, map, and — with a location — one classic-level chained batch
 * per mapped batch into a fresh LevelDB there.
 */
async function measureInProcess(rows: number, files: DropFile[], location: string | undefined): Promise<InProcess> {
  const db = location === undefined ? undefined : new ClassicLevel<Buffer, Buffer>(location, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db?.open();
  try {
    const mapper = createRowMapper({ keyColumn: KEY_COLUMN, valueColumn: VALUE_COLUMN });
    let mapped = 0;
    let bytes = 0;
    let batches = 0;
    const started = performance.now();
    for (const file of files) {
      for await (const { rowGroup, rowOffset, batch } of readRecordBatches(file)) {
        const result = mapper.mapBatch(batch, { file: file.relativePath, rowGroup, rowOffset });
        if (result.rejects.length > 0) throw new Error(`${file.relativePath}: ${result.rejects.length} rows rejected, e.g. ${result.rejects[0]!.reason}`);
        batches++;
        mapped += result.rows.length;
        if (db === undefined) {
          for (const row of result.rows) bytes += row.key.length + row.value.length;
          continue;
        }
        const chained = db.batch();
        for (const row of result.rows) chained.put(row.key, row.value);
        await chained.write();
      }
    }
    const ms = performance.now() - started;
    if (mapped !== rows) throw new Error(`in-process ${db ? 'limit' : 'reader'} mapped ${mapped} rows, expected ${rows}`);
    if (db === undefined && bytes !== rows * (KEY_BYTES + VALUE_BYTES)) throw new Error(`reader mapped ${bytes} key+value bytes, expected ${rows * (KEY_BYTES + VALUE_BYTES)}`);
    return { ...writeFigures(rows, ms), ratioToLimit: 0, batches };
  } finally {
    await db?.close();
  }
}

function writeFigures(rows: number, ms: number): WriteFigures {
  const seconds = ms / 1000;
  return { rows, ms, rowsPerSec: rows / seconds, mbPerSec: (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6 / seconds };
}

function printReport(rows: number, drop: Drop, e2e: EndToEnd, limit: InProcess, reader: InProcess, benchPeakRssMb: number): void {
  const totalMb = (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6;
  const rss = (mb: number | undefined): string => (mb === undefined ? 'n/a' : fixed(mb, 0));
  const out: string[] = [];
  out.push(
    `shardpipe ingest bench: ${int(rows)} rows × (${KEY_BYTES} B key + ${VALUE_BYTES} B value) = ${totalMb.toFixed(1)} MB, ` +
      `${drop.files} snappy part files (${fixed(drop.bytesOnDisk / 1e6, 1)} MB on disk, ≤ ${int(ROW_GROUP_ROWS)} rows per row group), ${NODES} nodes, ${e2e.partitions.length} partitions`,
  );
  out.push('');
  out.push(
    table(
      ['path', 'rows/s', 'MB/s', 'vs limit', 'seconds', 'peak RSS MiB'],
      [
        ['shardpipe ingest, child process, wall time', int(e2e.rowsPerSec), fixed(e2e.mbPerSec, 1), `${fixed(e2e.ratioToLimit, 2)}×`, fixed(e2e.ms / 1000, 2), rss(e2e.peakRssMb)],
        ['in-process: read + map + classic-level batch (limit)', int(limit.rowsPerSec), fixed(limit.mbPerSec, 1), '1.00×', fixed(limit.ms / 1000, 2), '-'],
        ['in-process: read + map alone', int(reader.rowsPerSec), fixed(reader.mbPerSec, 1), `${fixed(reader.ratioToLimit, 2)}×`, fixed(reader.ms / 1000, 2), '-'],
      ],
    ),
  );
  out.push('');
  const r = e2e.report;
  out.push(
    `ingest report: ${int(r.rowsIngested)} rows ingested, ${int(r.rowsRejected)} rejected, ${r.filesOk} files ok, ${r.filesFailed} failed, ` +
      `${fixed(r.durationMs / 1000, 2)} s from submit to report (${int(r.rowsPerSecond)} rows/s), exit code ${e2e.exitCode}`,
  );
  out.push('');
  out.push(table(['partition', 'node', 'range', 'rows stored'], e2e.partitions.map((p) => [String(p.id), p.node, p.range, int(p.rows)])));
  out.push('');
  const nodeRss = e2e.nodePeakRssMb.map((mb, i) => `node ${i} ${rss(mb)} MiB`).join(', ');
  out.push(`peak RSS: ingest child ${rss(e2e.peakRssMb)} MiB, ${nodeRss}, bench process ${fixed(benchPeakRssMb, 0)} MiB`);
  out.push(
    JSON.stringify(
      { bench: 'ingest', rows, keyBytes: KEY_BYTES, valueBytes: VALUE_BYTES, files: drop.files, rowGroupRows: ROW_GROUP_ROWS, dropBytes: drop.bytesOnDisk, nodes: NODES, endToEnd: e2e, limit, reader, benchPeakRssMb },
      roundNumbers,
    ),
  );
  process.stdout.write(out.join('\n') + '\n');
}


await main();
