/**
 * Backup benchmark (a measurement, not a test).
 *
 * Loads N rows (default 1,000,000; 16-byte keys spread over the keyspace, 100-byte incompressible
 * values) into a local cluster of 3 store node children (`store start`) with 6 partitions
 * (`cluster init --partitions 6`), through the thick client (not measured). Then measures:
 *   1. end to end: `shardpipe backup run --target file://… --shard-rows 125000 --json` as a child
 *      process (local worker in-process, default concurrency 2) against a private redis-server:
 *      plan, snapshots, one shard job per partition (6) scanning its snapshot over gRPC into a zstd Parquet file,
 *      manifest. Wall time, rows/s, MB/s (key + value bytes, 1 MB = 10^6 B), file MB/s, the peak RSS
 *      (VmHWM) of the backup child;
 *   2. the in-process limit, after the cluster is stopped: the same work with the same parallelism —
 *      each partition's LevelDB opened directly (PartitionStore, classic-level `nextv` scan) → the
 *      same Parquet shard stream (zstd, checksum) → a local file, by 2 worker threads (the backup's
 *      default --concurrency 2) taking the partitions in turn; and the ratio end to end / limit.
 *      (Until issue 11 it ran the partitions one after the other in one thread: a serial figure the
 *      end to end run, whose nodes scan while the child encodes, beat by 1.55× — no limit.)
 *   3. the scan alone (PartitionStore scan, nothing written), on the same 2 lanes.
 * CPU seconds per 1M rows of each process (backup child, each node; the bench process for the
 * in-process runs) and peak RSS of each.
 * Prints a table, then one JSON line with every figure.
 *
 * Run: `npm run bench:backup` (builds first), or after `npx tsc -p tsconfig.json`:
 *   node dist/bench/backup-bench.js [--rows N] [--cpu-prof DIR]
 * `--cpu-prof DIR` has the backup child and the store nodes write V8 CPU profiles into DIR.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { PartitionMap, StoreClient, type BulkRowInput } from '../store/index.js';
import type { LimitDone, LimitTask } from './backup-limit-worker.js';
import { MAIN_JS, collect, sampleRss, startBenchCluster, type NodeProcess } from './bench-cluster.js';
import { fixed, int, roundNumbers, table } from './bench-format.js';
import { reapedChildrenCpuSeconds, selfCpuSeconds, selfPeakRssMb } from './bench-processes.js';
import { parseBenchArgs } from './bench-args.js';

const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const NODES = 3;
const PARTITIONS = 6;
const SHARD_ROWS = 125_000;
const LOAD_BATCH = 5000;
/** Shard jobs at once in the end to end run (`backup run`'s default --concurrency), and so the limit's lanes. */
const LANES = 2;

const VALUE_POOL = Buffer.from(randomBytes(768 * 1024).toString('base64'), 'latin1');
const VALUE_SLOTS = Math.floor(VALUE_POOL.length / VALUE_BYTES);

interface Figures {
  rows: number;
  ms: number;
  rowsPerSec: number;
  mbPerSec: number;
  ratioToLimit: number;
}

interface EndToEnd extends Figures {
  report: { backupId: string; rows: number; bytes: number; shards: number; durationMs: number; rowsPerSecond: number };
  fileMbPerSec: number;
  peakRssMb: number | undefined;
  nodePeakRssMb: Array<number | undefined>;
  /** User + system CPU seconds of the child. */
  cpuSeconds: number;
  /** User + system CPU seconds of each node during the run. */
  nodeCpuSeconds: Array<number | undefined>;
}

async function main(): Promise<void> {
  const { values } = parseBenchArgs('node dist/bench/backup-bench.js [--rows N (default 1000000)] [--cpu-prof DIR]', { options: { rows: { type: 'string', default: '1000000' }, 'cpu-prof': { type: 'string' } } });
  const profile = values['cpu-prof'] === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof']}`];
  const rows = Number(values.rows);
  if (!Number.isSafeInteger(rows) || rows < 1) throw new RangeError(`--rows must be a whole number ≥ 1, got ${values.rows}`);
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-backup-bench-'));
  try {
    const cluster = await startBenchCluster(workDir, NODES, (nodes) => PartitionMap.evenlySplit(1, nodes, PARTITIONS), { nodeArgs: profile });
    const { nodes, map } = cluster;
    let e2e: EndToEnd;
    try {
      process.stderr.write(`loading ${rows} rows into ${NODES} nodes / ${PARTITIONS} partitions (not measured)…\n`);
      await load(cluster.addresses, rows);
      process.stderr.write('end to end: shardpipe backup run…\n');
      e2e = await measureEndToEnd(rows, nodes, cluster.redisUrl, join(workDir, 'backups'), profile);
    } finally {
      await cluster.stop();
    }
    const partitions = map.partitions.map((p) => join(nodes.find((n) => n.address === p.node)!.dataDir, `partition-${p.id}`));
    process.stderr.write('in-process: scan alone (warm-up pass first)…\n');
    await measureInProcess(rows, partitions.slice(0, 1), undefined, 1, true);
    const scan = await measureInProcess(rows, partitions, undefined, LANES);
    process.stderr.write(`in-process: classic-level scan → Parquet file on ${LANES} worker threads (the limit)…\n`);
    const limit = await measureInProcess(rows, partitions, join(workDir, 'limit'), LANES);
    e2e.ratioToLimit = e2e.rowsPerSec / limit.rowsPerSec;
    scan.ratioToLimit = scan.rowsPerSec / limit.rowsPerSec;
    limit.ratioToLimit = 1;
    printReport(rows, e2e, limit, scan, (await selfPeakRssMb()) ?? Number.NaN);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/** Sorted rows, keys spread evenly over the keyspace (the first 6 bytes count up in even steps). */
async function load(seeds: string[], rows: number): Promise<void> {
  const client = new StoreClient({ seeds });
  try {
    const step = 2 ** 48 / rows;
    function* batches(): Generator<BulkRowInput[]> {
      for (let from = 0; from < rows; from += LOAD_BATCH) {
        const batch: BulkRowInput[] = [];
        for (let i = from; i < Math.min(rows, from + LOAD_BATCH); i++) {
          const key = Buffer.alloc(KEY_BYTES);
          key.writeUIntBE(Math.floor(i * step), 0, 6);
          key.writeUInt32BE(i, 12);
          const slot = (i % VALUE_SLOTS) * VALUE_BYTES;
          batch.push({ key, value: VALUE_POOL.subarray(slot, slot + VALUE_BYTES) });
        }
        yield batch;
      }
    }
    const result = await client.bulkPutAll(batches());
    if (result.rows !== rows) throw new Error(`loaded ${result.rows} rows, expected ${rows}`);
  } finally {
    client.close();
  }
}

async function measureEndToEnd(rows: number, nodes: NodeProcess[], redisUrl: string, folder: string, nodeArgs: string[]): Promise<EndToEnd> {
  const args = [...nodeArgs, MAIN_JS, 'backup', 'run', '--target', pathToFileURL(folder).href, '--shard-rows', String(SHARD_ROWS), '--seeds', nodes.map((n) => n.address).join(','), '--redis', redisUrl, '--json', '--log-level', 'warn'];
  const nodeCpuBefore = await Promise.all(nodes.map((n) => n.cpuSeconds()));
  const cpuBefore = await reapedChildrenCpuSeconds();
  const started = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const [result, { peakRssMb }] = await Promise.all([collect(child), sampleRss(child)]);
  const ms = performance.now() - started;
  const cpuSeconds = (await reapedChildrenCpuSeconds()) - cpuBefore;
  const nodeCpuSeconds = (await Promise.all(nodes.map((n) => n.cpuSeconds()))).map((after, i) => (after === undefined || nodeCpuBefore[i] === undefined ? undefined : after - nodeCpuBefore[i]!));
  if (result.stderr.trim()) process.stderr.write(`[backup] ${result.stderr.trim().replaceAll('\n', '\n[backup] ')}\n`);
  if (result.code !== 0) throw new Error(`backup run exited with code ${result.code}: ${result.stdout}`);
  const report = JSON.parse(result.stdout.trim().split('\n').at(-1)!) as EndToEnd['report'];
  if (report.rows !== rows) throw new Error(`backup reports ${report.rows} rows, expected ${rows}`);
  let fileBytes = 0;
  for (const f of await readdir(join(folder, report.backupId))) fileBytes += (await stat(join(folder, report.backupId, f))).size;
  const nodePeakRssMb = await Promise.all(nodes.map((n) => n.peakRssMb()));
  return { ...figures(rows, ms), fileMbPerSec: fileBytes / 1e6 / (ms / 1000), report, peakRssMb, nodePeakRssMb, cpuSeconds, nodeCpuSeconds };
}

/**
 * Each partition's LevelDB scanned and — with an output folder — written through the Parquet shard
 * stream into a file, by `lanes` worker threads taking the partitions in turn: the work of the end
 * to end run's shard jobs (scan, checksum, Parquet) with its parallelism, without gRPC, jobs or the
 * child process.
 */
async function measureInProcess(rows: number, partitions: string[], outDir: string | undefined, lanes: number, warmUp = false): Promise<InProcess> {
  if (outDir) await mkdir(outDir, { recursive: true });
  let scanned = 0;
  let fileBytes = 0;
  let next = 0;
  // Threads started and warmed up (modules, parquet-wasm) before the clock starts.
  const workers = await Promise.all(
    Array.from({ length: Math.min(lanes, partitions.length) }, async () => {
      const worker = new Worker(new URL('./backup-limit-worker.js', import.meta.url), { workerData: { batchSize: 1000 } });
      await once(worker, 'message');
      return worker;
    }),
  );
  const cpuBefore = selfCpuSeconds();
  const started = performance.now();
  const lane = async (worker: Worker): Promise<void> => {
    try {
      while (next < partitions.length) {
        const shard = next++;
        const task: LimitTask = { location: partitions[shard]!, out: outDir === undefined ? undefined : join(outDir, `partition-${shard}.parquet`), shard };
        worker.postMessage(task);
        const [done] = (await once(worker, 'message')) as [LimitDone & { error?: string }];
        if (done.error !== undefined) throw new Error(`in-process lane failed on ${task.location}: ${done.error}`);
        scanned += done.rows;
        fileBytes += done.fileBytes;
      }
    } finally {
      await worker.terminate();
    }
  };
  await Promise.all(workers.map(lane));
  const ms = performance.now() - started;
  const cpuSeconds = selfCpuSeconds() - cpuBefore;
  if (!warmUp && scanned !== rows) throw new Error(`in-process read ${scanned} rows, expected ${rows}`);
  return { ...figures(scanned, ms), fileBytes, cpuSeconds, lanes };
}

function figures(rows: number, ms: number): Figures {
  const seconds = ms / 1000;
  return { rows, ms, rowsPerSec: rows / seconds, mbPerSec: (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6 / seconds, ratioToLimit: 0 };
}

type InProcess = Figures & { fileBytes: number; cpuSeconds: number; lanes: number };

function printReport(rows: number, e2e: EndToEnd, limit: InProcess, scan: InProcess, benchPeakRssMb: number): void {
  const rss = (mb: number | undefined): string => (mb === undefined ? 'n/a' : fixed(mb, 0));
  const perM = (seconds: number | undefined): string => (seconds === undefined ? 'n/a' : fixed((seconds * 1e6) / rows, 2));
  const out: string[] = [];
  out.push(
    `shardpipe backup bench: ${int(rows)} rows × (${KEY_BYTES} B key + ${VALUE_BYTES} B value) = ${((rows * (KEY_BYTES + VALUE_BYTES)) / 1e6).toFixed(1)} MB, ` +
      `${NODES} nodes, ${PARTITIONS} partitions, ${e2e.report.shards} shards (target ${int(SHARD_ROWS)} rows; a partition is cut only when over 1.5× that), zstd Parquet to a local folder`,
  );
  out.push('');
  out.push(
    table(
      ['path', 'rows/s', 'MB/s', 'vs limit', 'seconds', 'peak RSS MiB'],
      [
        ['shardpipe backup run, child process, wall time', int(e2e.rowsPerSec), fixed(e2e.mbPerSec, 1), `${fixed(e2e.ratioToLimit, 2)}×`, fixed(e2e.ms / 1000, 2), rss(e2e.peakRssMb)],
        [`in-process: classic-level scan → Parquet file, ${limit.lanes} threads (limit)`, int(limit.rowsPerSec), fixed(limit.mbPerSec, 1), '1.00×', fixed(limit.ms / 1000, 2), '-'],
        [`in-process: classic-level scan alone, ${scan.lanes} threads`, int(scan.rowsPerSec), fixed(scan.mbPerSec, 1), `${fixed(scan.ratioToLimit, 2)}×`, fixed(scan.ms / 1000, 2), '-'],
      ],
    ),
  );
  out.push('');
  out.push(
    `backup report: ${e2e.report.backupId}, ${int(e2e.report.rows)} rows, ${fixed(e2e.report.bytes / 1e6, 1)} MB of Parquet (${fixed(e2e.fileMbPerSec, 1)} file MB/s), ` +
      `${fixed(e2e.report.durationMs / 1000, 2)} s from start to manifest (${int(e2e.report.rowsPerSecond)} rows/s); in-process files ${fixed(limit.fileBytes / 1e6, 1)} MB`,
  );
  out.push(`CPU s per 1M rows: backup child ${perM(e2e.cpuSeconds)}, ${e2e.nodeCpuSeconds.map((s, i) => `node ${i} ${perM(s)}`).join(', ')}; in-process limit (bench process) ${perM(limit.cpuSeconds)}, scan alone ${perM(scan.cpuSeconds)}`);
  out.push(`peak RSS: backup child ${rss(e2e.peakRssMb)} MiB, ${e2e.nodePeakRssMb.map((mb, i) => `node ${i} ${rss(mb)} MiB`).join(', ')}, bench process ${fixed(benchPeakRssMb, 0)} MiB`);
  out.push(JSON.stringify({ bench: 'backup', rows, keyBytes: KEY_BYTES, valueBytes: VALUE_BYTES, nodes: NODES, partitions: PARTITIONS, shardRows: SHARD_ROWS, endToEnd: e2e, limit, scan, benchPeakRssMb }, roundNumbers));
  process.stdout.write(out.join('\n') + '\n');
}

await main();
