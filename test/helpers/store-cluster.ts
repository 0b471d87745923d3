import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { findFreePort } from '../../common/index.js';
import { PartitionMap } from '../../store/index.js';

export const CLI = resolve(import.meta.dirname, '../../dist/cli/main.js');

/** A store node running as a real child process (`shardpipe store start`). */
export class NodeProcess {
  child: ChildProcess | undefined;
  stderr = '';
  /** The node's ready line, e.g. `{ port, mapVersion, metricsPort }` (with --metrics-port). */
  ready: Record<string, unknown> = {};

  constructor(
    readonly address: string,
    readonly dataDir: string,
    /** Omitted: the node must start from the map it persisted. */
    readonly mapFile: string | undefined,
    readonly extraArgs: string[] = [],
    /** Extra environment of the node process (e.g. a fault-injection switch). */
    readonly env: Record<string, string> = {},
  ) {}

  /** Starts the node and resolves once it prints its ready line. */
  async start(): Promise<void> {
    const child = spawn(process.execPath, [CLI, 'store', 'start', ...(this.mapFile ? ['--map', this.mapFile] : []), '--node', this.address, '--data', this.dataDir, '--log-format', 'json', '--log-level', 'warn', ...this.extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...this.env },
    });
    this.child = child;
    this.stderr = '';
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    const lines = createInterface({ input: child.stdout! });
    const ready = new Promise<void>((resolveReady, reject) => {
      lines.on('line', (line) => {
        if (line.includes('"event":"ready"')) {
          this.ready = JSON.parse(line) as Record<string, unknown>;
          resolveReady();
        }
      });
      child.once('exit', (code) => reject(new Error(`node ${this.address} exited with ${code} before ready: ${this.stderr}`)));
    });
    await ready;
  }

  /** SIGTERM and wait: resolves the exit code. */
  async stop(): Promise<number | null> {
    return this.signal('SIGTERM');
  }

  /** SIGKILL and wait. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  private async signal(sig: NodeJS.Signals): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = once(child, 'exit') as Promise<[number | null]>;
    child.kill(sig);
    const [code] = await exited;
    this.child = undefined;
    return code;
  }
}

/** Several node processes sharing one map file, each with its own data folder, in a temp dir. */
export class StoreCluster {
  private constructor(
    readonly dir: string,
    readonly map: PartitionMap,
    readonly mapFile: string,
    readonly nodes: NodeProcess[],
  ) {}

  /** `replicas` > 1: a static map of chains of that many nodes (rotations of the node list, heads spread). */
  static async start(options: { nodes: number; partitions: number; extraArgs?: string[]; addresses?: string[]; replicas?: number }): Promise<StoreCluster> {
    const dir = await mkdtemp(join(tmpdir(), 'shardpipe-test-'));
    const addresses = options.addresses ?? (await Promise.all(Array.from({ length: options.nodes }, async () => `127.0.0.1:${await findFreePort()}`)));
    const even = PartitionMap.evenlySplit(1, addresses, options.partitions);
    const replicas = options.replicas ?? 1;
    const map =
      replicas === 1
        ? even
        : PartitionMap.create(
            1,
            even.partitions.map((p, i) => ({ id: p.id, start: p.start, end: p.end, chain: Array.from({ length: replicas }, (_, k) => ({ node: addresses[(i + k) % addresses.length]!, state: 'serving' as const })) })),
            { replicas },
          );
    const mapFile = join(dir, 'map.json');
    await writeFile(mapFile, JSON.stringify(map.toJson()));
    const nodes = addresses.map((a, i) => new NodeProcess(a, join(dir, `node-${i}`), mapFile, options.extraArgs));
    const cluster = new StoreCluster(dir, map, mapFile, nodes);
    try {
      await Promise.all(nodes.map((n) => n.start()));
    } catch (err) {
      await cluster.close();
      throw err;
    }
    return cluster;
  }

  get seeds(): string[] {
    return this.nodes.map((n) => n.address);
  }

  async close(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill()));
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Runs the CLI to completion: exit code, stdout, stderr. */
/**
 * Runs the CLI to its exit. `timeoutMs`: SIGKILL it after that long and answer code null with what
 * it printed so far (a test that waits on several commands can then say which one hung, and where).
 */
export async function runCli(args: string[], env: Record<string, string> = {}, opts: { timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => ((timedOut = true), child.kill('SIGKILL')), opts.timeoutMs);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr, timedOut };
}

/** Sorted 16-byte keys spread over the keyspace with 100-byte values, in chunks. */
export function sortedRows(count: number, seed = 0, chunk = 5000): Array<Array<{ key: Buffer; value: Buffer }>> {
  const out: Array<Array<{ key: Buffer; value: Buffer }>> = [];
  const step = 2 ** 48 / count;
  for (let from = 0; from < count; from += chunk) {
    const rows: Array<{ key: Buffer; value: Buffer }> = [];
    for (let i = from; i < Math.min(count, from + chunk); i++) {
      const key = Buffer.alloc(16);
      key.writeUIntBE(Math.floor(i * step), 0, 6);
      key.writeUInt32BE(i, 12);
      const value = Buffer.alloc(100, 65 + ((i + seed) % 26));
      value.writeUInt32BE(i, 0);
      value.writeUInt32BE(seed, 4);
      rows.push({ key, value });
    }
    out.push(rows);
  }
  return out;
}
