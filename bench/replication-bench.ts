/**
 * Chain replication cost (a measurement, not a test): the same three store node processes with a
 * static map of chains of one (RF=1) and then of three (RF=3, heads spread), in one run.
 *
 * - Ingest-like bulk load: ROWS rows (16-byte keys spread over the keyspace, 100-byte values) in
 *   sorted PackedRows chunks through `StoreClient.bulkPutAll` at its defaults; rows/s and node CPU
 *   seconds per 1M rows, RF=3 / RF=1.
 * - Put and Get ops/s: CONCURRENCY callers for OPS operations each, through the thick client.
 * - Bytes forwarded per row: the wire size of the Forward message a bulk chunk becomes (encoded by
 *   the node's own forwarder code), per row, times the hops of a chain of three (2).
 *
 * - Failover: three `store start --etcd` nodes (lease 2 s) with a coordinator and a private etcd,
 *   R=3: SIGKILL the head of a partition, then time one thick-client put to that partition (its own
 *   retries included) until the successor accepts it. Goal: under 2 × the lease.
 *
 * Run after `npx tsc -p tsconfig.json`:
 *   node dist/bench/replication-bench.js [--rows 1000000] [--ops 20000] [--concurrency 32]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Key, PackedRowsBuilder, PartitionMap, StoreClient, forwardWireBytes, type PackedRows } from '../store/index.js';
import { findFreePort } from '../common/index.js';
import { PrivateEtcd } from '../coordinator/index.js';
import { MAIN_JS, startBenchCluster, type BenchCluster } from './bench-cluster.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    ops: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '32' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log('node dist/bench/replication-bench.js [--rows N (default 1000000)] [--ops N (default 20000)] [--concurrency N (default 32)]\nBulk load, Put and Get at RF=1 vs RF=3 on the same 3 store nodes; bytes forwarded per row.');
  process.exit(0);
}
const ROWS = wholeNumber('--rows', values.rows);
const OPS = wholeNumber('--ops', values.ops);
const CONCURRENCY = wholeNumber('--concurrency', values.concurrency);
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
  return (addresses) => {
    const even = PartitionMap.evenlySplit(1, addresses, 3);
    if (replicas === 1) return even;
    return PartitionMap.create(
      1,
      even.partitions.map((p, i) => ({
        id: p.id,
        start: p.start,
        end: p.end,
        chain: [0, 1, 2].map((k) => ({ node: addresses[(i + k) % 3]!, state: 'serving' as const })),
        epoch: 1,
      })),
      { replicas: 3 },
    );
  };
}

interface Figures {
  loadRowsPerSec: number;
  cpuSecondsPer1M: number;
  putOpsPerSec: number;
  getOpsPerSec: number;
}

async function cpu(cluster: BenchCluster): Promise<number> {
  let total = 0;
  for (const n of cluster.nodes) total += (await n.cpuSeconds()) ?? 0;
  return total;
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

async function measure(replicas: 1 | 3, workDir: string): Promise<Figures> {
  const cluster = await startBenchCluster(join(workDir, `rf${replicas}`), 3, mapOf(replicas));
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
    const value = Buffer.alloc(VALUE_BYTES, 0x62);
    const putOpsPerSec = await ops(OPS, (i) => client.put(Key.fromBytes(keyOf(i * 7919, OPS * 7919)), value));
    const getOpsPerSec = await ops(OPS, (i) => client.get(Key.fromBytes(keyOf(i, ROWS))));
    return { loadRowsPerSec: ROWS / seconds, cpuSecondsPer1M: (cpuSeconds / ROWS) * 1e6, putOpsPerSec, getOpsPerSec };
  } finally {
    client.close();
    await cluster.stop();
  }
}

const LEASE_MS = 2000;

/** A CLI child; resolves once it printed `{"event": name}` on stdout. */
function cliChild(args: string[], event: string | undefined): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, [MAIN_JS, ...args, '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'inherit'] });
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
    const init = spawn(process.execPath, [MAIN_JS, 'cluster', 'init', '--etcd', etcd.url, '--partitions', '3', '--replicas', '3', '--log-level', 'error'], { stdio: 'inherit' });
    const [code] = (await once(init, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`cluster init exited ${code}`);
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

/** Wire bytes of the Forward of one full bulk chunk, per row, over the two hops of a chain of three. */
function forwardedBytesPerRow(): { perHop: number; perRow: number; payloadPerRow: number } {
  const rows = chunks(CHUNK_ROWS).next().value as PackedRows;
  const wire = forwardWireBytes({ partitionId: 0, epoch: 1, from: '127.0.0.1:65535', streamId: 'ffffffffffffffff', seq: 123_456_789, op: { kind: 'bulk', rows, assigned: { firstEtag: 123_456_789, nowMs: Date.now() } } });
  return { perHop: wire / rows.count, perRow: (2 * wire) / rows.count, payloadPerRow: KEY_BYTES + VALUE_BYTES };
}

const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-replication-bench-'));
try {
  const rf1 = await measure(1, workDir);
  const rf3 = await measure(3, workDir);
  const fwd = forwardedBytesPerRow();
  const failover = await failoverMs(workDir);
  const round = (n: number): number => Math.round(n * 100) / 100;
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
        forwardedBytesPerRow: { perHop: round(fwd.perHop), chainOfThree: round(fwd.perRow), rowPayload: fwd.payloadPerRow },
        failover: { leaseMs: LEASE_MS, sigkillToFirstAcceptedWriteMs: Math.round(failover), overLease: round(failover / LEASE_MS), goal: '< 2 × lease' },
      },
      null,
      2,
    ),
  );
} finally {
  await rm(workDir, { recursive: true, force: true });
}
