import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { childProcessEnv, redactUrl } from '../../common/index.js';
import { CliUsageError } from '../cli-env.js';
import { EXIT, formatTable, parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import type { FailoverReport } from '../demo-failover.js';

const CLI_ENTRY = fileURLToPath(new URL('../main.js', import.meta.url));

interface DemoOptions {
  rows: string;
  files: string;
  dataDir?: string;
  metricsPort: string;
  keepRunning?: boolean;
  json?: boolean;
  replicas: string;
  kill: boolean;
}

interface Stage {
  stage: string;
  rows: number;
  seconds: number;
  rowsPerSecond: number;
  detail: string;
}

/**
 * The newcomer's first run: a local stack (Redis, 3 store nodes, metrics server, a worker), a
 * generated Spark-like drop, then the real CLI commands one after the other — ingest, backup,
 * wipe, restore into a differently partitioned cluster with --verify — and a summary.
 */
export function registerDemoCommand(program: Command, ctx: CliContext): void {
  program
    .command('demo')
    .description('the whole journey on embedded defaults: start Redis, a private etcd, 3 store nodes with every partition on a chain of --replicas, a coordinator, the metrics server and a worker; generate a sorted Spark-like drop; ingest it while one node is SIGKILLed (its chains fail over), check every replica, back it up, wipe the cluster, restore into 4 partitions instead of 6 with --verify; print a summary; exit 0 only if no row was lost and the restore verified')
    .option('--rows <n>', 'rows in the generated drop', '1000000')
    .option('--files <n>', 'part files in the drop', '8')
    .option('--data-dir <dir>', 'keep everything here (default: a temporary folder, removed afterwards)')
    .option('--replicas <n>', 'replicas per partition, 1–3: 2 or 3 run chains on a private etcd; 1 runs the single-replica mode (static map, no etcd, no kill)', '3')
    .option('--no-kill', 'do not SIGKILL a node during the ingest')
    .option('--metrics-port <n>', 'dashboard port (0 = any free port)', '0')
    .option('--keep-running', 'after the summary keep the stack and dashboard up until Ctrl-C')
    .option('--json', 'print the summary as one JSON object: {"verified", "dashboard", "replicas", "rowsLost", "failover": {"node","chains":[{"partition","role"}],"killedAtRows","failoverMs","mapVersion","chainsChanged"} | null, "stages": [{"stage","rows","seconds","rowsPerSecond","detail"}]}')
    .action(async (opts: DemoOptions) => {
      const rows = parsePositiveInt(opts.rows, '--rows');
      const files = parsePositiveInt(opts.files, '--files');
      if (files > rows) throw new CliUsageError(`--files (${files}) cannot exceed --rows (${rows})`);
      const replicas = parsePositiveInt(opts.replicas, '--replicas');
      if (replicas > 3) throw new CliUsageError(`--replicas must be 1–3 (the demo runs 3 nodes), got ${replicas}`);
      const dataDir = opts.dataDir ? resolve(opts.dataDir) : await mkdtemp(join(tmpdir(), 'shardpipe-demo-'));
      const say = (line: string): void => {
        if (!opts.json) process.stderr.write(`${line}\n`);
      };
      const signal = ctx.lifecycle.start();
      // Loaded by the command that runs them: `--help` and other commands start without them.
      const [{ writeSampleDrop }, { PartitionMap }, { killDuringIngest }, { LocalStack }] = await Promise.all([
        import('../../ingest/index.js'),
        import('../../store/index.js'),
        import('../demo-failover.js'),
        import('../local-stack.js'),
      ]);
      // Registered first, so it runs last: after the stack has stopped using the folder.
      if (!opts.dataDir) ctx.lifecycle.add('demo folder', dataDir, (dir) => rm(dir, { recursive: true, force: true }));
      say(`generating a sorted drop of ${rows} rows in ${files} part files…`);
      const drop = await writeSampleDrop(join(dataDir, 'drop'), { rows, files, signal });
      const start = LocalStack.start({
        dataDir,
        map: (nodes) => PartitionMap.fromSplitKeys(1, nodes, drop.splitKeys(6).map((k) => Buffer.from(k))),
        replicas,
        // Short, so the failover shows within the ingest; the thick client's retry budget (30 s) outlasts it many times.
        lease: '2s',
        metricsPort: parsePositiveInt(opts.metricsPort, '--metrics-port'),
        logger: ctx.logger,
      });
      const stack = ctx.lifecycle.add('local stack', await start, (s) => s.close());
      const etcd = stack.cluster.etcdUrl;
      say(`stack up: store nodes ${stack.seeds.join(', ')} (6 partitions, ${replicas === 1 ? 'one replica each, static map' : `chains of ${replicas} replicas, membership on etcd ${etcd}, a coordinator`}), Redis ${redactUrl(stack.redisUrl)}`);
      if (etcd !== undefined) {
        for (const p of stack.cluster.map.partitions) say(`  partition ${p.id}: ${p.chain.map((r) => r.node).join(' → ')} (head → tail)`);
      }
      say(`dashboard: ${stack.metrics.url}  (jobs in detail at ${stack.metrics.url}queues)`);
      const env = { ...stack.env, SHARDPIPE_DATA_DIR: dataDir };
      const target = pathToFileURL(join(dataDir, 'backups')).href;
      const stages: Stage[] = [];

      const victim = replicas > 1 && opts.kill ? stack.cluster.map.partitions[0]!.node : undefined;
      say(`\n== ingest${victim === undefined ? '' : ` (node ${victim} will be SIGKILLed once a tenth of the rows are in)`}`);
      const ingesting = runStage('ingest', ['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', '--no-local-worker', '--wait', '--json'], env, signal);
      let failover: FailoverReport | undefined;
      if (victim !== undefined) {
        failover = await killDuringIngest(stack.cluster, victim, Math.ceil(rows / 10), stack.env.SHARDPIPE_TOKEN!, ingesting, 60_000);
        if (failover === undefined) say(`the ingest ended before a tenth of the rows were in: ${victim} was not killed`);
        else {
          say(`SIGKILLed ${failover.node} at ${failover.killedAtRows} rows: ${failover.chains.map((c) => `${c.role} of partition ${c.partition}`).join(', ')}`);
          say(`the coordinator dropped it from ${failover.chainsChanged} chains ${failover.failoverMs} ms later (map version ${failover.mapVersion}); the ingest carries on against the survivors`);
        }
      }
      const ingest = await ingesting;
      const killedText = failover === undefined ? '' : `; ${failover.node} SIGKILLed at ${failover.killedAtRows} rows, failover ${(failover.failoverMs / 1000).toFixed(1)} s`;
      stages.push({ ...ingest.stage, rows: ingest.report.rowsIngested as number, detail: `${drop.files} files, ${(drop.bytes / 1e6).toFixed(1)} MB, ${ingest.report.rowsRejected} rejected${killedText}` });

      say('\n== cluster check: every replica of every partition digests it');
      const check = await runStage('check', ['cluster', 'check', '--json'], env, signal, [EXIT.ok, EXIT.failed]);
      const partitions = check.report.partitions as Array<{ consistent: boolean; replicas: Array<{ node: string; count: number; state: string; error?: string }> }>;
      const checkError = partitions.flatMap((p) => p.replicas.filter((r) => r.error !== undefined).map((r) => `${r.node}: ${r.error}`))[0];
      const stored = partitions.reduce((n, p) => n + (p.replicas.find((r) => r.state === 'serving')?.count ?? 0), 0);
      const rowsLost = rows - stored;
      const replicaCopies = partitions.reduce((n, p) => n + p.replicas.filter((r) => r.state === 'serving').length, 0);
      stages.push({ ...check.stage, rows: stored, detail: `${check.report.consistent === true ? 'consistent' : 'NOT consistent'}: ${partitions.length} partitions, ${replicaCopies} serving replicas, rows lost ${rowsLost}${checkError === undefined ? '' : `; ${checkError}`}` });

      say('\n== backup');
      const shardRows = String(Math.max(10_000, Math.ceil(rows / 8)));
      const backup = await runStage('backup', ['backup', 'run', '--target', target, '--shard-rows', shardRows, '--no-local-worker', '--wait', '--json'], env, signal);
      const backupId = String(backup.report.backupId);
      stages.push({ ...backup.stage, rows: Number(backup.report.rows), detail: `${backupId}: ${backup.report.shards} shards, ${(Number(backup.report.bytes) / 1e6).toFixed(1)} MB` });

      say('\n== wipe: stopping the nodes, deleting their data, starting them empty with 4 partitions instead of 6');
      const wipeStart = performance.now();
      await stack.cluster.wipe(PartitionMap.fromSplitKeys(2, stack.seeds, drop.splitKeys(4).map((k) => Buffer.from(k))));
      stages.push({ stage: 'wipe', rows: 0, seconds: (performance.now() - wipeStart) / 1000, rowsPerSecond: 0, detail: `empty cluster, new partition map (version ${stack.cluster.map.version}, 4 partitions${replicas > 1 ? `, chains of ${replicas} on all ${stack.seeds.length} nodes again` : ''})` });

      say('\n== restore --verify');
      const restore = await runStage('restore', ['restore', backupId, '--target', target, '--no-local-worker', '--verify', '--json'], env, signal, [EXIT.ok, EXIT.incomplete]);
      const verified = restore.report.verified === true && ingest.report.rowsIngested === rows && restore.report.rowsRestored === rows && rowsLost === 0 && check.report.consistent === true;
      const mismatches = (restore.report.mismatches as unknown[] | undefined)?.length ?? 0;
      stages.push({ ...restore.stage, rows: Number(restore.report.rowsRestored), detail: verified ? `verified: ${restore.report.shards} shard ranges match the manifest` : `NOT verified: ${mismatches} mismatches` });

      if (opts.json) {
        ctx.print(JSON.stringify({ verified, dashboard: stack.metrics.url, replicas, rowsLost, failover: failover ?? null, stages }));
      } else {
        ctx.print('');
        ctx.print(formatTable(['stage', 'rows', 'seconds', 'rows/s', 'detail'], stages.map((s) => [s.stage, String(s.rows), s.seconds.toFixed(1), String(s.rowsPerSecond), s.detail])));
        const through = failover === undefined ? '' : ` through the SIGKILL of ${failover.node}`;
        ctx.print(verified ? `\nVERIFIED: all ${rows} rows went in${through} (rows lost 0, replicas consistent), out to Parquet and back, and match.` : '\nNOT VERIFIED: see the check and restore lines above.');
      }
      if (!verified) process.exitCode = EXIT.failed;
      if (opts.keepRunning && !signal.aborted) {
        say(`\nstill running — dashboard ${stack.metrics.url}; in another terminal:\n  export ${Object.entries(stack.printableEnv).map(([k, v]) => `${k}=${v}`).join(' ')}\nCtrl-C stops everything.`);
        await ctx.lifecycle.untilSignal();
      }
    });
}

/**
 * Runs one CLI command of the journey as a child (its progress goes to our stderr) and parses its
 * one-line JSON report. Exit codes outside `accept` fail the demo with the command's own message.
 */
async function runStage(
  name: string,
  args: string[],
  env: Record<string, string>,
  signal: AbortSignal,
  accept: readonly number[] = [EXIT.ok],
): Promise<{ stage: Omit<Stage, 'rows' | 'detail'>; report: Record<string, unknown> }> {
  const started = performance.now();
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: childProcessEnv(env), signal });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const code = await new Promise<number | null>((done, fail) => {
    child.once('error', fail);
    child.once('exit', done);
  });
  if (code === null || !accept.includes(code)) throw new Error(`demo: \`shardpipe ${args.slice(0, 2).join(' ')}\` exited with ${code}; its messages are above`);
  const report = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
  const seconds = (performance.now() - started) / 1000;
  const rows = Number(report.rowsIngested ?? report.rows ?? report.rowsRestored ?? 0);
  return { stage: { stage: name, seconds, rowsPerSecond: seconds > 0 ? Math.round(rows / seconds) : 0 }, report };
}
