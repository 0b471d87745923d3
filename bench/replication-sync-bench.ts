/**
 * Full replica sync against a plain scan, and the write pause a sync causes (a measurement, not a test).
 *
 * Starts one source node (`store start`, static map, one partition), loads ROWS rows of VALUE bytes,
 * then per repetition, in this process (the syncing side):
 * - plain scan: a leased snapshot of the partition streamed over gRPC, nothing written (MB/s);
 * - full sync: `syncReplica` into a fresh local LevelDB — the same stream, plus the apply rule's
 *   reads, the writes (fsynced) and the checksum of both sides (MB/s, and the ratio to the scan);
 * - write pause: Put latency on the source, one put at a time, while idle and while a sync copies
 *   from it (p50 and p99 in ms, and the p99 ratio).
 * Key + value bytes count as MB (1e6). The sync here runs in this process with no chain around it,
 * so the pause is that of the source serving the snapshot scan; bench/replication-bench.ts measures
 * a real one (etcd, a repaired tail of a chain of three, live writes forwarded into it).
 *
 * Run after `npx tsc -p tsconfig.json`:
 *   node dist/bench/replication-sync-bench.js [--rows 200000] [--value-bytes 100] [--reps 2]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findFreePort } from '../common/index.js';
import { Key, NodeConnection, PartitionMap, PartitionStore, StoreClient, syncReplica, type BulkRowInput } from '../store/index.js';
import { fixed, table } from './bench-format.js';
import { median, quantile } from './bench-stats.js';
import { MAIN_JS } from './bench-cluster.js';
import { stopChild, waitForReady } from './bench-processes.js';
import { parseBenchArgs } from './bench-args.js';

const { values } = parseBenchArgs('node dist/bench/replication-sync-bench.js [--rows N (default 200000)] [--value-bytes N (default 100)] [--reps N (default 2)]', { options: { rows: { type: 'string', default: '200000' }, 'value-bytes': { type: 'string', default: '100' }, reps: { type: 'string', default: '2' } } });
const rows = whole(values.rows!, '--rows');
const valueBytes = whole(values['value-bytes']!, '--value-bytes');
const reps = whole(values.reps!, '--reps');

const dir = await mkdtemp(join(tmpdir(), 'shardpipe-sync-bench-'));
const address = `127.0.0.1:${await findFreePort()}`;
const map = PartitionMap.evenlySplit(1, [address], 1);
await writeFile(join(dir, 'map.json'), JSON.stringify(map.toJson()));
const child = spawn(process.execPath, [MAIN_JS, 'store', 'start', '--map', join(dir, 'map.json'), '--node', address, '--data', join(dir, 'source'), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
const exited = once(child, 'exit').then(() => undefined);
const client = new StoreClient({ seeds: [address], operationTimeoutMs: 120_000 });
const conn = new NodeConnection(address);
const partition = map.partitions[0]!;
try {
  await waitForReady(child);
  await client.bulkPutAll(chunks());
  const samples = { scan: [] as number[], sync: [] as number[], idleP50: [] as number[], idleP99: [] as number[], syncP50: [] as number[], syncP99: [] as number[] };
  let bytes = 0;
  for (let rep = 0; rep < reps; rep++) {
    const scan = await plainScan();
    bytes = scan.bytes;
    samples.scan.push(scan.bytes / 1e6 / scan.seconds);
    const idle = await putLatencies(() => scan.seconds * 1000);
    samples.idleP50.push(idle.p50);
    samples.idleP99.push(idle.p99);
    let syncing = true;
    const target = await PartitionStore.open(join(dir, `target-${rep}`), { sweepIntervalMs: 0 });
    try {
      const started = performance.now();
      const during = putLatencies(() => (syncing ? Infinity : 0));
      const result = await syncReplica({ partition, mapVersion: map.version, target, source: conn }).finally(() => (syncing = false));
      const seconds = (performance.now() - started) / 1000;
      const pause = await during;
      if (result.rows !== result.totalRows || result.rows < rows) throw new Error(`sync copied ${result.rows} rows of the snapshot's ${result.totalRows} (loaded ${rows})`);
      samples.sync.push(result.bytes / 1e6 / seconds);
      samples.syncP50.push(pause.p50);
      samples.syncP99.push(pause.p99);
    } finally {
      await target.close();
    }
  }
  const m = (xs: number[]): number => median(xs);
  console.log(
    table(
      ['figure', 'median', 'samples'],
      [
        ['plain scan of a snapshot, MB/s', fixed(m(samples.scan), 1), samples.scan.map((x) => fixed(x, 1)).join(' ')],
        ['full sync (copy + verify), MB/s', fixed(m(samples.sync), 1), samples.sync.map((x) => fixed(x, 1)).join(' ')],
        ['sync / scan', fixed(m(samples.sync) / m(samples.scan), 2), ''],
        ['put p50 idle, ms', fixed(m(samples.idleP50), 2), samples.idleP50.map((x) => fixed(x, 2)).join(' ')],
        ['put p99 idle, ms', fixed(m(samples.idleP99), 2), samples.idleP99.map((x) => fixed(x, 2)).join(' ')],
        ['put p50 during a sync, ms', fixed(m(samples.syncP50), 2), samples.syncP50.map((x) => fixed(x, 2)).join(' ')],
        ['put p99 during a sync, ms', fixed(m(samples.syncP99), 2), samples.syncP99.map((x) => fixed(x, 2)).join(' ')],
        ['p99 during / idle', fixed(m(samples.syncP99) / m(samples.idleP99), 2), ''],
      ],
    ),
  );
  console.log(JSON.stringify({ rows, valueBytes, reps, mb: bytes / 1e6, samples }));
} finally {
  conn.close();
  client.close();
  await stopChild(child, exited);
  await rm(dir, { recursive: true, force: true });
}

function whole(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${flag} must be a whole number ≥ 1, got ${text}`);
  return n;
}

function* chunks(): Generator<BulkRowInput[]> {
  const per = 2000;
  for (let at = 0; at < rows; at += per) {
    yield Array.from({ length: Math.min(per, rows - at) }, (_, i) => ({ key: Buffer.from(`k${String(at + i).padStart(10, '0')}`), value: Buffer.alloc(valueBytes, (at + i) & 0xff) }));
  }
}

/** Streams a leased snapshot of the partition and drops it: what a sync reads, without its writes. */
async function plainScan(): Promise<{ bytes: number; seconds: number }> {
  const started = performance.now();
  const opened = await conn.unary('openSnapshot', { mapVersion: map.version, partitionIds: [partition.id], leaseMs: 60_000 }, { deadline: Date.now() + 10_000 });
  const snapshotId = opened.snapshots[0]!.snapshotId;
  let bytes = 0;
  try {
    for await (const batch of conn.scan({ mapVersion: map.version, start: partition.start, end: partition.end, limit: 0, batchSize: 1000, snapshotId }, { deadline: Infinity })) {
      for (const e of batch.entries) bytes += e.key.length + e.value.length;
      if (batch.last) break;
    }
  } finally {
    await conn.unary('releaseSnapshot', { snapshotIds: [snapshotId] }, { deadline: Date.now() + 10_000 });
  }
  return { bytes, seconds: (performance.now() - started) / 1000 };
}

/** Puts one at a time to keys outside the loaded ones until `forMs()` has passed; p50 and p99 in ms. */
async function putLatencies(forMs: () => number): Promise<{ p50: number; p99: number }> {
  const latencies: number[] = [];
  const started = performance.now();
  for (let i = 0; performance.now() - started < forMs() || latencies.length < 20; i++) {
    const t = performance.now();
    await client.put(Key.fromUtf8(`w${i}`), Buffer.alloc(valueBytes, 1));
    latencies.push(performance.now() - t);
  }
  return { p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99) };
}
