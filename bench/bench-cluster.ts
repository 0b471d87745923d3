import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { findFreePort } from '../common/index.js';
import { PrivateRedis } from '../jobs/index.js';
import { PartitionMap, StoreClient, displayBytes } from '../store/index.js';
import { readCpuSeconds, readPeakRssMb, readRssMb, reapedChildrenCpuSeconds, stopChild, waitForReady } from './bench-processes.js';
import { DelayProxy } from './delay-proxy.js';
import { MemorySampler, type MemoryAtPeak } from './bench-memory.js';

// What the ingest benchmarks share: a private Redis and a local cluster of store node children, and
// `shardpipe ingest` run as a child process whose memory is sampled.

export const MAIN_JS = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');
/** The user's entry point, `shardpipe` (bin/shardpipe.js → dist/cli/main.js): what a user's wall time includes. */
export const BIN_JS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'shardpipe.js');
const RSS_POLL_MS = 20;

export interface NodeProcess {
  address: string;
  dataDir: string;
  pid: number;
  peakRssMb(): Promise<number | undefined>;
  /** Anonymous and file-backed memory at the node's largest RSS so far (bench-memory.ts). */
  memoryAtPeak(): MemoryAtPeak | undefined;
  /** User + system CPU seconds the node has used so far. */
  cpuSeconds(): Promise<number | undefined>;
  stop(): Promise<void>;
}

export interface BenchClusterOptions {
  /**
   * One-way delay in ms added by a TCP proxy in front of every node (default 0: no proxy). The map
   * then names the proxies' addresses, so every client of the cluster goes through them.
   */
  delayMs?: number;
  /** Node.js flags for the node children, before the script (e.g. `--cpu-prof`). Default none. */
  nodeArgs?: readonly string[];
  /** More `store start` flags for every node (e.g. `--flow-control-window N`). Default none. */
  storeArgs?: readonly string[];
}

export interface PartitionRows {
  id: number;
  node: string;
  range: string;
  rows: number;
}

/** A private redis-server and `nodes` store node children sharing one map. */
export interface BenchCluster {
  redisUrl: string;
  addresses: string[];
  map: PartitionMap;
  nodes: NodeProcess[];
  /** Stops the nodes, then Redis. */
  stop(): Promise<void>;
}

export async function startBenchCluster(workDir: string, nodeCount: number, mapOf: (addresses: string[]) => PartitionMap, options: BenchClusterOptions = {}): Promise<BenchCluster> {
  const clusterDir = join(workDir, 'cluster');
  await mkdir(clusterDir, { recursive: true });
  const redis = await PrivateRedis.start({ dataDir: join(workDir, 'redis') });
  const nodes: NodeProcess[] = [];
  const proxies: DelayProxy[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()));
    await Promise.all(proxies.map((p) => p.close()));
    await redis.stop();
  };
  try {
    const addresses = await Promise.all(Array.from({ length: nodeCount }, async () => `127.0.0.1:${await findFreePort()}`));
    const mapFile = join(clusterDir, 'map.json');
    const map = mapOf(addresses);
    await writeFile(mapFile, JSON.stringify(map.toJson()));
    const delayMs = options.delayMs ?? 0;
    const starts = await Promise.allSettled(
      addresses.map(async (address, i) => {
        if (delayMs === 0) return startNode(address, mapFile, join(clusterDir, `node-${i}`), undefined, options.nodeArgs, options.storeArgs);
        const listenPort = await findFreePort();
        proxies.push(await DelayProxy.start(Number(address.split(':')[1]), { host: '127.0.0.1', port: listenPort }, delayMs));
        return startNode(address, mapFile, join(clusterDir, `node-${i}`), `127.0.0.1:${listenPort}`, options.nodeArgs, options.storeArgs);
      }),
    );
    for (const s of starts) if (s.status === 'fulfilled') nodes.push(s.value);
    const failed = starts.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    return { redisUrl: redis.url, addresses, map, nodes, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function startNode(address: string, mapFile: string, dataDir: string, listen?: string, nodeArgs: readonly string[] = [], storeArgs: readonly string[] = []): Promise<NodeProcess> {
  const args = [...nodeArgs, MAIN_JS, 'store', 'start', '--map', mapFile, '--node', address, '--data', dataDir, '--log-level', 'warn', ...storeArgs];
  if (listen !== undefined) args.push('--listen', listen);
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
  const memory = MemorySampler.start(child.pid!);
  return {
    address,
    dataDir,
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

export interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function collect(child: ChildProcess): Promise<ChildResult> {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The memory of a child over its life. */
export interface RssSamples {
  /** Largest VmHWM seen: the peak up to RSS_POLL_MS before the exit. */
  peakRssMb: number | undefined;
  /** Largest VmRSS seen in each tenth of the run (wall time): whether memory grows as the input is read. */
  peakRssMbByTenth: number[];
}

/** Samples the child's RSS until it exits. */
export async function sampleRss(child: ChildProcess): Promise<RssSamples> {
  const samples: Array<{ at: number; mb: number }> = [];
  let peak: number | undefined;
  const started = performance.now();
  if (child.pid === undefined) return { peakRssMb: undefined, peakRssMbByTenth: [] };
  while (child.exitCode === null && child.signalCode === null) {
    const [hwm, rss] = await Promise.all([readPeakRssMb(child.pid), readRssMb(child.pid)]);
    if (hwm !== undefined) peak = Math.max(peak ?? 0, hwm);
    if (rss !== undefined) samples.push({ at: performance.now() - started, mb: rss });
    await sleep(RSS_POLL_MS);
  }
  const total = performance.now() - started;
  const byTenth = Array.from({ length: 10 }, () => 0);
  for (const s of samples) {
    const tenth = Math.min(9, Math.floor((s.at / total) * 10));
    byTenth[tenth] = Math.max(byTenth[tenth]!, s.mb);
  }
  return { peakRssMb: peak, peakRssMbByTenth: byTenth };
}

/** The fields of `shardpipe ingest --json` the benchmarks read. */
export interface IngestJsonReport {
  rowsIngested: number;
  rowsRejected: number;
  filesOk: number;
  filesFailed: number;
  durationMs: number;
  rowsPerSecond: number;
}

export function parseReport(stdout: string): IngestJsonReport | undefined {
  for (const line of stdout.split('\n').reverse()) {
    try {
      const parsed = JSON.parse(line) as Partial<IngestJsonReport>;
      if (typeof parsed.rowsIngested === 'number') return parsed as IngestJsonReport;
    } catch {
      // not the report line
    }
  }
  return undefined;
}

export interface IngestRun extends RssSamples {
  /** The ingest child's anonymous and file-backed memory at its largest sampled RSS. */
  memoryAtPeak: MemoryAtPeak | undefined;
  ms: number;
  /** User + system CPU seconds of the ingest child, from exit to exit. */
  cpuSeconds: number;
  code: number | null;
  report: IngestJsonReport;
}

export interface RunIngestOptions {
  /**
   * The child's working directory (created if missing): with default flags its data folder
   * (private data, rejects) is `<cwd>/.shardpipe`, as for a user running the command there.
   */
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Node options for the child before the script, e.g. `--cpu-prof --cpu-prof-dir DIR`. Default none. */
  nodeArgs?: string[];
}

/**
 * The plain command a user types, `shardpipe ingest SOURCE ...extraArgs --seeds A,B,C --redis URL
 * --wait --json` (bin/shardpipe.js, default flags otherwise), as a child against the cluster; fails
 * unless it ingested exactly `rows` rows and exited 0. The wall time runs from spawn to exit: CLI
 * start included.
 */
export async function runIngest(cluster: BenchCluster, source: string, rows: number, extraArgs: string[], options: RunIngestOptions): Promise<IngestRun> {
  const args = [...(options.nodeArgs ?? []), BIN_JS, 'ingest', source, ...extraArgs, '--seeds', cluster.addresses.join(','), '--redis', cluster.redisUrl, '--wait', '--json'];
  await mkdir(options.cwd, { recursive: true });
  const cpuBefore = await reapedChildrenCpuSeconds();
  const started = performance.now();
  const child = spawn(process.execPath, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
  const memory = child.pid === undefined ? undefined : MemorySampler.start(child.pid);
  const [result, rss] = await Promise.all([collect(child), sampleRss(child)]);
  const ms = performance.now() - started;
  const memoryAtPeak = await memory?.stop();
  const cpuSeconds = (await reapedChildrenCpuSeconds()) - cpuBefore;
  const warnings = result.stderr.split('\n').filter((line) => line.trim() !== '' && !isQuietLogLine(line));
  if (warnings.length > 0) process.stderr.write(`[ingest] ${warnings.join('\n[ingest] ')}\n`);
  const report = parseReport(result.stdout);
  if (report === undefined) throw new Error(`ingest (exit code ${result.code}) printed no JSON report; stdout: ${result.stdout.trim() || '(empty)'}`);
  if (report.rowsIngested !== rows) {
    throw new Error(`ingest reports rowsIngested ${report.rowsIngested}, expected ${rows} (exit code ${result.code}, rejected ${report.rowsRejected}, files failed ${report.filesFailed}): ${JSON.stringify(report)}`);
  }
  if (result.code !== 0) throw new Error(`ingest exited with code ${result.code} although it reports all ${rows} rows ingested: ${JSON.stringify(report)}`);
  return { ...rss, memoryAtPeak, ms, cpuSeconds, code: result.code, report };
}

/** A JSON log line below warn (pino levels: 30 = info): the default log level prints those, the bench need not echo them. */
function isQuietLogLine(line: string): boolean {
  try {
    const level = (JSON.parse(line) as { level?: unknown }).level;
    return typeof level === 'number' && level < 40;
  } catch {
    return false;
  }
}

/** Rows each partition holds, as the nodes report them: the check that the load landed, and where. */
export async function partitionRows(cluster: BenchCluster): Promise<PartitionRows[]> {
  const client = new StoreClient({ seeds: cluster.addresses });
  try {
    const out: PartitionRows[] = [];
    for (const node of await client.stats()) {
      if (!node.result.ok) throw node.result.error;
      for (const p of node.result.partitions) {
        const part = cluster.map.byId(p.id);
        out.push({ id: p.id, node: part?.node ?? '?', range: part ? `[${displayBytes(part.start) || '−∞'}, ${displayBytes(part.end) || '+∞'})` : '?', rows: p.approxCount });
      }
    }
    return out.sort((a, b) => a.id - b.id);
  } finally {
    client.close();
  }
}
