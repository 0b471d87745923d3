/**
 * CLI start-up benchmark (a measurement, not a test).
 *
 * Runs short `shardpipe` commands as children, one at a time, each `--reps` times (default 5):
 * `--help`, `ingest --help`, `kv get --help`, and `kv get K` against a real store node (one node,
 * one partition, started by the bench, K written first). For each it prints the median (and
 * spread) of the child's CPU seconds (user + system, from this process's reaped-children times)
 * and wall time, and the modules it loads (ES modules and CommonJS modules, counted by
 * bench/module-census.ts in one extra, unmeasured run).
 *
 * Beside each, in the same run:
 *   - baseline: a bare `node -e ''` start;
 *   - eager peer: the same command with every heavy folder (store/, jobs/, backup/, restore/,
 *     ingest/, files/, coordinator/) and prom-client, log-update imported before the CLI starts
 *     (`--import`) — the modules the CLI loaded up front before its commands loaded them in their
 *     action handlers. Ratio = eager ÷ CLI.
 *   - with `--other-bin FILE`: another build's `bin/shardpipe.js` (e.g. an older commit's, built in
 *     its own checkout) run the same way. Ratio = other ÷ CLI.
 *
 * Run after `npx tsc -p tsconfig.json`: node dist/bench/cli-start-bench.js [--reps N] [--other-bin FILE]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Key, PartitionMap, StoreClient } from '../store/index.js';
import { parseBenchArgs } from './bench-args.js';
import { BIN_JS, startBenchCluster } from './bench-cluster.js';
import { fixed, int, roundNumbers, table } from './bench-format.js';
import { reapedChildrenCpuSeconds } from './bench-processes.js';
import { median } from './bench-stats.js';
import { MODULE_CENSUS_URL, parseCensus } from './module-census.js';

const DIST = join(BIN_JS, '..', '..', 'dist');
const HEAVY = [...['store', 'jobs', 'backup', 'restore', 'ingest', 'files', 'coordinator'].map((f) => pathToFileURL(join(DIST, f, 'index.js')).href), import.meta.resolve('prom-client'), import.meta.resolve('log-update')];
// A data: URL has no folder to resolve names from: every module goes by its absolute URL.
const EAGER_PRELOAD = `data:text/javascript,${encodeURIComponent(HEAVY.map((url) => `await import(${JSON.stringify(url)});`).join(''))}`;

interface Sample {
  cpuSeconds: number;
  wallMs: number;
}

interface Peer {
  esm: number;
  cjs: number;
  cpuSeconds: number[];
  wallMs: number[];
}

interface Row {
  command: string;
  other?: Peer;
  esm: number;
  cjs: number;
  cpuSeconds: number[];
  wallMs: number[];
  eagerEsm: number;
  eagerCjs: number;
  eagerCpuSeconds: number[];
  eagerWallMs: number[];
}

async function runOnce(nodeArgs: string[], args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Sample> {
  const cpuBefore = await reapedChildrenCpuSeconds();
  const started = performance.now();
  const child = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderr = '';
  child.stdout.resume();
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  });
  const wallMs = performance.now() - started;
  if (code !== 0) throw new Error(`node ${[...nodeArgs, ...args].join(' ')} exited ${code}: ${stderr.slice(0, 2000)}`);
  return { cpuSeconds: (await reapedChildrenCpuSeconds()) - cpuBefore, wallMs };
}

async function census(nodeArgs: string[], args: string[], workDir: string, n: number): Promise<{ esm: number; cjs: number }> {
  const out = join(workDir, `census-${n}.txt`);
  await runOnce(['--import', MODULE_CENSUS_URL, ...nodeArgs], args, { ...process.env, SHARDPIPE_BENCH_CENSUS_OUT: out });
  const c = parseCensus(await readFile(out, 'utf8'));
  // Less this bench's own census module.
  return { esm: c.esm.filter((u) => u !== MODULE_CENSUS_URL).length, cjs: c.cjs.length };
}

async function main(): Promise<void> {
  const { values } = parseBenchArgs('node dist/bench/cli-start-bench.js [--reps N (default 5)] [--other-bin FILE (another build\'s bin/shardpipe.js, run as a peer)]', {
    options: { reps: { type: 'string', default: '5' }, 'other-bin': { type: 'string' } },
  });
  const otherBin = values['other-bin'];
  const reps = Number(values.reps);
  if (!Number.isSafeInteger(reps) || reps < 1) throw new RangeError(`--reps must be a whole number ≥ 1, got ${values.reps}`);
  const workDir = await mkdtemp(join(tmpdir(), 'shardpipe-cli-start-bench-'));
  const cluster = await startBenchCluster(workDir, 1, (addresses) => PartitionMap.evenlySplit(1, addresses, 1));
  try {
    const client = new StoreClient({ seeds: cluster.addresses });
    await client.put(Key.fromBytes(Buffer.from('bench-key')), Buffer.from('bench-value'));
    client.close();
    const commands: Array<{ name: string; args: string[] }> = [
      { name: '--help', args: ['--help'] },
      { name: 'ingest --help', args: ['ingest', '--help'] },
      { name: 'kv get --help', args: ['kv', 'get', '--help'] },
      { name: 'kv get K (one node)', args: ['kv', 'get', 'bench-key', '--seeds', cluster.addresses[0]!] },
    ];
    let n = 0;
    const bare: Sample[] = [];
    const rows: Row[] = [];
    for (const c of commands) {
      const own = await census([], [BIN_JS, ...c.args], workDir, n++);
      const eager = await census(['--import', EAGER_PRELOAD], [BIN_JS, ...c.args], workDir, n++);
      const other = otherBin === undefined ? undefined : { ...(await census([], [otherBin, ...c.args], workDir, n++)), cpuSeconds: [], wallMs: [] };
      rows.push({ command: c.name, esm: own.esm, cjs: own.cjs, eagerEsm: eager.esm, eagerCjs: eager.cjs, cpuSeconds: [], wallMs: [], eagerCpuSeconds: [], eagerWallMs: [], other });
    }
    process.stderr.write(`${reps} repetitions of ${commands.length} commands, the eager peer and a bare node start, interleaved…\n`);
    for (let r = 0; r < reps; r++) {
      bare.push(await runOnce(['-e', ''], []));
      for (const [i, c] of commands.entries()) {
        const row = rows[i]!;
        const own = await runOnce([], [BIN_JS, ...c.args]);
        row.cpuSeconds.push(own.cpuSeconds);
        row.wallMs.push(own.wallMs);
        const eager = await runOnce(['--import', EAGER_PRELOAD], [BIN_JS, ...c.args]);
        row.eagerCpuSeconds.push(eager.cpuSeconds);
        row.eagerWallMs.push(eager.wallMs);
        if (row.other !== undefined) {
          const other = await runOnce([], [otherBin!, ...c.args]);
          row.other.cpuSeconds.push(other.cpuSeconds);
          row.other.wallMs.push(other.wallMs);
        }
      }
    }
    printReport(reps, rows, bare, otherBin);
  } finally {
    await cluster.stop();
    await rm(workDir, { recursive: true, force: true });
  }
}

function spread(values: readonly number[], digits: number): string {
  return `${fixed(Math.min(...values), digits)}–${fixed(Math.max(...values), digits)}`;
}

function printReport(reps: number, rows: Row[], bare: Sample[], otherBin: string | undefined): void {
  const bareCpu = median(bare.map((b) => b.cpuSeconds));
  const bareWall = median(bare.map((b) => b.wallMs));
  process.stdout.write(
    `CLI start-up: \`node bin/shardpipe.js …\`, medians of ${reps} (spread); CPU = user + system s of the child\n` +
      table(
        ['command', 'modules ESM + CJS', 'CPU s', 'wall ms', 'eager peer: modules', 'eager CPU s', 'eager wall ms', 'eager ÷ CLI, CPU', 'eager ÷ CLI, wall'],
        [
          ...rows.map((r) => {
            const cpu = median(r.cpuSeconds);
            const wall = median(r.wallMs);
            const eCpu = median(r.eagerCpuSeconds);
            const eWall = median(r.eagerWallMs);
            return [
              r.command,
              `${int(r.esm)} + ${int(r.cjs)}`,
              `${fixed(cpu, 2)} (${spread(r.cpuSeconds, 2)})`,
              `${int(wall)} (${spread(r.wallMs, 0)})`,
              `${int(r.eagerEsm)} + ${int(r.eagerCjs)}`,
              `${fixed(eCpu, 2)} (${spread(r.eagerCpuSeconds, 2)})`,
              `${int(eWall)} (${spread(r.eagerWallMs, 0)})`,
              `${fixed(eCpu / cpu, 2)}×`,
              `${fixed(eWall / wall, 2)}×`,
            ];
          }),
          ['baseline: node -e \'\'', '-', `${fixed(bareCpu, 2)} (${spread(bare.map((b) => b.cpuSeconds), 2)})`, `${int(bareWall)} (${spread(bare.map((b) => b.wallMs), 0)})`, '', '', '', '', ''],
        ],
      ) +
      '\n',
  );
  if (otherBin !== undefined) {
    process.stdout.write(
      `\nother build: ${otherBin}\n` +
        table(
          ['command', 'modules ESM + CJS', 'CPU s', 'wall ms', 'other ÷ CLI, CPU', 'other ÷ CLI, wall'],
          rows.map((r) => {
            const o = r.other!;
            return [r.command, `${int(o.esm)} + ${int(o.cjs)}`, `${fixed(median(o.cpuSeconds), 2)} (${spread(o.cpuSeconds, 2)})`, `${int(median(o.wallMs))} (${spread(o.wallMs, 0)})`, `${fixed(median(o.cpuSeconds) / median(r.cpuSeconds), 2)}×`, `${fixed(median(o.wallMs) / median(r.wallMs), 2)}×`];
          }),
        ) +
        '\n',
    );
  }
  const figures = {
    reps,
    otherBin,
    baseline: { cpuSeconds: bareCpu, wallMs: bareWall },
    commands: rows.map((r) => ({
      command: r.command,
      modules: { esm: r.esm, cjs: r.cjs },
      cpuSeconds: median(r.cpuSeconds),
      wallMs: median(r.wallMs),
      eager: { modules: { esm: r.eagerEsm, cjs: r.eagerCjs }, cpuSeconds: median(r.eagerCpuSeconds), wallMs: median(r.eagerWallMs) },
      eagerToCliCpu: median(r.eagerCpuSeconds) / median(r.cpuSeconds),
      eagerToCliWall: median(r.eagerWallMs) / median(r.wallMs),
      ...(r.other === undefined ? {} : { other: { modules: { esm: r.other.esm, cjs: r.other.cjs }, cpuSeconds: median(r.other.cpuSeconds), wallMs: median(r.other.wallMs) }, otherToCliCpu: median(r.other.cpuSeconds) / median(r.cpuSeconds), otherToCliWall: median(r.other.wallMs) / median(r.wallMs) }),
    })),
  };
  process.stdout.write(`${JSON.stringify(figures, roundNumbers)}\n`);
}

await main();
