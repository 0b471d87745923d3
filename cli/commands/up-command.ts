import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CliUsageError } from '../cli-env.js';
import { parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';

interface UpOptions {
  nodes: string;
  partitions: string;
  dataDir?: string;
  redis?: string;
  metricsPort: string;
  workers: string;
  basePort: string;
  replicas?: string;
  lease: string;
}

/** A long-running local stack for trying the CLI by hand; Ctrl-C stops everything. */
export function registerUpCommand(program: Command, ctx: CliContext): void {
  program
    .command('up')
    .description('run a local stack until Ctrl-C: Redis, store nodes (with 2 or more --replicas also a private etcd and a coordinator), the metrics server with its dashboard, and workers; prints the environment that points other shardpipe commands at it')
    .option('--nodes <n>', 'store nodes', '3')
    .option('--replicas <n>', 'replicas per partition (1 to --nodes; default 3, or --nodes when fewer): 2 or more start a private etcd and a coordinator, nodes register with --etcd and chains replicate every write; 1 runs today\'s single-replica mode from a static map file, without etcd. A data folder keeps the mode it was made with')
    .option('--lease <duration>', 'with 2 or more replicas: the etcd lease of nodes and coordinator (a SIGKILLed node leaves its chains about this long after)', '3s')
    .option('--partitions <n>', 'partitions, split evenly over the first two key bytes (for a new data folder; nodes keep the map they persisted)', '6')
    .option('--base-port <n>', 'store nodes listen on 127.0.0.1:PORT, PORT+1, …', '7001')
    .option('--data-dir <dir>', 'Redis and node data go to DIR/up, kept between runs (env SHARDPIPE_DATA_DIR; default .shardpipe)')
    .option('--redis <url>', 'use this Redis instead of a private one (env SHARDPIPE_REDIS_URL)')
    .option('--metrics-port <n>', 'dashboard port (0 = any free port)', '9464')
    .option('--workers <n>', '`shardpipe worker` processes', '1')
    .action(async (opts: UpOptions) => {
      const dataDir = resolve(opts.dataDir ?? ctx.env.SHARDPIPE_DATA_DIR ?? '.shardpipe', 'up');
      const partitions = parsePositiveInt(opts.partitions, '--partitions');
      const nodes = parsePositiveInt(opts.nodes, '--nodes');
      const replicas = opts.replicas === undefined ? Math.min(3, nodes) : parsePositiveInt(opts.replicas, '--replicas');
      if (replicas > nodes) throw new CliUsageError(`--replicas (${replicas}) cannot exceed --nodes (${nodes}): the replicas of a partition sit on distinct nodes`);
      // A Ctrl-C during start-up still stops every child once they are up.
      ctx.lifecycle.start();
      // Loaded by the command that runs them: `--help` and other commands start without them.
      const [{ PartitionMap }, { LocalStack }] = await Promise.all([import('../../store/index.js'), import('../local-stack.js')]);
      const start = LocalStack.start({
        dataDir,
        nodes,
        replicas,
        lease: opts.lease,
        basePort: parsePositiveInt(opts.basePort, '--base-port'),
        map: (nodes) => PartitionMap.evenlySplit(1, nodes, partitions),
        redisUrl: opts.redis ?? ctx.env.SHARDPIPE_REDIS_URL,
        metricsPort: parsePositiveInt(opts.metricsPort, '--metrics-port'),
        workers: parsePositiveInt(opts.workers, '--workers'),
        nodeMetrics: true,
        logger: ctx.logger,
      });
      const stack = ctx.lifecycle.add('local stack', await start, (s) => s.close());
      // Secrets (the admin token, the Redis password) are shown as the files that hold them, never themselves.
      const exports = Object.entries(stack.printableEnv).map(([k, v]) => `export ${k}=${v}`);
      const nodeMetrics = stack.cluster.endpoints.map((e) => e.metricsUrl);
      // stdout is the caller's (a terminal or a supervisor); the token never goes to the logs.
      const etcd = stack.cluster.etcdUrl;
      ctx.print(JSON.stringify({ event: 'ready', dashboard: stack.metrics.url, nodeMetrics, tokenFile: stack.tokenFile, replicas, ...(etcd === undefined ? {} : { etcd }), ...stack.printableEnv }));
      process.stderr.write(
        [
          `shardpipe is up: ${stack.seeds.length} store nodes (${partitions} partitions, ${replicas === 1 ? '1 replica each, static map' : `${replicas} replicas each, chains on etcd`}), Redis, metrics server, workers; data in ${dataDir}`,
          ...(etcd === undefined ? [] : [`  etcd       ${etcd} (private; a coordinator watches the node leases)`, `  chains     shardpipe cluster status --etcd ${etcd}`]),
          `  dashboard  ${stack.metrics.url}`,
          `  queues     ${stack.metrics.url}queues`,
          `  node /metrics  ${nodeMetrics.join(' ')}`,
          `  tokens     ${stack.tokenFile} (admin, write, read; the dashboard asks for a password: the read token, any user name)`,
          `  admin token ${stack.printableEnv.SHARDPIPE_TOKEN_FILE}, Redis URL ${stack.printableEnv.SHARDPIPE_REDIS_URL_FILE} (owner-only files)`,
          'In another terminal:',
          ...exports.map((e) => `  ${e}`),
          '  shardpipe ingest DROP --key-column COL --no-local-worker --wait',
          '  shardpipe backup run --no-local-worker --wait',
          'Ctrl-C stops everything.',
          '',
        ].join('\n'),
      );
      await ctx.lifecycle.untilSignal();
      process.stderr.write('stopping…\n');
    });
}
