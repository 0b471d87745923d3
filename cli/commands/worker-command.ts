import type { Command } from 'commander';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { MetricsHttpServer, parseDurationMs } from '../../common/index.js';
import { BackupWorkers, IngestWorkers, JobMetrics, RestoreWorkers, checkRedisCredentials, connectionFromUrl } from '../../jobs/index.js';
import { StoreClient } from '../../store/index.js';
import { CliUsageError } from '../cli-env.js';
import { parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { targetOptionsOf } from '../backup-flags.js';

/** `shardpipe worker`: every kind of job worker in one process, against a shared Redis. */
export function registerWorkerCommand(program: Command, ctx: CliContext): void {
  program
    .command('worker')
    .description('run ingest, backup (also scheduled backups) and restore workers against a shared Redis until SIGTERM/SIGINT (many machines may run them)')
    .option('--redis <url>', 'Redis of the job queues (env SHARDPIPE_REDIS_URL); required')
    .option('--seeds <list>', 'store nodes HOST:PORT[,...] (env SHARDPIPE_SEEDS)')
    .option('--concurrency <n>', 'files ingested at once', '2')
    .option('--backup-concurrency <n>', 'backup shards written at once', '2')
    .option('--lock-duration <duration>', 'how long a job stays claimed by a worker that stopped answering', '30s')
    .option('--metrics-port <n>', 'serve Prometheus /metrics (job durations, rows ingested, process metrics) on this port; 0 = any free port')
    .option('--metrics-host <host>', 'bind address of /metrics', '127.0.0.1')
    .option('--auth-token-file <file>', 'tokens /metrics accepts (role read or higher), one "ROLE TOKEN" per line; without it only loopback scrapers')
    .option('--insecure', 'without --auth-token-file, still bind /metrics to a non-loopback address and serve anyone')
    .action(async (opts: { redis?: string; seeds?: string; concurrency: string; backupConcurrency: string; lockDuration: string; metricsPort?: string; metricsHost: string; authTokenFile?: string; insecure?: boolean }) => {
      const url = opts.redis ?? ctx.env.SHARDPIPE_REDIS_URL;
      if (!url) throw new CliUsageError('a worker needs the shared Redis: pass --redis URL or set SHARDPIPE_REDIS_URL');
      ctx.lifecycle.start();
      const metricsPort = opts.metricsPort === undefined ? undefined : parsePositiveInt(opts.metricsPort, '--metrics-port');
      const registry = metricsPort === undefined ? undefined : new Registry();
      let metricsServerPort: number | undefined;
      if (registry) {
        collectDefaultMetrics({ register: registry });
        const start = MetricsHttpServer.start({ registry, port: metricsPort!, host: opts.metricsHost, tokens: ctx.serverTokens(opts.authTokenFile), tls: ctx.serverTls(), insecure: opts.insecure ?? false, logger: ctx.logger });
        metricsServerPort = ctx.lifecycle.add('/metrics endpoint', await start, (m) => m.close()).port;
      }
      const connection = connectionFromUrl(url);
      await checkRedisCredentials(connection, url);
      const client = ctx.lifecycle.add('store client', new StoreClient({ seeds: ctx.seeds(opts.seeds), logger: ctx.logger, credentials: ctx.storeCredentials() }), (c) => c.close());
      const shared = {
        connection,
        client,
        concurrency: parsePositiveInt(opts.concurrency, '--concurrency'),
        lockDurationMs: parseDurationMs(opts.lockDuration),
        metrics: registry && new JobMetrics(registry),
        logger: ctx.logger,
      };
      const backupConcurrency = parsePositiveInt(opts.backupConcurrency, '--backup-concurrency');
      const started = [
        IngestWorkers.start(shared),
        RestoreWorkers.start({ ...shared, azure: { connectionString: ctx.env.AZURE_STORAGE_CONNECTION_STRING } }),
        BackupWorkers.start({ ...shared, targetOptions: targetOptionsOf(ctx), metricsToken: ctx.token(), concurrency: backupConcurrency }),
      ];
      // The three kinds drain side by side: a stop waits for the slowest job, not the sum.
      ctx.lifecycle.add('job workers', started, closeTogether);
      await Promise.all(started.map((w) => w.waitUntilReady()));
      ctx.print(JSON.stringify({ event: 'ready', workers: ['ingest', 'backup', 'restore'], ...(metricsServerPort === undefined ? {} : { metricsPort: metricsServerPort }) }));
      await ctx.lifecycle.untilSignal();
    });
}

/** Closes every worker group at once; each close runs, and any failure is reported after all ended. */
async function closeTogether(groups: ReadonlyArray<{ close(): Promise<void> }>): Promise<void> {
  const failed = (await Promise.allSettled(groups.map((g) => g.close()))).flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (failed.length > 0) throw new AggregateError(failed, `${failed.length} worker group(s) did not close cleanly`);
}
