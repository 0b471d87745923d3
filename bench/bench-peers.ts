import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, credentials } from '@grpc/grpc-js';
import { findFreePort } from '../common/index.js';
import { Key, PartitionMap, StoreClient } from '../store/index.js';
import { collect, startBenchCluster } from './bench-cluster.js';
import { keyText, valueBytes } from './bench-drop.js';
import { readCpuSeconds, readPeakRssMb, stopChild, waitForReady } from './bench-processes.js';
import { NOOP_METHOD_PATH, rawBytes } from './noop-service.js';

// The peers the bench suite measures beside shardpipe, in the same run on the same machine:
// redis-server with persistence fed by `redis-cli --pipe`, redis-benchmark, a no-op grpc-js server,
// and a naive loader (one Put RPC per row).

const NOOP_SERVER_JS = join(dirname(fileURLToPath(import.meta.url)), 'noop-grpc-server.js');

export type AppendFsync = 'everysec' | 'always';

export interface PipeFigures {
  rows: number;
  ms: number;
  rowsPerSec: number;
  /** User + system CPU seconds of redis-server during the load. */
  serverCpuSeconds: number | undefined;
  serverPeakRssMb: number | undefined;
}

interface RedisProcess {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** redis-server on a free loopback port with an AOF fsynced as asked, no RDB snapshots. */
async function startRedis(dir: string, fsync: AppendFsync): Promise<RedisProcess> {
  await mkdir(dir, { recursive: true });
  const port = await findFreePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', fsync, '--dir', dir, '--daemonize', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    const onExit = (code: number | null): void => reject(new Error(`redis-server exited (code ${code}) before it was ready: ${seen}`));
    child.once('exit', onExit);
    child.stdout!.on('data', (d: Buffer) => {
      seen += d.toString();
      if (!seen.includes('Ready to accept connections')) return;
      child.off('exit', onExit);
      resolve();
    });
  });
  child.stdout!.resume();
  return { port, pid: child.pid!, stop: () => stopChild(child, exited) };
}

/** The same rows as the ingest drop, as RESP `SET key value` commands, into a file. */
export async function writeRespFile(path: string, rows: number): Promise<void> {
  const out = createWriteStream(path);
  const chunk: Buffer[] = [];
  const flush = async (): Promise<void> => {
    if (!out.write(Buffer.concat(chunk))) await once(out, 'drain');
    chunk.length = 0;
  };
  for (let i = 0; i < rows; i++) {
    const key = keyText(i);
    const value = valueBytes(i);
    chunk.push(Buffer.from(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n`, 'latin1'), value, CRLF);
    if (chunk.length >= 3000) await flush();
  }
  await flush();
  out.end();
  await once(out, 'finish');
}
const CRLF = Buffer.from('\r\n');

/** `redis-cli --pipe < file` into a fresh redis-server; checks every reply came back and DBSIZE. */
export async function measureRedisPipe(workDir: string, respFile: string, rows: number, fsync: AppendFsync): Promise<PipeFigures> {
  const redis = await startRedis(join(workDir, `redis-${fsync}-${Date.now()}`), fsync);
  try {
    const cpuBefore = await readCpuSeconds(redis.pid);
    const started = performance.now();
    const cli = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), '--pipe'], { stdio: ['pipe', 'pipe', 'pipe'] });
    createReadStream(respFile).pipe(cli.stdin!);
    const result = await collect(cli);
    const ms = performance.now() - started;
    const cpuAfter = await readCpuSeconds(redis.pid);
    const replies = /errors: (\d+), replies: (\d+)/.exec(result.stdout);
    if (result.code !== 0 || !replies || Number(replies[1]) !== 0 || Number(replies[2]) !== rows) {
      throw new Error(`redis-cli --pipe (exit ${result.code}) did not report ${rows} replies and 0 errors: ${result.stdout.trim()} ${result.stderr.trim()}`);
    }
    const size = await redisCli(redis.port, ['DBSIZE']);
    if (Number(size) !== rows) throw new Error(`redis holds ${size} keys after --pipe, expected ${rows}`);
    return {
      rows,
      ms,
      rowsPerSec: rows / (ms / 1000),
      serverCpuSeconds: cpuBefore === undefined || cpuAfter === undefined ? undefined : cpuAfter - cpuBefore,
      serverPeakRssMb: await readPeakRssMb(redis.pid),
    };
  } finally {
    await redis.stop();
  }
}

async function redisCli(port: number, args: string[]): Promise<string> {
  const result = await collect(spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  if (result.code !== 0) throw new Error(`redis-cli ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result.stdout.trim();
}

export interface RedisBenchmarkFigures {
  test: 'GET' | 'SET';
  concurrency: number;
  requests: number;
  opsPerSec: number;
}

/** redis-benchmark SET then GET (100-byte values, random keys) against a fresh AOF redis-server. */
export async function measureRedisBenchmark(workDir: string, fsync: AppendFsync, concurrency: number, requests: number): Promise<RedisBenchmarkFigures[]> {
  const redis = await startRedis(join(workDir, `redis-bench-${fsync}-${concurrency}-${Date.now()}`), fsync);
  try {
    const args = ['-h', '127.0.0.1', '-p', String(redis.port), '-t', 'set,get', '-n', String(requests), '-c', String(concurrency), '-d', '100', '-r', '1000000', '--csv'];
    const result = await collect(spawn('redis-benchmark', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    if (result.code !== 0) throw new Error(`redis-benchmark exited ${result.code}: ${result.stderr}`);
    const out: RedisBenchmarkFigures[] = [];
    for (const line of result.stdout.split('\n')) {
      const m = /^"(SET|GET)","([\d.]+)"/.exec(line.trim());
      if (m) out.push({ test: m[1] as 'GET' | 'SET', concurrency, requests, opsPerSec: Number(m[2]) });
    }
    if (out.length !== 2) throw new Error(`redis-benchmark printed no SET/GET figures: ${result.stdout}`);
    return out;
  } finally {
    await redis.stop();
  }
}

export interface CallRate {
  concurrency: number;
  calls: number;
  callsPerSec: number;
  p50Ms: number;
}

/** A no-op grpc-js server child and one channel to it: the transport ceiling of a unary call. */
export interface NoopGrpc {
  /** One no-op unary call (raw bytes both ways, 10 s deadline). */
  call(): Promise<void>;
  close(): Promise<void>;
}

/** Starts the no-op grpc-js server child and warms its channel up (200 calls). */
export async function startNoopGrpc(): Promise<NoopGrpc> {
  const port = await findFreePort();
  const child: ChildProcess = spawn(process.execPath, [NOOP_SERVER_JS, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[noop-grpc] ${d.toString()}`));
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  const close = async (): Promise<void> => {
    client.close();
    await stopChild(child, exited);
  };
  const call = (): Promise<void> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(NOOP_METHOD_PATH, rawBytes, rawBytes, EMPTY, { deadline: Date.now() + 10_000 }, (err) => (err ? reject(err) : resolve()));
    });
  try {
    await waitForReady(child);
    await runCalls(call, 1, 200);
  } catch (err) {
    await close();
    throw err;
  }
  return { call, close };
}

/** A no-op grpc-js server child; `calls` unary calls from `concurrency` workers on one channel, for each concurrency. */
export async function measureNoopGrpc(runs: Array<{ concurrency: number; calls: number }>): Promise<CallRate[]> {
  const noop = await startNoopGrpc();
  try {
    const out: CallRate[] = [];
    for (const run of runs) out.push({ concurrency: run.concurrency, ...(await runCalls(noop.call, run.concurrency, run.calls)) });
    return out;
  } finally {
    await noop.close();
  }
}
const EMPTY = Buffer.alloc(0);

/** `calls` calls of `call` from `concurrency` workers sharing one counter. */
export async function runCalls(call: (n: number) => Promise<void>, concurrency: number, calls: number): Promise<{ calls: number; callsPerSec: number; p50Ms: number }> {
  const latencies = new Float64Array(calls);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < calls) {
      const n = next++;
      const started = performance.now();
      await call(n);
      latencies[n] = performance.now() - started;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ms = performance.now() - started;
  latencies.sort();
  return { calls, callsPerSec: calls / (ms / 1000), p50Ms: latencies[Math.floor(calls / 2)]! };
}

export interface NaiveLoadFigures {
  rows: number;
  rowsPerSec: number;
  concurrency: number;
  nodeCpuSeconds: number | undefined;
  clientCpuSeconds: number;
}

/**
 * The naive loader: the ingest rows, one `StoreClient.put` (one Put RPC) per row, `concurrency` in
 * flight, into one real store node child (fsync per write, as it defaults) with 4 partitions.
 */
export async function measureNaiveLoader(workDir: string, rows: number, concurrency: number): Promise<NaiveLoadFigures> {
  const dir = join(workDir, `naive-${Date.now()}`);
  const cluster = await startBenchCluster(dir, 1, (nodes) => PartitionMap.fromSplitKeys(1, nodes, [1, 2, 3].map((q) => Buffer.from(keyText(Math.floor((q * rows) / 4))))));
  const client = new StoreClient({ seeds: cluster.addresses });
  try {
    await client.map();
    const node = cluster.nodes[0]!;
    const nodeBefore = await node.cpuSeconds();
    const clientBefore = process.cpuUsage();
    const { callsPerSec } = await runCalls(async (i) => {
      await client.put(Key.fromBytes(Buffer.from(keyText(i), 'latin1')), valueBytes(i));
    }, concurrency, rows);
    const clientUsage = process.cpuUsage(clientBefore);
    const nodeAfter = await node.cpuSeconds();
    let stored = 0;
    for (const n of await client.stats()) {
      if (!n.result.ok) throw n.result.error;
      for (const p of n.result.partitions) stored += p.approxCount;
    }
    if (stored !== rows) throw new Error(`naive loader: the node reports ${stored} rows stored, expected ${rows}`);
    return {
      rows,
      rowsPerSec: callsPerSec,
      concurrency,
      nodeCpuSeconds: nodeBefore === undefined || nodeAfter === undefined ? undefined : nodeAfter - nodeBefore,
      clientCpuSeconds: (clientUsage.user + clientUsage.system) / 1e6,
    };
  } finally {
    client.close();
    await cluster.stop();
  }
}
