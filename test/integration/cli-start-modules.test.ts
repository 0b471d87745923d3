import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// A command loads only what it runs: `--help` and commands that need no store node start without
// the store client (gRPC, protobuf), the job queues (BullMQ, ioredis), backup/restore/ingest
// (Parquet, Arrow, zstd), the coordinator, prom-client or the progress view. The modules are
// counted by bench/module-census.js (module hooks plus the CommonJS cache), in the real CLI child.

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin', 'shardpipe.js');
const CENSUS = pathToFileURL(join(ROOT, 'dist', 'bench', 'module-census.js')).href;

/** Loaded by commands that move data, never by the ones below. */
const HEAVY = [
  /\/dist\/(store|jobs|backup|restore|ingest|files|coordinator|metrics-server|gateway)\//,
  /\/node_modules\/(@grpc|@bufbuild|classic-level|bullmq|ioredis|prom-client|apache-arrow|hyparquet|parquet-wasm|log-update|@azure)\//,
];

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cli-start-modules-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function modulesOf(args: string[], name: string): Promise<{ code: number | null; modules: string[] }> {
  const out = join(dir, `${name}.txt`);
  const child = spawn(process.execPath, ['--import', CENSUS, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SHARDPIPE_BENCH_CENSUS_OUT: out } });
  child.stdout.resume();
  child.stderr.resume();
  const [code] = (await once(child, 'exit')) as [number | null];
  const lines = (await readFile(out, 'utf8')).split('\n').filter(Boolean);
  return { code, modules: lines.map((l) => l.slice(l.indexOf(' ') + 1)) };
}

describe('CLI start-up loads only what the command runs', { timeout: 60_000 }, () => {
  it.each([
    ['--help', ['--help']],
    ['ingest --help', ['ingest', '--help']],
    ['backup run --help', ['backup', 'run', '--help']],
    ['restore --help', ['restore', '--help']],
    ['worker --help', ['worker', '--help']],
    ['kv get --help', ['kv', 'get', '--help']],
    ['store start --help', ['store', 'start', '--help']],
    ['config print', ['config', 'print']],
  ])('%s loads no store, job queue, Parquet, backup, restore or coordinator module', async (name, args) => {
    const { code, modules } = await modulesOf(args, name.replace(/\W+/g, '-'));
    expect(code).toBe(0);
    // The census saw the CLI itself: an empty list would prove nothing.
    expect(modules.some((m) => m.includes('/dist/cli/program.js'))).toBe(true);
    expect(modules.some((m) => m.includes('/node_modules/commander/'))).toBe(true);
    expect(modules.filter((m) => HEAVY.some((re) => re.test(m)))).toEqual([]);
  });

  it('a command that runs them still loads them (the census sees lazily imported modules)', async () => {
    // `ingest` with no Redis reachable fails after it has loaded its modules; the exit code is not the point.
    const { modules } = await modulesOf(['ingest', join(dir, 'no-such-drop'), '--key-column', 'k', '--redis', 'redis://127.0.0.1:1', '--no-local-worker'], 'ingest-run');
    expect(modules.some((m) => /\/dist\/jobs\/index\.js$/.test(m))).toBe(true);
    expect(modules.some((m) => m.includes('/node_modules/bullmq/'))).toBe(true);
    expect(modules.some((m) => /\/dist\/store\/index\.js$/.test(m))).toBe(true);
  });
});
