import type { Command } from 'commander';
import { hostOf, parseDurationMs } from '../../common/index.js';
import { CliUsageError } from '../cli-env.js';
import { parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { metricsPortOf, SEEDS_HELP } from '../common-options.js';
import { startMetricsEndpoint } from '../metrics-endpoint.js';

interface GatewayFlags {
  seeds?: string;
  listen: string;
  retryBudget: string;
  bulkRetryBudget: string;
  maxInFlight: string;
  maxWaiting: string;
  authTokenFile?: string;
  insecure?: boolean;
  metricsPort?: string;
  metricsHost: string;
}

export function registerGatewayCommand(program: Command, ctx: CliContext): void {
  program
    .command('gateway')
    .description(
      'serve the store to any language: one port speaks gRPC (HTTP/2, with server reflection and grpc.health.v1) and JSON over HTTP/1.1 and HTTP/2 ' +
        '(the Connect protocol: POST /shardpipe.gateway.v1.Gateway/Get {"key":"<base64>"}); stateless, runs until SIGTERM/SIGINT. ' +
        'TLS from SHARDPIPE_TLS_CERT/KEY (and CA for client certificates); the gateway reaches the nodes with SHARDPIPE_TOKEN',
    )
    .option('--seeds <list>', SEEDS_HELP)
    .option('--listen <host:port>', 'address to serve on (port 0 = any free port)', '127.0.0.1:7400')
    .option('--retry-budget <duration>', 'how long a Get/Put/Delete/scan step is held through map changes and node restarts before the caller gets UNAVAILABLE', '2s')
    .option('--bulk-retry-budget <duration>', 'the same for one batch of a BulkPut', '30s')
    .option('--max-in-flight <n>', 'calls served at once (a stream counts as one)', '256')
    .option('--max-waiting <n>', 'calls waiting for a slot beyond --max-in-flight; more get RESOURCE_EXHAUSTED', '1024')
    .option('--auth-token-file <file>', 'tokens callers must send ("authorization: Bearer TOKEN"), one "ROLE TOKEN" per line: read for Get/Scan*, write for Put/Delete/BulkPut; without it only loopback clients')
    .option('--insecure', 'without --auth-token-file, still bind a non-loopback address and serve anyone (trusted networks only)')
    .option('--metrics-port <n>', 'serve Prometheus /metrics of the gateway (calls by method and code, latency, in flight, waiting) on this port (0 = any free port; the ready line says which); needs a read token with --auth-token-file')
    .option('--metrics-host <host>', 'bind address of /metrics', '127.0.0.1')
    .action(async (opts: GatewayFlags) => {
      ctx.lifecycle.start();
      const match = /^(.+):(\d{1,5})$/.exec(opts.listen);
      if (match === null) throw new CliUsageError(`--listen must be HOST:PORT, got "${opts.listen}"`);
      const port = parsePositiveInt(match[2]!, '--listen port');
      if (port > 65535) throw new CliUsageError(`--listen port must be 0–65535, got ${port}`);
      const retryBudgetMs = parseDurationMs(opts.retryBudget);
      const bulkRetryBudgetMs = parseDurationMs(opts.bulkRetryBudget);
      if (retryBudgetMs < 1 || bulkRetryBudgetMs < 1) throw new CliUsageError('--retry-budget and --bulk-retry-budget must be at least 1ms');
      const maxInFlight = parsePositiveInt(opts.maxInFlight, '--max-in-flight');
      if (maxInFlight < 1 || maxInFlight > 100_000) throw new CliUsageError(`--max-in-flight must be 1–100000, got ${maxInFlight}`);
      const maxWaiting = parsePositiveInt(opts.maxWaiting, '--max-waiting');
      if (maxWaiting > 1_000_000) throw new CliUsageError(`--max-waiting must be 0–1000000, got ${maxWaiting}`);
      const tokens = ctx.serverTokens(opts.authTokenFile);
      const tls = ctx.serverTls();
      const insecure = opts.insecure ?? false;
      const metrics = await startMetricsEndpoint(ctx, { port: metricsPortOf(opts), host: opts.metricsHost, access: () => ({ tokens, tls, insecure }) });
      const { GatewayServer } = await import('../../gateway/index.js');
      const start = GatewayServer.start({
        seeds: ctx.seeds(opts.seeds),
        host: hostOf(opts.listen),
        port,
        retryBudgetMs,
        bulkRetryBudgetMs,
        maxInFlight,
        maxWaiting,
        tokens,
        tls,
        insecure,
        registry: metrics.registry,
        storeCredentials: ctx.storeCredentials(),
        logger: ctx.logger,
      });
      const server = ctx.lifecycle.add('gateway', await start, (s) => s.close());
      // Tests and supervisors wait for this line on stdout.
      ctx.print(JSON.stringify({ event: 'ready', url: server.url, port: server.port, ...(metrics.port === undefined ? {} : { metricsPort: metrics.port }) }));
      await ctx.lifecycle.untilSignal();
    });
}
