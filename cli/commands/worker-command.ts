import type { Command } from 'commander';
import { parseDurationMs } from '../../common/index.js';
import { CliUsageError } from '../cli-env.js';
import { parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { targetOptionsOf } from '../backup-flags.js';
import { LOCK_DURATION_HELP, SEEDS_HELP, metricsPortOf, withMetricsEndpointOptions, type MetricsEndpointFlags } from '../common-options.js';
import { startMetricsEndpoint } from '../metrics-endpoint.js';

/** `shardpipe worker`: every kind of job worker in one process, against a shared Redis. */
export function registerWorkerCommand(program: Command, ctx: CliContext): void {
  const worker = program
    .command('worker')
    .description('run ingest, backup (also scheduled backups) and restore workers against a shared Redis until SIGTERM/SIGINT (many machines may run them)')
    .option('--redis <url>', 'Redis of the job queues (env SHARDPIPE_REDIS_URL); required')
    .option('--seeds <list>', SEEDS_HELP)
    .option('--concurrency <n>', 'files ingested at once', '2')
    .option('--backup-concurrency <n>', 'backup shards written at once', '2')
    .option('--lock-duration <duration>', LOCK_DURATION_HELP, '30s');
  withMetricsEndpointOptions(worker, {
    metricsPort: 'serve Prometheus /metrics (job durations, rows ingested, process metrics) on this port; 0 = any free port',
    authTokenFile: 'tokens /metrics accepts (role read or higher), one "ROLE TOKEN" per line; without it only loopback scrapers',
    insecure: 'without --auth-token-file, still bind /metrics to a non-loopback address and serve anyone',
  }).action(async (opts: { redis?: string; seeds?: string; concurrency: string; backupConcurrency: string; lockDuration: string } & MetricsEndpointFlags) => {
    const url = opts.redis ?? ctx.env.SHARDPIPE_REDIS_URL;
    if (!url) throw new CliUsageError('a worker needs the shared Redis: pass --redis URL or set SHARDPIPE_REDIS_URL');
    ctx.lifecycle.start();
    // Loaded by the command that runs them: `--help` and other commands start without them.
    const [{ BackupWorkers, IngestWorkers, JobMetrics, RestoreWorkers, checkRedisCredentials, connectionFromUrl }, { StoreClient }] = await Promise.all([import('../../jobs/index.js'), import('../../store/index.js')]);
    const { registry, port: metricsServerPort } = await startMetricsEndpoint(ctx, {
      port: metricsPortOf(opts),
      host: opts.metricsHost,
      access: () => ({ tokens: ctx.serverTokens(opts.authTokenFile), tls: ctx.serverTls(), insecure: opts.insecure ?? false }),
    });
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
