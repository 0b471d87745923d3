/**
 * The bench suite (a measurement, not a test): `npm run bench` runs the store, ingest, backup,
 * restore, encode, replication and memory benches and the peers beside them, each several times, and prints one table:
 * every figure's median, spread (max − min) and, where it has one, its baseline from the same run
 * and the ratio. Results go to bench/history/ (JSON + Markdown); `npm run bench:compare` compares
 * the newest run with the previous one.
 *
 * The data set (fixed): sorted rows of 16-byte text keys `k000000000000042` and 100-byte
 * incompressible base64 values; ingest reads them from 8 snappy Parquet files into 3 nodes × 6
 * partitions cut at split keys; backup and restore move the same shape of rows through 3 nodes × 6
 * partitions; bench:store loads one node with 4 partitions; the encode bench writes backup shard
 * files of the same rows on one thread, beside the former writer (a dictionary on every column);
 * the memory bench ingests one large Parquet file; the replication bench loads and ingests the
 * same rows into 3 nodes with chains of one and of three, and times a head's failover and a
 * replica's full sync. `--quick` uses 50k rows and a 16 MB memory file
 * (run in 2 of the 3 repetitions), full uses 1M rows and a 1 GB file (run once).
 *
 * Peers, measured here: `redis-cli --pipe` of the same rows as SET commands into a redis-server with
 * AOF (everysec, always); redis-benchmark GET/SET (AOF always); a no-op grpc-js server (raw bytes)
 * at concurrency 1 and 32, in rounds alternating with bench:store's Get/Put runs; a naive loader (one Put RPC per row, concurrency 32) into a store node.
 * The distributed figures rerun the ingest with every node behind a proxy adding 1 ms and 5 ms of
 * one-way delay.
 *
 * Run: `npm run bench [-- --quick] [-- --reps N] [-- --no-save]`.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { collect } from './bench-cluster.js';
import { fixed, int, table } from './bench-format.js';
import { gitCommit, machineInfo, saveRun, type SuiteRun } from './bench-history.js';
import { measureNaiveLoader, measureRedisBenchmark, measureRedisPipe, writeRespFile } from './bench-peers.js';
import { summarize, type Figure, type FigureSpec } from './bench-stats.js';
import { parseBenchArgs } from './bench-args.js';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const REPO_DIR = join(BENCH_DIR, '..', '..');
const HISTORY_DIR = join(REPO_DIR, 'bench', 'history');

interface Sizes {
  rows: number;
  storeOps: number;
  memorySizeMb: number;
  memoryReps: number;
  naiveRows: number;
  redisBenchmarkRequests: number;
}

const QUICK: Sizes = { rows: 50_000, storeOps: 300, memorySizeMb: 16, memoryReps: 2, naiveRows: 2000, redisBenchmarkRequests: 5000 };
const FULL: Sizes = { rows: 1_000_000, storeOps: 5000, memorySizeMb: 1024, memoryReps: 1, naiveRows: 20_000, redisBenchmarkRequests: 50_000 };

const rowsPerSec = 'rows/s';
const opsPerSec = 'ops/s';
const cpuPerM = 'CPU s/1M rows';
const mib = 'MiB';
const ms = 'ms';
const mbPerSec = 'MB/s';

/** Every figure of the suite, in table order. */
const FIGURES: FigureSpec[] = [
  { id: 'ingest.limit.rowsPerSec', label: 'ingest in-process limit: read + map + classic-level', unit: rowsPerSec, better: 'higher', process: 'bench' },
  { id: 'ingest.reader.rowsPerSec', label: 'ingest in-process: read + map alone', unit: rowsPerSec, better: 'higher', baseline: 'ingest.limit.rowsPerSec', process: 'bench' },
  { id: 'ingest.e2e.rowsPerSec', label: 'shardpipe ingest end to end (CLI wall time)', unit: rowsPerSec, better: 'higher', baseline: 'ingest.limit.rowsPerSec' },
  { id: 'ingest.e2e.vsRedis', label: 'shardpipe ingest end to end vs redis-cli --pipe', unit: rowsPerSec, better: 'higher', baseline: 'redis.pipe.everysec.rowsPerSec' },
  { id: 'redis.pipe.everysec.rowsPerSec', label: 'peer: redis-cli --pipe, AOF everysec', unit: rowsPerSec, better: 'higher' },
  { id: 'redis.pipe.always.rowsPerSec', label: 'peer: redis-cli --pipe, AOF always', unit: rowsPerSec, better: 'higher', baseline: 'redis.pipe.everysec.rowsPerSec' },
  { id: 'ingest.delay1.rowsPerSec', label: 'ingest end to end, nodes behind 1 ms one-way delay', unit: rowsPerSec, better: 'higher', baseline: 'ingest.e2e.rowsPerSec' },
  { id: 'ingest.delay5.rowsPerSec', label: 'ingest end to end, nodes behind 5 ms one-way delay', unit: rowsPerSec, better: 'higher', baseline: 'ingest.e2e.rowsPerSec' },
  { id: 'ingest.child.cpuPerM', label: 'ingest: CPU of the ingest child', unit: cpuPerM, better: 'lower', process: 'ingest child' },
  { id: 'ingest.nodes.cpuPerM', label: 'ingest: CPU of the 3 store nodes together', unit: cpuPerM, better: 'lower', process: 'store nodes' },
  { id: 'redis.pipe.everysec.cpuPerM', label: 'peer: CPU of redis-server under --pipe (everysec)', unit: cpuPerM, better: 'lower', process: 'redis-server' },
  { id: 'ingest.child.peakRssMb', label: 'ingest: peak RSS of the ingest child', unit: mib, better: 'lower', process: 'ingest child' },
  { id: 'ingest.nodes.peakRssMb', label: 'ingest: peak RSS of the largest store node', unit: mib, better: 'lower', process: 'store node' },
  { id: 'ingest.bench.peakRssMb', label: 'ingest: peak RSS of the bench process (generator and in-process limit)', unit: mib, better: 'lower', process: 'bench' },
  { id: 'store.baseline.rowsPerSec', label: 'store baseline: classic-level chained batches in-process', unit: rowsPerSec, better: 'higher', process: 'bench' },
  { id: 'store.bulk.sync.rowsPerSec', label: 'BulkInsert into one node, fsync per batch', unit: rowsPerSec, better: 'higher', baseline: 'store.baseline.rowsPerSec' },
  { id: 'store.bulk.nosync.rowsPerSec', label: 'BulkInsert into one node, --no-sync', unit: rowsPerSec, better: 'higher', baseline: 'store.baseline.rowsPerSec' },
  { id: 'naive.c32.rowsPerSec', label: 'peer: naive loader, one Put RPC per row, concurrency 32', unit: rowsPerSec, better: 'higher', baseline: 'store.bulk.sync.rowsPerSec' },
  { id: 'store.node.cpuPerM', label: 'BulkInsert (fsync): CPU of the store node', unit: cpuPerM, better: 'lower', process: 'store node' },
  { id: 'store.client.cpuPerM', label: 'BulkInsert (fsync): CPU of the client (bench process)', unit: cpuPerM, better: 'lower', process: 'bench' },
  { id: 'naive.node.cpuPerM', label: 'naive loader: CPU of the store node', unit: cpuPerM, better: 'lower', process: 'store node' },
  { id: 'store.node.peakRssMb', label: 'bench:store: peak RSS of the store node (fsync)', unit: mib, better: 'lower', process: 'store node' },
  { id: 'noop.c1.callsPerSec', label: 'peer: no-op grpc-js unary call, concurrency 1', unit: 'calls/s', better: 'higher' },
  { id: 'noop.c32.callsPerSec', label: 'peer: no-op grpc-js unary call, concurrency 32', unit: 'calls/s', better: 'higher' },
  { id: 'store.get.c1.opsPerSec', label: 'Get, concurrency 1', unit: opsPerSec, better: 'higher', baseline: 'noop.c1.callsPerSec' },
  { id: 'store.get.c32.opsPerSec', label: 'Get, concurrency 32', unit: opsPerSec, better: 'higher', baseline: 'noop.c32.callsPerSec' },
  { id: 'store.put.c1.opsPerSec', label: 'Put (fsync), concurrency 1', unit: opsPerSec, better: 'higher', baseline: 'noop.c1.callsPerSec' },
  { id: 'store.syncwrite.c1.writesPerSec', label: 'peer: classic-level one-row batch with fsync, in-process, one at a time', unit: 'writes/s', better: 'higher', process: 'bench' },
  { id: 'store.putceiling.c1.opsPerSec', label: 'peer: ceiling of a lone Put here (a no-op call and a one-row fsync\'d write back to back)', unit: opsPerSec, better: 'higher', baseline: 'noop.c1.callsPerSec' },
  { id: 'store.put.c1.vsCeiling', label: 'Put (fsync), concurrency 1, vs its ceiling', unit: opsPerSec, better: 'higher', baseline: 'store.putceiling.c1.opsPerSec' },
  { id: 'store.put.c32.opsPerSec', label: 'Put (fsync), concurrency 32', unit: opsPerSec, better: 'higher', baseline: 'noop.c32.callsPerSec' },
  { id: 'redisbench.get.c1.opsPerSec', label: 'peer: redis-benchmark GET, concurrency 1', unit: opsPerSec, better: 'higher' },
  { id: 'redisbench.get.c32.opsPerSec', label: 'peer: redis-benchmark GET, concurrency 32', unit: opsPerSec, better: 'higher' },
  { id: 'redisbench.set.c1.opsPerSec', label: 'peer: redis-benchmark SET (AOF always), concurrency 1', unit: opsPerSec, better: 'higher' },
  { id: 'redisbench.set.c32.opsPerSec', label: 'peer: redis-benchmark SET (AOF always), concurrency 32', unit: opsPerSec, better: 'higher' },
  { id: 'backup.limit.rowsPerSec', label: 'backup in-process limit: scan → Parquet file, 2 threads', unit: rowsPerSec, better: 'higher', process: 'bench' },
  { id: 'backup.e2e.rowsPerSec', label: 'shardpipe backup run end to end', unit: rowsPerSec, better: 'higher', baseline: 'backup.limit.rowsPerSec' },
  { id: 'backup.child.cpuPerM', label: 'backup: CPU of the backup child', unit: cpuPerM, better: 'lower', process: 'backup child' },
  { id: 'backup.nodes.cpuPerM', label: 'backup: CPU of the 3 store nodes together', unit: cpuPerM, better: 'lower', process: 'store nodes' },
  { id: 'backup.child.peakRssMb', label: 'backup: peak RSS of the backup child', unit: mib, better: 'lower', process: 'backup child' },
  { id: 'restore.limit.rowsPerSec', label: 'restore in-process limit: shard files → classic-level', unit: rowsPerSec, better: 'higher', process: 'bench' },
  { id: 'restore.e2e.rowsPerSec', label: 'shardpipe restore end to end', unit: rowsPerSec, better: 'higher', baseline: 'restore.limit.rowsPerSec' },
  { id: 'restore.child.cpuPerM', label: 'restore: CPU of the restore child', unit: cpuPerM, better: 'lower', process: 'restore child' },
  { id: 'restore.nodes.cpuPerM', label: 'restore: CPU of the 3 store nodes together', unit: cpuPerM, better: 'lower', process: 'store nodes' },
  { id: 'restore.child.peakRssMb', label: 'restore: peak RSS of the restore child', unit: mib, better: 'lower', process: 'restore child' },
  { id: 'backup.limit.cpuPerM', label: 'backup in-process limit: CPU of the bench process (2 threads)', unit: cpuPerM, better: 'lower', process: 'bench' },
  { id: 'backup.nodes.peakRssMb', label: 'backup: peak RSS of the largest store node', unit: mib, better: 'lower', process: 'store node' },
  { id: 'restore.limit.cpuPerM', label: 'restore in-process limit: CPU of the bench process', unit: cpuPerM, better: 'lower', process: 'bench' },
  { id: 'restore.nodes.peakRssMb', label: 'restore: peak RSS of the largest store node', unit: mib, better: 'lower', process: 'store node' },
  { id: 'encode.before.rowsPerSec', label: 'backup file encoding, former writer (a dictionary on every column), one thread', unit: rowsPerSec, better: 'higher', process: 'bench' },
  { id: 'encode.now.rowsPerSec', label: 'backup file encoding (no dictionary on key, value, etag), one thread', unit: rowsPerSec, better: 'higher', baseline: 'encode.before.rowsPerSec', process: 'bench' },
  { id: 'encode.before.cpuPerM', label: 'backup file encoding, former writer: CPU', unit: cpuPerM, better: 'lower', process: 'bench' },
  { id: 'encode.now.cpuPerM', label: 'backup file encoding: CPU', unit: cpuPerM, better: 'lower', baseline: 'encode.before.cpuPerM', process: 'bench' },
  { id: 'encode.before.fileMb', label: 'backup file encoding, former writer: file size', unit: 'MB', better: 'lower', process: 'bench' },
  { id: 'encode.now.fileMb', label: 'backup file encoding: file size', unit: 'MB', better: 'lower', baseline: 'encode.before.fileMb', process: 'bench' },
  { id: 'memory.limit.rowsPerSec', label: 'one large file: in-process limit', unit: rowsPerSec, better: 'higher', process: 'bench' },
  { id: 'memory.e2e.rowsPerSec', label: 'one large file: shardpipe ingest end to end', unit: rowsPerSec, better: 'higher', baseline: 'memory.limit.rowsPerSec' },
  { id: 'memory.child.peakRssMb', label: 'one large file: peak RSS of the ingest child (goal < 256)', unit: mib, better: 'lower', process: 'ingest child' },
  { id: 'memory.arenas.peakRssMb', label: 'one large file: peak RSS of the ingest child with MALLOC_ARENA_MAX=2 (as up, demo and the image run it)', unit: mib, better: 'lower', process: 'ingest child', baseline: 'memory.child.peakRssMb' },
  { id: 'memory.nodes.peakRssMb', label: 'one large file: peak RSS of the largest store node', unit: mib, better: 'lower', process: 'store node' },
  { id: 'memory.child.cpuPerM', label: 'one large file: CPU of the ingest child', unit: cpuPerM, better: 'lower', process: 'ingest child' },
  { id: 'repl.rf1.ingest.rowsPerSec', label: 'replication: shardpipe ingest, chains of one (RF=1), 3 nodes × 6 partitions', unit: rowsPerSec, better: 'higher' },
  { id: 'repl.rf3.ingest.rowsPerSec', label: 'replication: shardpipe ingest, chains of three (RF=3; goal ≥ 0.5× RF=1)', unit: rowsPerSec, better: 'higher', baseline: 'repl.rf1.ingest.rowsPerSec' },
  { id: 'repl.rf1.ingest.nodes.cpuPerM', label: 'replication: CPU of the 3 store nodes, ingest at RF=1', unit: cpuPerM, better: 'lower', process: 'store nodes' },
  { id: 'repl.rf3.ingest.nodes.cpuPerM', label: 'replication: CPU of the 3 store nodes, ingest at RF=3', unit: cpuPerM, better: 'lower', process: 'store nodes', baseline: 'repl.rf1.ingest.nodes.cpuPerM' },
  { id: 'repl.rf1.load.rowsPerSec', label: 'replication: bulk load through the thick client, RF=1, 3 partitions', unit: rowsPerSec, better: 'higher' },
  { id: 'repl.rf3.load.rowsPerSec', label: 'replication: bulk load through the thick client, RF=3', unit: rowsPerSec, better: 'higher', baseline: 'repl.rf1.load.rowsPerSec' },
  { id: 'repl.rf1.put.c32.opsPerSec', label: 'replication: Put, concurrency 32, RF=1', unit: opsPerSec, better: 'higher' },
  { id: 'repl.rf3.put.c32.opsPerSec', label: 'replication: Put, concurrency 32, RF=3', unit: opsPerSec, better: 'higher', baseline: 'repl.rf1.put.c32.opsPerSec' },
  { id: 'repl.rf1.get.c32.opsPerSec', label: 'replication: Get, concurrency 32, RF=1', unit: opsPerSec, better: 'higher' },
  { id: 'repl.rf3.get.c32.opsPerSec', label: 'replication: Get, concurrency 32, RF=3 (served by the tails)', unit: opsPerSec, better: 'higher', baseline: 'repl.rf1.get.c32.opsPerSec' },
  { id: 'repl.rf3.put.latencyP50Ms', label: 'replication: Put latency p50 at RF=3, concurrency 32', unit: ms, better: 'lower' },
  { id: 'repl.rf3.put.headWriteP50Ms', label: 'replication: of it, the head\'s write (p50)', unit: ms, better: 'lower', baseline: 'repl.rf3.put.latencyP50Ms' },
  { id: 'repl.rf3.put.chainWritesP50Ms', label: 'replication: of it, the two replicas\' writes (p50)', unit: ms, better: 'lower', baseline: 'repl.rf3.put.latencyP50Ms' },
  { id: 'repl.rf3.put.transitP50Ms', label: 'replication: of it, forwards\' and acks\' transit and event-loop waits (p50)', unit: ms, better: 'lower', baseline: 'repl.rf3.put.latencyP50Ms' },
  { id: 'repl.lease.ms', label: 'replication: the nodes\' lease in the failover run (a setting)', unit: ms, better: 'lower' },
  { id: 'repl.failover.ms', label: 'replication: SIGKILL of a head → first write accepted by its successor (goal < 2× the lease)', unit: ms, better: 'lower', baseline: 'repl.lease.ms' },
  { id: 'repl.scan.mbPerSec', label: 'replication: plain scan of a partition (the tail)', unit: mbPerSec, better: 'higher' },
  { id: 'repl.sync.mbPerSec', label: 'replication: full sync of a replica under live writes', unit: mbPerSec, better: 'higher', baseline: 'repl.scan.mbPerSec' },
  { id: 'repl.sync.idle.putP99Ms', label: 'replication: Put p99, one caller to a chain\'s head, idle just before its sync', unit: ms, better: 'lower' },
  { id: 'repl.sync.during.putP99Ms', label: 'replication: Put p99, one caller to a chain\'s head, during its sync', unit: ms, better: 'lower', baseline: 'repl.sync.idle.putP99Ms' },
  { id: 'repl.sync.writePauseMs', label: 'replication: the longest of those Puts during the sync (the write pause)', unit: ms, better: 'lower' },
];

type Samples = Map<string, number[]>;

function add(samples: Samples, id: string, value: number | undefined): void {
  if (!FIGURES.some((f) => f.id === id)) throw new Error(`bench suite: unknown figure ${id}`);
  if (value === undefined || !Number.isFinite(value)) return;
  let list = samples.get(id);
  if (!list) samples.set(id, (list = []));
  list.push(value);
}

const perM = (seconds: number | undefined, rows: number): number | undefined => (seconds === undefined ? undefined : (seconds / rows) * 1e6);
const sum = (values: Array<number | undefined>): number | undefined => (values.some((v) => v === undefined) ? undefined : values.reduce<number>((s, v) => s + v!, 0));
const max = (values: Array<number | undefined>): number | undefined => (values.some((v) => v === undefined) ? undefined : Math.max(...(values as number[])));

/** Runs `node dist/bench/<name>.js args…` and returns the JSON line it prints last. */
async function runBench(name: string, args: string[]): Promise<Record<string, any>> {
  process.stderr.write(`  ${name} ${args.join(' ')}\n`);
  const child = spawn(process.execPath, [join(BENCH_DIR, `${name}.js`), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const result = await collect(child);
  if (result.code !== 0) throw new Error(`${name} exited with code ${result.code}:\n${result.stderr.slice(-4000)}`);
  const out = result.stdout.trim();
  const line = out.split('\n').at(-1) ?? '';
  // A table then one JSON line; or (replication-bench) nothing but an indented JSON document.
  for (const text of [line, out]) {
    try {
      return JSON.parse(text) as Record<string, any>;
    } catch {
      // the next form
    }
  }
  throw new Error(`${name} printed no JSON line last, nor only JSON: ${line}`);
}

async function repetition(samples: Samples, sizes: Sizes, workDir: string, respFile: string, withMemory: boolean): Promise<void> {
  const rows = String(sizes.rows);

  const ingest = await runBench('ingest-bench', ['--rows', rows, '--no-redis-pipe']);
  add(samples, 'ingest.limit.rowsPerSec', ingest.limit.rowsPerSec);
  add(samples, 'ingest.reader.rowsPerSec', ingest.reader.rowsPerSec);
  add(samples, 'ingest.e2e.rowsPerSec', ingest.endToEnd.rowsPerSec);
  add(samples, 'ingest.e2e.vsRedis', ingest.endToEnd.rowsPerSec);
  add(samples, 'ingest.child.cpuPerM', perM(ingest.endToEnd.cpuSeconds, sizes.rows));
  add(samples, 'ingest.nodes.cpuPerM', perM(sum(ingest.endToEnd.nodeCpuSeconds), sizes.rows));
  add(samples, 'ingest.child.peakRssMb', ingest.endToEnd.peakRssMb);
  add(samples, 'ingest.nodes.peakRssMb', max(ingest.endToEnd.nodePeakRssMb));
  add(samples, 'ingest.bench.peakRssMb', ingest.benchPeakRssMb);

  for (const fsync of ['everysec', 'always'] as const) {
    process.stderr.write(`  redis-cli --pipe, AOF ${fsync}\n`);
    const pipe = await measureRedisPipe(workDir, respFile, sizes.rows, fsync);
    add(samples, `redis.pipe.${fsync}.rowsPerSec`, pipe.rowsPerSec);
    if (fsync === 'everysec') add(samples, 'redis.pipe.everysec.cpuPerM', perM(pipe.serverCpuSeconds, sizes.rows));
  }

  for (const delayMs of [1, 5]) {
    const delayed = await runBench('ingest-bench', ['--rows', rows, '--delay-ms', String(delayMs), '--no-limit', '--no-redis-pipe']);
    add(samples, `ingest.delay${delayMs}.rowsPerSec`, delayed.endToEnd.rowsPerSec);
  }

  const store = await runBench('store-bench', ['--rows', rows, '--ops', String(sizes.storeOps)]);
  add(samples, 'store.baseline.rowsPerSec', store.baseline.rowsPerSec);
  const [sync, nosync] = [store.nodes.find((n: any) => n.sync), store.nodes.find((n: any) => !n.sync)];
  add(samples, 'store.bulk.sync.rowsPerSec', sync.bulk.rowsPerSec);
  add(samples, 'store.bulk.nosync.rowsPerSec', nosync.bulk.rowsPerSec);
  add(samples, 'store.node.cpuPerM', perM(sync.bulk.nodeCpuSeconds, sync.bulk.rows));
  add(samples, 'store.client.cpuPerM', perM(sync.bulk.clientCpuSeconds, sync.bulk.rows));
  add(samples, 'store.node.peakRssMb', sync.peakRssMb);
  for (const o of sync.ops) add(samples, `store.${o.op}.c${o.concurrency}.opsPerSec`, o.opsPerSec);
  for (const o of sync.ops.filter((x: any) => x.syncWrite !== undefined)) {
    add(samples, `store.syncwrite.c${o.concurrency}.writesPerSec`, o.syncWrite.writesPerSec);
    add(samples, `store.putceiling.c${o.concurrency}.opsPerSec`, o.syncWrite.ceilingOpsPerSec);
    add(samples, `store.put.c${o.concurrency}.vsCeiling`, o.opsPerSec);
  }

  // The no-op call in rounds alternating with the Get/Put runs above (bench:store), so both see the same load.
  for (const r of store.pointPeers.noop) add(samples, `noop.c${r.concurrency}.callsPerSec`, r.callsPerSec);

  process.stderr.write('  redis-benchmark GET/SET, AOF always\n');
  for (const concurrency of [1, 32]) {
    for (const r of await measureRedisBenchmark(workDir, 'always', concurrency, sizes.redisBenchmarkRequests)) add(samples, `redisbench.${r.test.toLowerCase()}.c${concurrency}.opsPerSec`, r.opsPerSec);
  }

  process.stderr.write('  naive loader: one Put per row, concurrency 32\n');
  const naive = await measureNaiveLoader(workDir, sizes.naiveRows, 32);
  add(samples, 'naive.c32.rowsPerSec', naive.rowsPerSec);
  add(samples, 'naive.node.cpuPerM', perM(naive.nodeCpuSeconds, naive.rows));

  const backup = await runBench('backup-bench', ['--rows', rows]);
  add(samples, 'backup.limit.rowsPerSec', backup.limit.rowsPerSec);
  add(samples, 'backup.e2e.rowsPerSec', backup.endToEnd.rowsPerSec);
  add(samples, 'backup.child.cpuPerM', perM(backup.endToEnd.cpuSeconds, sizes.rows));
  add(samples, 'backup.nodes.cpuPerM', perM(sum(backup.endToEnd.nodeCpuSeconds), sizes.rows));
  add(samples, 'backup.child.peakRssMb', backup.endToEnd.peakRssMb);
  add(samples, 'backup.limit.cpuPerM', perM(backup.limit.cpuSeconds, sizes.rows));
  add(samples, 'backup.nodes.peakRssMb', max(backup.endToEnd.nodePeakRssMb));

  const restore = await runBench('restore-bench', ['--rows', rows]);
  add(samples, 'restore.limit.rowsPerSec', restore.limit.rowsPerSec);
  add(samples, 'restore.e2e.rowsPerSec', restore.endToEnd.rowsPerSec);
  add(samples, 'restore.child.cpuPerM', perM(restore.endToEnd.cpuSeconds, sizes.rows));
  add(samples, 'restore.nodes.cpuPerM', perM(sum(restore.endToEnd.nodeCpuSeconds), sizes.rows));
  add(samples, 'restore.child.peakRssMb', restore.endToEnd.peakRssMb);
  add(samples, 'restore.limit.cpuPerM', perM(restore.limit.cpuSeconds, sizes.rows));
  add(samples, 'restore.nodes.peakRssMb', max(restore.endToEnd.nodePeakRssMb));

  const encode = await runBench('parquet-encode-bench', ['--rows', rows, '--reps', '2']);
  for (const variant of ['now', 'before'] as const) {
    add(samples, `encode.${variant}.rowsPerSec`, encode[variant].encodeRowsPerSec);
    add(samples, `encode.${variant}.cpuPerM`, encode[variant].encodeCpuPer1M);
    add(samples, `encode.${variant}.fileMb`, encode[variant].fileMb);
  }

  const repl = await runBench('replication-bench', ['--rows', rows, '--ops', String(sizes.storeOps), '--ingest-runs', '1']);
  for (const rf of ['rf1', 'rf3'] as const) {
    add(samples, `repl.${rf}.ingest.rowsPerSec`, repl.ingest[rf].rowsPerSec);
    add(samples, `repl.${rf}.ingest.nodes.cpuPerM`, repl.ingest[rf].nodeCpuSecondsPer1MRows);
    add(samples, `repl.${rf}.load.rowsPerSec`, repl[rf].loadRowsPerSec);
    add(samples, `repl.${rf}.put.c32.opsPerSec`, repl[rf].putOpsPerSec);
    add(samples, `repl.${rf}.get.c32.opsPerSec`, repl[rf].getOpsPerSec);
  }
  const putTiming = repl.putTimingMs.rf3;
  add(samples, 'repl.rf3.put.latencyP50Ms', putTiming.latencyP50Ms);
  add(samples, 'repl.rf3.put.headWriteP50Ms', putTiming.headWriteP50Ms);
  add(samples, 'repl.rf3.put.chainWritesP50Ms', putTiming.chainWritesP50Ms);
  add(samples, 'repl.rf3.put.transitP50Ms', putTiming.transitP50Ms);
  add(samples, 'repl.lease.ms', repl.failover.leaseMs);
  add(samples, 'repl.failover.ms', repl.failover.sigkillToFirstAcceptedWriteMs);
  add(samples, 'repl.scan.mbPerSec', repl.sync.plainScanMBPerSec);
  add(samples, 'repl.sync.mbPerSec', repl.sync.fullSyncMBPerSec);
  add(samples, 'repl.sync.idle.putP99Ms', repl.sync.putIdle.p99Ms);
  add(samples, 'repl.sync.during.putP99Ms', repl.sync.putDuringSync.p99Ms);
  add(samples, 'repl.sync.writePauseMs', repl.sync.writePauseMs);

  if (withMemory) {
    const memory = await runBench('ingest-memory-bench', ['--size-mb', String(sizes.memorySizeMb)]);
    add(samples, 'memory.limit.rowsPerSec', memory.limit?.rowsPerSec);
    add(samples, 'memory.e2e.rowsPerSec', memory.endToEnd.rowsPerSec);
    add(samples, 'memory.child.peakRssMb', memory.endToEnd.peakRssMb);
    add(samples, 'memory.arenas.peakRssMb', memory.arenas?.peakRssMb);
    add(samples, 'memory.nodes.peakRssMb', max(memory.endToEnd.nodePeakRssMb));
    add(samples, 'memory.child.cpuPerM', perM(memory.endToEnd.cpuSeconds, memory.rows));
  }
}

function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) return 'n/a';
  if (unit === cpuPerM) return fixed(value, 2);
  if (unit === ms || unit === mbPerSec) return value >= 100 ? int(value) : fixed(value, 2);
  return int(value);
}

/** The one table: figure, process, median, spread, samples, baseline and ratio. */
function figureTable(figures: Figure[]): string[][] {
  const byId = new Map(figures.map((f) => [f.id, f]));
  return figures.map((f) => [
    f.label,
    f.unit,
    formatValue(f.median, f.unit),
    f.samples.length > 1 ? `±${fixed((f.spreadRatio * 100) / 2, 0)}%` : '-',
    String(f.samples.length),
    f.baseline ? `${byId.get(f.baseline)?.label ?? f.baseline}` : '-',
    f.ratio === undefined ? '-' : `${fixed(f.ratio, 2)}×`,
  ]);
}

const TABLE_HEADER = ['figure', 'unit', 'median', 'spread', 'n', 'baseline (same run)', 'ratio'];

function markdown(run: SuiteRun): string {
  const rows = figureTable(run.figures);
  const escape = (s: string): string => s.replaceAll('|', '\\|');
  const m = run.machine;
  return [
    `# shardpipe bench, ${run.mode} run of ${run.startedAt}`,
    '',
    `Commit \`${run.commit}\`, ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}; ` +
      `${run.repetitions} repetitions, ${fixed(run.durationSec, 0)} s; load average ${fixed(m.loadAverage.start, 2)} at the start, ${fixed(m.loadAverage.end, 2)} at the end.`,
    '',
    `Data set: ${Object.entries(run.dataSet).map(([k, v]) => `${k} ${String(v)}`).join(', ')}.`,
    '',
    'Spread is ±half of (max − min) over the repetitions, as a share of the median; the ratio is median / the baseline\'s median, both from this run.',
    '',
    `| ${TABLE_HEADER.join(' | ')} |`,
    `| ${TABLE_HEADER.map((_, i) => (i === 0 || i === 1 || i === 5 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(escape).join(' | ')} |`),
    '',
    ...run.notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseBenchArgs('node dist/bench/suite.js [--quick] [--reps N] [--no-save] [--note TEXT …] — every bench, saved to bench/history (npm run bench)', { options: { quick: { type: 'boolean', default: false }, reps: { type: 'string' }, 'no-save': { type: 'boolean', default: false }, note: { type: 'string', multiple: true } } });
  const mode = values.quick ? 'quick' : 'full';
  const sizes = values.quick ? QUICK : FULL;
  const reps = values.reps === undefined ? 3 : Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1 || reps > 20) throw new RangeError(`--reps must be 1–20, got ${values.reps}`);
  const loadAtStart = loadavg()[0]!;
  const startedAt = new Date().toISOString();
  const commit = gitCommit(REPO_DIR);
  const started = performance.now();
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-bench-suite-'));
  const samples: Samples = new Map();
  try {
    const respFile = join(workDir, 'rows.resp');
    await writeRespFile(respFile, sizes.rows);
    for (let r = 0; r < reps; r++) {
      process.stderr.write(`repetition ${r + 1} of ${reps} (${mode})\n`);
      await repetition(samples, sizes, workDir, respFile, r < sizes.memoryReps);
    }
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
  const figures = summarize(FIGURES, samples);
  const run: SuiteRun = {
    suite: 'shardpipe-bench',
    formatVersion: 1,
    mode,
    startedAt,
    durationSec: (performance.now() - started) / 1000,
    commit,
    machine: machineInfo(loadAtStart),
    dataSet: {
      rows: sizes.rows,
      keyBytes: 16,
      valueBytes: 100,
      ingestFiles: '8 snappy Parquet',
      clusterForIngestBackupRestore: '3 nodes × 6 partitions',
      storeBenchNode: '1 node × 4 partitions',
      storeOpsAtConcurrency1: sizes.storeOps,
      memoryFileMb: sizes.memorySizeMb,
      memoryRepetitions: sizes.memoryReps,
      naiveLoaderRows: sizes.naiveRows,
      redisBenchmarkRequests: sizes.redisBenchmarkRequests,
      noopCallsAtConcurrency1: "as many as the store ops, in 5 rounds alternating with them",
      replication: '3 nodes, chains of 1 then 3: bulk load 3 partitions, one ingest of the 8-file drop into 6 partitions per repetition, Put/Get at concurrency 32 (as many as the store ops), failover with 2 s leases, full sync of one partition',
    },
    repetitions: reps,
    figures,
    notes: [
      'The machine is shared with other work (see the load average): figures move from run to run by more than the spread within one run.',
      ...(values.note ?? []),
    ],
  };
  process.stdout.write(`shardpipe bench (${mode}): ${int(sizes.rows)} rows, ${reps} repetitions, ${fixed(run.durationSec, 0)} s, load average ${fixed(loadAtStart, 2)} → ${fixed(run.machine.loadAverage.end, 2)}\n\n`);
  process.stdout.write(table(TABLE_HEADER, figureTable(figures)) + '\n');
  if (!values['no-save']) process.stdout.write(`\nsaved ${await saveRun(HISTORY_DIR, run, markdown(run))}\n`);
}

await main();
