import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { acceptsConnections, findFreePort } from '../../common/index.js';
import { childPids } from '../helpers/proc-children.js';
import { CLI, runCli } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

describe('shardpipe demo and shardpipe up', () => {
  let tmp: TempDir;

  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-demo-test-');
  });

  /** Stops an `up` left running by a failed assertion (SIGINT: it stops its own children). */
  let running: ChildProcess | undefined;
  afterEach(async () => {
    if (running && running.exitCode === null && running.signalCode === null) {
      const exited = once(running, 'exit');
      running.kill('SIGINT');
      await exited;
    }
    running = undefined;
  });

  afterAll(async () => {
    await tmp.remove();
  });

  it('demo --rows 60000 runs chains of 3 on a private etcd, SIGKILLs a node during the ingest (rows lost 0, replicas consistent), backs up, wipes, restores into another partitioning, verifies and exits 0', { timeout: 240_000 }, async () => {
    const r = await runCli(['demo', '--rows', '60000', '--files', '4', '--json'], { SHARDPIPE_REDIS_URL: '', SHARDPIPE_SEEDS: '' });
    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      verified: boolean;
      dashboard: string;
      replicas: number;
      rowsLost: number;
      failover: { node: string; chains: Array<{ partition: number; role: string }>; killedAtRows: number; failoverMs: number; mapVersion: number; chainsChanged: number } | null;
      stages: Array<{ stage: string; rows: number; detail: string }>;
    };
    expect(summary.verified).toBe(true);
    expect(summary.dashboard).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(summary.stages.map((s) => s.stage)).toEqual(['ingest', 'check', 'backup', 'wipe', 'restore']);
    for (const s of summary.stages.filter((x) => x.stage !== 'wipe')) expect(s.rows, s.stage).toBe(60_000);
    expect(summary.replicas).toBe(3);
    expect(summary.rowsLost).toBe(0);
    // The kill happened mid-ingest, to a node that was head, middle and tail of chains, and the coordinator dropped it.
    const f = summary.failover!;
    expect(f.node).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(f.killedAtRows).toBeGreaterThan(0);
    expect(f.killedAtRows).toBeLessThan(60_000);
    expect(new Set(f.chains.map((c) => c.role))).toEqual(new Set(['head', 'middle', 'tail']));
    expect(f.chainsChanged).toBe(6);
    expect(f.failoverMs).toBeGreaterThan(0);
    expect(summary.stages.find((s) => s.stage === 'check')!.detail).toMatch(/^consistent: 6 partitions, 12 serving replicas, rows lost 0/);
    expect(summary.stages.find((s) => s.stage === 'restore')!.detail).toMatch(/^verified/);
    // Everything it started is gone: the dashboard no longer answers.
    const port = Number(new URL(summary.dashboard).port);
    expect(await acceptsConnections(port)).toBe(false);
  });

  it('demo --replicas 1 keeps the single-replica mode (static map, no etcd, no kill) and verifies', { timeout: 240_000 }, async () => {
    const r = await runCli(['demo', '--rows', '20000', '--files', '2', '--replicas', '1', '--json'], { SHARDPIPE_REDIS_URL: '', SHARDPIPE_SEEDS: '' });
    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as { verified: boolean; replicas: number; rowsLost: number; failover: unknown; stages: Array<{ stage: string; detail: string }> };
    expect(summary).toMatchObject({ verified: true, replicas: 1, rowsLost: 0, failover: null });
    expect(summary.stages.find((s) => s.stage === 'check')!.detail).toMatch(/^consistent: 6 partitions, 6 serving replicas/);
  });

  it('up serves the dashboard and a working cluster (2 nodes: chains of 2 on a private etcd), locked with generated tokens, until SIGINT, then stops everything and exits 0', { timeout: 120_000 }, async () => {
    const basePort = await findFreePort();
    const child = spawn(process.execPath, [CLI, 'up', '--base-port', String(basePort), '--metrics-port', '0', '--data-dir', tmp.path, '--nodes', '2'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SHARDPIPE_REDIS_URL: '', MALLOC_ARENA_MAX: undefined },
    });
    running = child;
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const ready = await new Promise<{ dashboard: string; nodeMetrics: string[]; tokenFile: string; replicas: number; etcd?: string; SHARDPIPE_SEEDS: string; SHARDPIPE_REDIS_URL_FILE: string; SHARDPIPE_TOKEN_FILE: string }>((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        if (line.includes('"event":"ready"')) resolve(JSON.parse(line));
      });
      child.once('exit', (code) => reject(new Error(`up exited ${code}: ${stderr}`)));
    });
    expect(ready.SHARDPIPE_SEEDS).toBe(`127.0.0.1:${basePort},127.0.0.1:${basePort + 1}`);
    expect(ready.replicas).toBe(2);
    expect(ready.etcd).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    // The processes up starts get two glibc malloc arenas (common/malloc-arenas.ts).
    const started = await childrenOf(child.pid!);
    const nodes = started.filter((c) => c.argv.includes('store') && c.argv.includes('start'));
    expect(nodes, JSON.stringify(started.map((c) => c.argv.slice(1, 3)))).toHaveLength(2);
    for (const n of nodes) expect(n.env.get('MALLOC_ARENA_MAX'), n.argv.join(' ')).toBe('2');
    const status = await runCli(['cluster', 'status', '--etcd', ready.etcd!, '--json'], {});
    expect(status.code, status.stderr).toBe(0);
    const chains = (JSON.parse(status.stdout) as { replicas: number; partitions: Array<{ chain: Array<{ node: string; state: string; live: boolean }> }> });
    expect(chains.replicas).toBe(2);
    expect(chains.partitions).toHaveLength(6);
    for (const p of chains.partitions) {
      expect(p.chain.map((x) => x.state)).toEqual(['serving', 'serving']);
      expect(p.chain.every((x) => x.live)).toBe(true);
    }
    // Locked: a generated token file (owner-only) guards nodes, /metrics and the dashboard.
    expect((await stat(ready.tokenFile)).mode & 0o777).toBe(0o600);
    // The secrets are shown as owner-only files holding them, never themselves.
    for (const file of [ready.SHARDPIPE_TOKEN_FILE, ready.SHARDPIPE_REDIS_URL_FILE]) expect((await stat(file)).mode & 0o777, file).toBe(0o600);
    const adminToken = (await readFile(ready.SHARDPIPE_TOKEN_FILE, 'utf8')).trim();
    expect(adminToken).toMatch(/^[0-9a-f]{64}$/);
    const redisUrl = (await readFile(ready.SHARDPIPE_REDIS_URL_FILE, 'utf8')).trim();
    const redisPassword = decodeURIComponent(new URL(redisUrl).password);
    expect(redisPassword.length).toBeGreaterThanOrEqual(16);
    const anonymous = await runCli(['kv', 'put', 'hello', 'world'], { SHARDPIPE_SEEDS: ready.SHARDPIPE_SEEDS, SHARDPIPE_TOKEN: '' });
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toContain('STORE_UNAUTHENTICATED');
    // What up printed is enough: the exported files point the CLI at the stack (nodes and Redis).
    const fromFiles = { SHARDPIPE_SEEDS: ready.SHARDPIPE_SEEDS, SHARDPIPE_TOKEN: '', SHARDPIPE_TOKEN_FILE: ready.SHARDPIPE_TOKEN_FILE, SHARDPIPE_REDIS_URL: '', SHARDPIPE_REDIS_URL_FILE: ready.SHARDPIPE_REDIS_URL_FILE };
    const put = await runCli(['kv', 'put', 'hello', 'world'], fromFiles);
    expect(put.code, put.stderr).toBe(0);
    const schedules = await runCli(['backup', 'schedule', 'list', '--json'], fromFiles);
    expect(schedules.code, schedules.stderr).toBe(0);
    expect(JSON.parse(schedules.stdout)).toEqual({ schedules: [] });
    const auth = { headers: { authorization: `Bearer ${adminToken}` } };
    expect((await fetch(ready.dashboard)).status).toBe(401);
    const page = await fetch(ready.dashboard, auth);
    expect(page.status).toBe(200);
    expect(ready.nodeMetrics).toHaveLength(2);
    expect((await fetch(ready.nodeMetrics[0]!)).status).toBe(401);
    const nodeMetrics = await (await fetch(ready.nodeMetrics[0]!, auth)).text();
    expect(nodeMetrics).toContain('# TYPE');
    const deadline = Date.now() + 30_000;
    let entries = 0;
    while (Date.now() < deadline && entries < 1) {
      const cluster = (await (await fetch(new URL('api/cluster', ready.dashboard), auth)).json()) as { entries?: number };
      entries = cluster.entries ?? 0;
      if (entries < 1) await new Promise((r) => setTimeout(r, 500));
    }
    expect(entries).toBe(1);
    // The dashboard reads the private etcd for its "Data movement" panel.
    const movement = (await (await fetch(new URL('api/movement', ready.dashboard), auth)).json()) as { etcd: string; nodes: unknown[] };
    expect(movement.etcd).toBe('ok');
    expect(movement.nodes).toHaveLength(2);
    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code, stderr).toBe(0);
    // The export lines name the files; neither output carries a secret.
    expect(stderr).toContain(`export SHARDPIPE_TOKEN_FILE=${ready.SHARDPIPE_TOKEN_FILE}`);
    expect(stderr).toContain(`export SHARDPIPE_REDIS_URL_FILE=${ready.SHARDPIPE_REDIS_URL_FILE}`);
    const tokens = (await readFile(ready.tokenFile, 'utf8')).split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.split(' ')[1]!);
    expect(tokens.length).toBeGreaterThanOrEqual(3);
    for (const secret of [...tokens, redisPassword]) {
      expect(stdout).not.toContain(secret);
      expect(stderr).not.toContain(secret);
    }
    expect(await acceptsConnections(basePort)).toBe(false);
    expect(await acceptsConnections(basePort + 1)).toBe(false);
    expect(await acceptsConnections(Number(new URL(ready.etcd!).port))).toBe(false);
  });
});

/** The live child processes of `pid`, with their argv and environment (from /proc, as cli-lifecycle finds Redis). */
async function childrenOf(pid: number): Promise<Array<{ argv: string[]; env: Map<string, string> }>> {
  const found: Array<{ argv: string[]; env: Map<string, string> }> = [];
  for (const child of await childPids(pid)) {
    const argv = (await readFile(`/proc/${child}/cmdline`, 'utf8')).split('\0').filter(Boolean);
    const env = new Map((await readFile(`/proc/${child}/environ`, 'utf8')).split('\0').filter(Boolean).map((kv): [string, string] => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    found.push({ argv, env });
  }
  return found;
}
