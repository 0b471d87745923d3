/**
 * Restore benchmark (a measurement, not a test).
 *
 * Writes a backup of N rows (default 1,000,000) into a temp `file://` target with backup's own
 * writer (parquetShardStream: zstd, 65,536-row row groups, FORMAT.md metadata; manifest last, in
 * the format this build writes — 2, with each shard's content hash): 8
 * shards of sorted 16-byte keys and 100-byte values (incompressible base64 text), etags in the
 * millions, every third row with a TTL a day out. Then measures:
 *   1. end to end: `shardpipe restore ID --target file://… --json` as a child process (local worker
 *      in-process, default concurrency 2) against a private redis-server and 3 store node children
 *      (`store start`, fsync per batch as they default) with 6 partitions split evenly over the rows
 *      (2 per node), so shard ranges and partitions do not line up: wall time, rows/s, MB/s (key + value bytes, 1 MB =
 *      10^6 B), peak RSS (VmHWM) of the restore child;
 *   2. the in-process limit, after the cluster is stopped: for each shard file in turn,
 *      readShardRows (backup's shard reader on files/ + the FORMAT.md checks) → encodeRecord → one classic-level
 *      chained batch per chunk (no sync, as classic-level defaults) into one fresh LevelDB; and the
 *      ratio end to end / limit.
 * The in-process figure follows an unmeasured read of the first shard (decoder thread, wasm, JIT).
 * Prints a table, then one JSON line with every figure.
 *
 * Run: `npm run bench:restore` (builds first), or after `npx tsc -p tsconfig.json`:
 *   node dist/bench/restore-bench.js [--rows N] [--cpu-prof DIR]
 * `--cpu-prof DIR` has the restore child and the store nodes write V8 CPU profiles into DIR.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { MANIFEST_FORMAT_VERSION, newBackupId, openBackupTarget, parquetShardStream, shardFileName, writeManifest, type BackupManifest, type ShardStreamStats } from '../backup/index.js';
import { statDataFile } from '../files/index.js';
import { readShardRows, type ShardSpec } from '../restore/index.js';
import { PartitionMap, RangeDigest, encodeRecord, type StoredEntry } from '../store/index.js';
import { MAIN_JS, collect, sampleRss, startBenchCluster } from './bench-cluster.js';
import { fixed, int, roundNumbers, table } from './bench-format.js';
import { reapedChildrenCpuSeconds, selfCpuSeconds, selfPeakRssMb } from './bench-processes.js';
import { parseBenchArgs } from './bench-args.js';

const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const SHARDS = 8;
const NODES = 3;
const PARTITIONS = 6;
const VALUE_POOL = Buffer.from(randomBytes(768 * 1024).toString('base64'), 'latin1');
const VALUE_SLOTS = Math.floor(VALUE_POOL.length / VALUE_BYTES);

interface Figures {
  rows: number;
  ms: number;
  rowsPerSec: number;
  mbPerSec: number;
}

interface Limit extends Figures {
  ratioToLimit: number;
  /** User + system CPU seconds of this process (all its threads) during the limit run. */
  cpuSeconds: number;
}

async function main(): Promise<void> {
  const { values } = parseBenchArgs('node dist/bench/restore-bench.js [--rows N (default 1000000)] [--cpu-prof DIR]', { options: { rows: { type: 'string', default: '1000000' }, 'cpu-prof': { type: 'string' } } });
  const rows = Number(values.rows);
  if (!Number.isSafeInteger(rows) || rows < SHARDS) throw new RangeError(`--rows must be a whole number ≥ ${SHARDS}, got ${values.rows}`);
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-restore-bench-'));
  try {
    process.stderr.write(`writing the backup: ${rows} rows in ${SHARDS} shards…\n`);
    const backupDir = join(workDir, 'backups');
    const manifest = await writeBackup(backupDir, rows);
    process.stderr.write('end to end: shardpipe restore into 3 store nodes…\n');
    const e2e = await measureEndToEnd(rows, manifest, backupDir, workDir, profileArgs(values['cpu-prof']));
    const files = manifest.shards.map((s) => ({ shard: s, path: join(backupDir, manifest.backupId, s.file) }));
    process.stderr.write('in-process: warm-up (first shard)…\n');
    for await (const chunk of readShardRows(await statDataFile(files[0]!.path, 'parquet'), files[0]!.shard)) void chunk;
    process.stderr.write('in-process: shard files → classic-level batches (the limit)…\n');
    const limit = await measureLimit(rows, files, join(workDir, 'limit-db'));
    printReport(rows, manifest, e2e, limit, (await selfPeakRssMb()) ?? Number.NaN);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/** The i-th entry: sorted keys `k` + 15 digits, values from the random pool, etag and TTL pattern as documented. */
function entry(i: number, now: number): StoredEntry {
  const key = Buffer.from(`k${String(i).padStart(KEY_BYTES - 1, '0')}`, 'latin1');
  const slot = (i % VALUE_SLOTS) * VALUE_BYTES;
  return { key, value: VALUE_POOL.subarray(slot, slot + VALUE_BYTES), etag: 3_000_000 + i, updatedAtMs: now - 3_600_000, expiresAtMs: i % 3 === 0 ? now + 86_400_000 : 0 };
}

async function writeBackup(dir: string, rows: number): Promise<BackupManifest> {
  const target = openBackupTarget(pathToFileURL(dir).href);
  const backupId = newBackupId();
  const now = Date.now();
  const shards: BackupManifest['shards'] = [];
  try {
    for (let s = 0; s < SHARDS; s++) {
      const from = Math.floor((s * rows) / SHARDS);
      const to = Math.floor(((s + 1) * rows) / SHARDS);
      const start = s === 0 ? Buffer.alloc(0) : entry(from, now).key;
      const end = s === SHARDS - 1 ? Buffer.alloc(0) : entry(to, now).key;
      const source = async function* (): AsyncGenerator<StoredEntry[]> {
        for (let i = from; i < to; i += 1000) yield Array.from({ length: Math.min(1000, to - i) }, (_, j) => entry(i + j, now));
      };
      const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
      const written = await target.writeFile(backupId, shardFileName(s), parquetShardStream(source(), { backupId, shard: s, rangeStart: start, rangeEnd: end }, stats));
      shards.push({ index: s, start: start.toString('hex'), end: end.toString('hex'), file: shardFileName(s), rows: stats.rows, bytes: written.bytes, checksum: stats.digest.toHex(), contentHash: stats.contentHash });
    }
    const at = new Date().toISOString();
    const manifest: BackupManifest = {
      formatVersion: MANIFEST_FORMAT_VERSION,
      backupId,
      startedAt: at,
      finishedAt: at,
      mapVersion: 1,
      snapshotAt: at,
      partitions: [{ id: 0, start: '', end: '', node: '127.0.0.1:1', rows }],
      shards,
      totals: { rows, bytes: shards.reduce((n, s) => n + s.bytes, 0) },
    };
    await writeManifest(target, manifest);
    return manifest;
  } finally {
    await target.close();
  }
}

interface EndToEnd extends Figures {
  ratioToLimit: number;
  report: { rowsRestored: number; shardsFailed: number; durationMs: number; rowsPerSecond: number };
  exitCode: number | null;
  peakRssMb: number | undefined;
  nodePeakRssMb: Array<number | undefined>;
  /** User + system CPU seconds of the child. */
  cpuSeconds: number;
  /** User + system CPU seconds of each node during the run. */
  nodeCpuSeconds: Array<number | undefined>;
}

async function measureEndToEnd(rows: number, manifest: BackupManifest, backupDir: string, workDir: string, nodeArgs: string[]): Promise<EndToEnd> {
  // Split the rows evenly (a split key is the key of a row: shard ranges, cut at rows/8, and
  // partitions, cut at rows/6, do not line up), so every node takes its share.
  const splits = Array.from({ length: PARTITIONS - 1 }, (_, p) => entry(Math.floor(((p + 1) * rows) / PARTITIONS), 0).key);
  const cluster = await startBenchCluster(workDir, NODES, (nodes) => PartitionMap.fromSplitKeys(1, nodes, splits), { nodeArgs });
  const { nodes, addresses } = cluster;
  try {
    const args = [...nodeArgs, MAIN_JS, 'restore', manifest.backupId, '--target', pathToFileURL(backupDir).href, '--seeds', addresses.join(','), '--redis', cluster.redisUrl, '--data-dir', join(workDir, 'restore-data'), '--json', '--log-level', 'warn'];
    const nodeCpuBefore = await Promise.all(nodes.map((n) => n.cpuSeconds()));
    const cpuBefore = await reapedChildrenCpuSeconds();
    const started = performance.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const [result, { peakRssMb }] = await Promise.all([collect(child), sampleRss(child)]);
    const ms = performance.now() - started;
    const cpuSeconds = (await reapedChildrenCpuSeconds()) - cpuBefore;
    const nodeCpuSeconds = (await Promise.all(nodes.map((n) => n.cpuSeconds()))).map((after, i) => (after === undefined || nodeCpuBefore[i] === undefined ? undefined : after - nodeCpuBefore[i]!));
    if (result.stderr.trim()) process.stderr.write(`[restore] ${result.stderr.trim().replaceAll('\n', '\n[restore] ')}\n`);
    const report = JSON.parse(result.stdout.trim().split('\n').at(-1) ?? '{}') as EndToEnd['report'];
    if (result.code !== 0 || report.rowsRestored !== rows) throw new Error(`restore exited with ${result.code}, restored ${report.rowsRestored} of ${rows}: ${result.stdout}`);
    const nodePeakRssMb = await Promise.all(nodes.map((n) => n.peakRssMb()));
    return { ...figures(rows, ms), ratioToLimit: 0, report, exitCode: result.code, peakRssMb, nodePeakRssMb, cpuSeconds, nodeCpuSeconds };
  } finally {
    await cluster.stop();
  }
}


async function measureLimit(rows: number, files: Array<{ shard: ShardSpec; path: string }>, location: string): Promise<Limit> {
  const db = new ClassicLevel<Buffer, Buffer>(location, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  try {
    let written = 0;
    const cpuBefore = selfCpuSeconds();
    const started = performance.now();
    for (const { shard, path } of files) {
      for await (const chunk of readShardRows(await statDataFile(path, 'parquet'), shard)) {
        const batch = db.batch();
        for (const row of chunk.rows) batch.put(row.key, encodeRecord(row));
        await batch.write();
        written += chunk.rows.length;
      }
    }
    const ms = performance.now() - started;
    const cpuSeconds = selfCpuSeconds() - cpuBefore;
    if (written !== rows) throw new Error(`in-process limit wrote ${written} rows, expected ${rows}`);
    return { ...figures(rows, ms), ratioToLimit: 1, cpuSeconds };
  } finally {
    await db.close();
  }
}

/** `--cpu-prof DIR`: every child the bench starts writes a V8 CPU profile into DIR. */
function profileArgs(dir: string | undefined): string[] {
  return dir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${dir}`];
}

function figures(rows: number, ms: number): Figures {
  const seconds = ms / 1000;
  return { rows, ms, rowsPerSec: rows / seconds, mbPerSec: (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6 / seconds };
}

function printReport(rows: number, manifest: BackupManifest, e2e: EndToEnd, limit: Limit, benchPeakRssMb: number): void {
  e2e.ratioToLimit = e2e.rowsPerSec / limit.rowsPerSec;
  const rss = (mb: number | undefined): string => (mb === undefined ? 'n/a' : fixed(mb, 0));
  const perM = (seconds: number | undefined): string => (seconds === undefined ? 'n/a' : fixed((seconds * 1e6) / rows, 2));
  const out: string[] = [];
  out.push(
    `shardpipe restore bench: ${int(rows)} rows × (${KEY_BYTES} B key + ${VALUE_BYTES} B value) = ${fixed((rows * (KEY_BYTES + VALUE_BYTES)) / 1e6, 1)} MB in ${SHARDS} zstd shards ` +
      `(${fixed(manifest.totals.bytes / 1e6, 1)} MB), into ${NODES} nodes × ${PARTITIONS} partitions`,
  );
  out.push('');
  out.push(
    table(
      ['path', 'rows/s', 'MB/s', 'vs limit', 'seconds', 'peak RSS MiB'],
      [
        ['shardpipe restore, child process, wall time', int(e2e.rowsPerSec), fixed(e2e.mbPerSec, 1), `${fixed(e2e.ratioToLimit, 2)}×`, fixed(e2e.ms / 1000, 2), rss(e2e.peakRssMb)],
        ['in-process: shard files → classic-level batches (limit)', int(limit.rowsPerSec), fixed(limit.mbPerSec, 1), '1.00×', fixed(limit.ms / 1000, 2), '-'],
      ],
    ),
  );
  out.push('');
  out.push(`restore report: ${int(e2e.report.rowsRestored)} rows, ${e2e.report.shardsFailed} shards failed, ${fixed(e2e.report.durationMs / 1000, 2)} s from submit to report`);
  out.push(`CPU s per 1M rows: restore child ${perM(e2e.cpuSeconds)}, ${e2e.nodeCpuSeconds.map((s, i) => `node ${i} ${perM(s)}`).join(', ')}; in-process limit (bench process) ${perM(limit.cpuSeconds)}`);
  out.push(`peak RSS: restore child ${rss(e2e.peakRssMb)} MiB, ${e2e.nodePeakRssMb.map((mb, i) => `node ${i} ${rss(mb)} MiB`).join(', ')}, bench process ${fixed(benchPeakRssMb, 0)} MiB`);
  out.push(JSON.stringify({ bench: 'restore', rows, shards: SHARDS, backupBytes: manifest.totals.bytes, nodes: NODES, partitions: PARTITIONS, endToEnd: e2e, limit, benchPeakRssMb }, roundNumbers));
  process.stdout.write(out.join('\n') + '\n');
}

await main();
