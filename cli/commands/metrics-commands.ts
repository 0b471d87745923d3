import type { Command } from 'commander';
import { parseDurationMs } from '../../common/index.js';
import { CliUsageError } from '../cli-env.js';
import { parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { SEEDS_HELP } from '../common-options.js';
import { etcdConnectionOf, withEtcdOptions, type EtcdFlags } from '../etcd-options.js';

interface MetricsServerFlags extends EtcdFlags {
  seeds?: string;
  port: string;
  host: string;
  interval: string;
  redis?: string;
  maxPartitionSeries: string;
  allowQueueActions?: boolean;
  authTokenFile?: string;
  insecure?: boolean;
}

export function registerMetricsCommands(program: Command, ctx: CliContext): void {
  const command = program
    .command('metrics-server')
    .description('poll every store node\'s partition stats and serve them: a web page at /, JSON under /api, Prometheus /metrics, shard plans, and the job queues (Bull Board at /queues); runs until SIGTERM/SIGINT')
    .option('--seeds <list>', SEEDS_HELP)
    .option('--port <n>', 'HTTP port (0 = any free port)', '9464')
    .option('--host <host>', 'bind address (0.0.0.0 to serve other machines)', '127.0.0.1')
    .option('--interval <duration>', 'pause between polls of the store nodes', '10s')
    .option('--redis <url>', 'Redis of the job queues, for the jobs panel and /queues (env SHARDPIPE_REDIS_URL); default: none')
    .option('--max-partition-series <n>', 'partitions exported with their own label in /metrics; the rest are summed per node into partition="_other"', '200')
    .option('--allow-queue-actions', 'let Bull Board retry, promote and remove jobs (default: read-only); needs an admin token')
    .option('--auth-token-file <file>', 'tokens the page, API and /metrics accept (role read; queue actions admin), one "ROLE TOKEN" per line; without it only loopback clients')
    .option('--insecure', 'without --auth-token-file, still bind a non-loopback address and serve anyone');
  withEtcdOptions(command, 'the cluster\'s etcd (a replicated cluster): the page\'s "Data movement" panel and /metrics then show operations in progress and data awaiting GC, read every --interval. Endpoints http(s)://HOST:PORT[,...]; a user in the URL logs in with etcd user auth (never logged)')
    .action(async (opts: MetricsServerFlags) => {
      ctx.lifecycle.start();
      if (opts.etcd === undefined && (opts.etcdCa !== undefined || opts.etcdCert !== undefined || opts.etcdKey !== undefined)) throw new CliUsageError('--etcd-ca/--etcd-cert/--etcd-key need --etcd');
      const intervalMs = parseDurationMs(opts.interval);
      if (intervalMs < 1) throw new RangeError(`--interval must be at least 1ms, got "${opts.interval}"`);
      // Loaded here, not at the top: express and Bull Board would slow every other command's start.
      const [{ MetricsServer }, { Registry, collectDefaultMetrics }] = await Promise.all([import('../../metrics-server/index.js'), import('prom-client')]);
      const registry = new Registry();
      collectDefaultMetrics({ register: registry });
      const start = MetricsServer.start({
        seeds: ctx.seeds(opts.seeds),
        port: parsePositiveInt(opts.port, '--port'),
        host: opts.host,
        intervalMs,
        redisUrl: opts.redis ?? ctx.env.SHARDPIPE_REDIS_URL,
        allowQueueActions: opts.allowQueueActions ?? false,
        maxPartitionSeries: parsePositiveInt(opts.maxPartitionSeries, '--max-partition-series'),
        registry,
        tokens: ctx.serverTokens(opts.authTokenFile),
        tls: ctx.serverTls(),
        insecure: opts.insecure ?? false,
        storeCredentials: ctx.storeCredentials(),
        ...(opts.etcd === undefined ? {} : { etcd: await etcdConnectionOf(opts.etcd, opts) }),
        logger: ctx.logger,
      });
      const server = ctx.lifecycle.add('metrics server', await start, (s) => s.close());
      // Tests and supervisors wait for this line on stdout.
      ctx.print(JSON.stringify({ event: 'ready', url: server.url, port: server.port }));
      await ctx.lifecycle.untilSignal();
    });
}
