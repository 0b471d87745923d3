/**
 * Ingest benchmark (a measurement, not a test).
 *
 * Generates a sorted Spark-like drop of N rows (default 1,000,000) in a temp folder: 8 snappy
 * Parquet part files written by parquet-wasm, `.crc` side files and `_SUCCESS`; column `id` holds
 * 16-byte keys (fixed-width strings `k000000000000042`, which sort as they count), column `payload`
 * 100-byte values (incompressible base64 text). Then measures:
 *   1. end to end: the plain command a user types, `shardpipe ingest DROP --key-column id
 *      --value-column payload --seeds A,B,C --redis URL --wait --json` (bin/shardpipe.js, every other
 *      flag at its default, its data folder the default `.shardpipe` in a fresh working directory) as
 *      a child process, timed from spawn to exit (CLI start included), against a redis-server
 *      (PrivateRedis) and a local cluster of 3 store node children (`store start`, fsync per batch as
 *      they default) whose map is cut by `cluster init --split-keys` into 6 partitions holding a
 *      sixth of the keys each: wall time, rows/s, MB/s (key + value bytes, 1 MB = 10^6 B), the peak
 *      RSS (VmHWM) of the ingest child, and the rows each partition then holds;
 *   2. the in-process limit, after the cluster is stopped: for each file in turn, readRecordBatches →
 *      createRowMapper().mapBatch → one classic-level chained batch per mapped batch (no sync, as
 *      classic-level defaults) into one fresh LevelDB; and the ratio end to end / limit;
 *   3. the reader alone: readRecordBatches + mapBatch, nothing written;
 *   4. the peer: `redis-cli --pipe` of the same rows as SET commands into a fresh redis-server with
 *      AOF everysec, and the ratio end to end / peer (`--no-redis-pipe` skips it).
 * With `--reps N` (default 1) the end to end run and the peer each run N times, each end to end run
 * against a fresh cluster and Redis, and the figures are the medians (every run is in the JSON).
 * Both in-process figures follow an unmeasured read of the first file (decoder thread, wasm, JIT
 * warm); the ingest child is measured cold, as a user runs it.
 * With `--delay-ms N` every node sits behind a TCP proxy adding N ms of one-way delay (the
 * distributed benchmark); `--ingest-flags="FLAGS"` (with `=`: the flags start with a dash) adds flags to the ingest command (space-separated,
 * e.g. `--concurrency 4`: for experiments, not the default-flags figure); `--no-limit` skips the in-process figures; `--cpu-prof DIR` runs the ingest
 * child under `node --cpu-prof --cpu-prof-dir DIR` (a .cpuprofile per run, for a flame graph).
 * CPU seconds (user + system) of the ingest child and of each node are in the JSON line.
 * Prints a table, then one JSON line with every figure.
 *
 * Run: `npm run bench:ingest` (builds first), or after `npx tsc -p tsconfig.json`:
 *   node dist/bench/ingest-bench.js [--rows N] [--reps N] [--delay-ms N] [--node-window BYTES] [--ingest-flags "FLAGS"] [--no-limit] [--no-redis-pipe] [--cpu-prof DIR]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { scanDrop } from '../ingest/index.js';
import { PartitionMap } from '../store/index.js';
import { partitionRows, runIngest, startBenchCluster, type IngestJsonReport, type PartitionRows } from './bench-cluster.js';
import {
  DROP_FILES, KEY_BYTES, KEY_COLUMN, ROW_GROUP_ROWS, VALUE_BYTES, VALUE_COLUMN, measureInProcess, splitKeys, warmUp, writeDrop, writeFigures,
  type Drop, type InProcess, type WriteFigures,
} from './bench-drop.js';
import { fixed, int, roundNumbers, table } from './bench-format.js';
import { measureRedisPipe, writeRespFile, type PipeFigures } from './bench-peers.js';
import { selfPeakRssMb } from './bench-processes.js';
import { median } from './bench-stats.js';

const NODES = 3;
const PARTITIONS = 6;

/** One end to end run. */
interface EndToEndRun {
  ms: number;
  rowsPerSec: number;
  cpuSeconds: number;
  peakRssMb: number | undefined;
  nodeCpuSeconds: Array<number | undefined>;
}

/** The median run (by wall time) of the end to end runs, with every run beside it. */
interface EndToEnd extends WriteFigures {
  ratioToLimit: number;
  /** End to end rows/s over the peer's (redis-cli --pipe, AOF everysec); absent without the peer. */
  ratioToRedisPipe?: number;
  runs: EndToEndRun[];
  /** The report the ingest printed (--json). */
  report: IngestJsonReport;
  exitCode: number | null;
  peakRssMb: number | undefined;
  /** User + system CPU seconds of the ingest child. */
  cpuSeconds: number;
  nodePeakRssMb: Array<number | undefined>;
  /** User + system CPU seconds each node spent during the ingest (and the row count check after it). */
  nodeCpuSeconds: Array<number | undefined>;
  delayMs: number;
  partitions: PartitionRows[];
  storedRows: number;
}

/** The peer: `redis-cli --pipe` into AOF-everysec Redis, median of the runs. */
interface RedisPipe {
  rowsPerSec: number;
  ms: number;
  runs: PipeFigures[];
}

async function main(): Promise<void> {
  const { rows, delayMs, nodeWindowBytes, limit: withLimit, reps, redisPipe: withRedisPipe, cpuProfDir, ingestFlags } = parseCommandLine();
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-ingest-bench-'));
  try {
    process.stderr.write(`generating the drop: ${rows} rows in ${Math.min(DROP_FILES, rows)} snappy part files…\n`);
    const drop = await writeDrop(join(workDir, 'drop'), rows);
    const runs: EndToEndOne[] = [];
    for (let r = 0; r < reps; r++) {
      process.stderr.write(`end to end (run ${r + 1} of ${reps}): shardpipe ingest into 3 store nodes…\n`);
      runs.push(await measureEndToEnd(rows, drop, join(workDir, `run-${r}`), delayMs, cpuProfDir, nodeWindowBytes, ingestFlags));
    }
    const endToEnd = medianRun(runs);
    let redisPipe: RedisPipe | undefined;
    if (withRedisPipe) {
      process.stderr.write('peer: redis-cli --pipe into redis-server with AOF everysec…\n');
      const respFile = join(workDir, 'rows.resp');
      await writeRespFile(respFile, rows);
      const pipeRuns: PipeFigures[] = [];
      for (let r = 0; r < reps; r++) pipeRuns.push(await measureRedisPipe(workDir, respFile, rows, 'everysec'));
      const ms = median(pipeRuns.map((p) => p.ms));
      redisPipe = { ms, rowsPerSec: rows / (ms / 1000), runs: pipeRuns };
      endToEnd.ratioToRedisPipe = endToEnd.rowsPerSec / redisPipe.rowsPerSec;
    }
    if (!withLimit) {
      printReport(rows, drop, endToEnd, undefined, undefined, redisPipe, await benchPeakRssMb());
      return;
    }
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
    printReport(rows, drop, endToEnd, limit, reader, redisPipe, await benchPeakRssMb());
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

interface Args {
  rows: number;
  delayMs: number;
  /** The nodes' --flow-control-window; undefined: their default. */
  nodeWindowBytes: number | undefined;
  limit: boolean;
  reps: number;
  redisPipe: boolean;
  cpuProfDir: string | undefined;
  /** Extra flags for the ingest command (experiments); empty: every flag at its default. */
  ingestFlags: string[];
}

function parseCommandLine(): Args {
  const { values } = parseArgs({
    options: {
      rows: { type: 'string', default: '1000000' },
      reps: { type: 'string', default: '1' },
      'delay-ms': { type: 'string', default: '0' },
      'node-window': { type: 'string' },
      'no-limit': { type: 'boolean', default: false },
      'no-redis-pipe': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'ingest-flags': { type: 'string', default: '' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/ingest-bench.js [--rows N (default 1000000)] [--reps N (default 1; medians)] [--delay-ms N] [--node-window BYTES] [--ingest-flags "FLAGS" (extra ingest flags, for experiments)] [--no-limit] [--no-redis-pipe] [--cpu-prof DIR]\n');
    process.exit(0);
  }
  const rows = Number(values.rows);
  if (!Number.isSafeInteger(rows) || rows < 1) throw new RangeError(`--rows must be a whole number ≥ 1, got ${values.rows}`);
  const reps = Number(values.reps);
  if (!Number.isSafeInteger(reps) || reps < 1 || reps > 20) throw new RangeError(`--reps must be 1–20, got ${values.reps}`);
  const delayMs = Number(values['delay-ms']);
  if (!Number.isFinite(delayMs) || delayMs < 0 || delayMs > 1000) throw new RangeError(`--delay-ms must be 0–1000, got ${values['delay-ms']}`);
  const nodeWindowBytes = values['node-window'] === undefined ? undefined : Number(values['node-window']);
  if (nodeWindowBytes !== undefined && (!Number.isSafeInteger(nodeWindowBytes) || nodeWindowBytes < 65_535)) throw new RangeError(`--node-window must be a whole number ≥ 65535, got ${values['node-window']}`);
  return { rows, delayMs, nodeWindowBytes, limit: !values['no-limit'], reps, redisPipe: !values['no-redis-pipe'], cpuProfDir: values['cpu-prof'] === undefined ? undefined : resolve(values['cpu-prof']), ingestFlags: values['ingest-flags'].split(' ').filter((f) => f !== '') };
}

/** This process's own peak RSS (VmHWM), not its children's. */
async function benchPeakRssMb(): Promise<number> {
  return (await selfPeakRssMb()) ?? Number.NaN;
}

/** One run's figures, before the runs are reduced to their median. */
type EndToEndOne = Omit<EndToEnd, 'runs'>;

/** The run of median wall time (the upper one of an even count), with every run listed. */
function medianRun(runs: EndToEndOne[]): EndToEnd {
  const byTime = [...runs].sort((a, b) => a.ms - b.ms);
  const mid = byTime[byTime.length >> 1]!;
  return { ...mid, runs: runs.map((r) => ({ ms: r.ms, rowsPerSec: r.rowsPerSec, cpuSeconds: r.cpuSeconds, peakRssMb: r.peakRssMb, nodeCpuSeconds: r.nodeCpuSeconds })) };
}

/** Redis, a 3-node cluster cut at the split keys, then the ingest CLI as a child; everything stopped before returning. */
async function measureEndToEnd(rows: number, drop: Drop, workDir: string, delayMs: number, cpuProfDir: string | undefined, nodeWindowBytes: number | undefined, ingestFlags: string[]): Promise<EndToEndOne> {
  const storeArgs = nodeWindowBytes === undefined ? undefined : ['--flow-control-window', String(nodeWindowBytes)];
  const cluster = await startBenchCluster(workDir, NODES, (nodes) => PartitionMap.fromSplitKeys(1, nodes, splitKeys(rows, PARTITIONS).map((k) => Buffer.from(k))), { delayMs, storeArgs });
  try {
    const nodeCpuBefore = await Promise.all(cluster.nodes.map((n) => n.cpuSeconds()));
    const run = await runIngest(cluster, drop.dir, rows, ['--key-column', KEY_COLUMN, '--value-column', VALUE_COLUMN, ...ingestFlags], {
      cwd: join(workDir, 'ingest-cwd'),
      nodeArgs: cpuProfDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', cpuProfDir],
    });
    const partitions = await partitionRows(cluster);
    const storedRows = partitions.reduce((s, p) => s + p.rows, 0);
    if (storedRows !== rows) process.stderr.write(`WARNING: the nodes report ${storedRows} rows stored, expected ${rows}\n`);
    const nodePeakRssMb = await Promise.all(cluster.nodes.map((n) => n.peakRssMb()));
    const nodeCpuSeconds = (await Promise.all(cluster.nodes.map((n) => n.cpuSeconds()))).map((after, i) => (after === undefined || nodeCpuBefore[i] === undefined ? undefined : after - nodeCpuBefore[i]!));
    return {
      ...writeFigures(rows, run.ms), ratioToLimit: 0, report: run.report, exitCode: run.code, peakRssMb: run.peakRssMb, cpuSeconds: run.cpuSeconds,
      nodePeakRssMb, nodeCpuSeconds, delayMs, partitions, storedRows,
    };
  } finally {
    await cluster.stop();
  }
}

function printReport(rows: number, drop: Drop, e2e: EndToEnd, limit: InProcess | undefined, reader: InProcess | undefined, redisPipe: RedisPipe | undefined, benchPeakRssMb: number): void {
  const totalMb = (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6;
  const rss = (mb: number | undefined): string => (mb === undefined ? 'n/a' : fixed(mb, 0));
  const out: string[] = [];
  out.push(
    `shardpipe ingest bench: ${int(rows)} rows × (${KEY_BYTES} B key + ${VALUE_BYTES} B value) = ${totalMb.toFixed(1)} MB, ` +
      `${drop.files} snappy part files (${fixed(drop.bytesOnDisk / 1e6, 1)} MB on disk, ≤ ${int(ROW_GROUP_ROWS)} rows per row group), ${NODES} nodes, ${e2e.partitions.length} partitions` +
      (e2e.delayMs > 0 ? `, every node behind a proxy adding ${e2e.delayMs} ms one-way` : '') +
      (e2e.runs.length > 1 ? `; medians of ${e2e.runs.length} runs` : ''),
  );
  out.push('');
  out.push(
    table(
      ['path', 'rows/s', 'MB/s', 'vs limit', 'vs redis-cli --pipe', 'seconds', 'peak RSS MiB'],
      [
        ['shardpipe ingest, child process, wall time', int(e2e.rowsPerSec), fixed(e2e.mbPerSec, 1), limit ? `${fixed(e2e.ratioToLimit, 2)}×` : '-', e2e.ratioToRedisPipe === undefined ? '-' : `${fixed(e2e.ratioToRedisPipe, 2)}×`, fixed(e2e.ms / 1000, 2), rss(e2e.peakRssMb)],
        ...(limit && reader
          ? [
              ['in-process: read + map + classic-level batch (limit)', int(limit.rowsPerSec), fixed(limit.mbPerSec, 1), '1.00×', '-', fixed(limit.ms / 1000, 2), '-'],
              ['in-process: read + map alone', int(reader.rowsPerSec), fixed(reader.mbPerSec, 1), `${fixed(reader.ratioToLimit, 2)}×`, '-', fixed(reader.ms / 1000, 2), '-'],
            ]
          : []),
        ...(redisPipe
          ? [['peer: redis-cli --pipe, AOF everysec', int(redisPipe.rowsPerSec), fixed((rows * (KEY_BYTES + VALUE_BYTES)) / 1e6 / (redisPipe.ms / 1000), 1), limit ? `${fixed(redisPipe.rowsPerSec / limit.rowsPerSec, 2)}×` : '-', '1.00×', fixed(redisPipe.ms / 1000, 2), rss(median(redisPipe.runs.map((p) => p.serverPeakRssMb ?? Number.NaN)))]]
          : []),
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
  if (e2e.runs.length > 1) out.push(`end to end runs (s): ${e2e.runs.map((r) => fixed(r.ms / 1000, 2)).join(', ')}; ingest child CPU s: ${e2e.runs.map((r) => fixed(r.cpuSeconds, 2)).join(', ')}`);
  // Each figure is read from its own process: the child's and the nodes' /proc/PID/status, this process's own.
  out.push(`peak RSS: ingest child ${rss(e2e.peakRssMb)} MiB, ${nodeRss}, bench process (generator and in-process limit) ${fixed(benchPeakRssMb, 0)} MiB`);
  const perM = (s: number | undefined): string => (s === undefined ? 'n/a' : fixed((s / rows) * 1e6, 2));
  out.push(`CPU s per 1M rows: ingest child ${perM(e2e.cpuSeconds)}, ${e2e.nodeCpuSeconds.map((s, i) => `node ${i} ${perM(s)}`).join(', ')}`);
  out.push(
    JSON.stringify(
      { bench: 'ingest', rows, keyBytes: KEY_BYTES, valueBytes: VALUE_BYTES, files: drop.files, rowGroupRows: ROW_GROUP_ROWS, dropBytes: drop.bytesOnDisk, nodes: NODES, endToEnd: e2e, limit, reader, redisPipe, benchPeakRssMb },
      roundNumbers,
    ),
  );
  process.stdout.write(out.join('\n') + '\n');
}


await main();
