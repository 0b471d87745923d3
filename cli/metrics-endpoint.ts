import type { Registry } from 'prom-client';
import { MetricsHttpServer } from '../common/index.js';
import type { MetricsHttpServerOptions } from '../common/index.js';
import type { CliContext } from './cli-context.js';

/** Where and how a process serves /metrics. */
export interface MetricsEndpointOptions {
  /** TCP port (0 = any free port); undefined: no endpoint, no registry. */
  port: number | undefined;
  host: string;
  /** Called only when an endpoint is served. */
  access: () => Pick<MetricsHttpServerOptions, 'tokens' | 'tls' | 'insecure'>;
}

/**
 * A registry with the process's default metrics, served at /metrics and closed by the CLI lifecycle;
 * `{}` when no port was asked for.
 */
export async function startMetricsEndpoint(ctx: CliContext, options: MetricsEndpointOptions): Promise<{ registry?: Registry; port?: number }> {
  if (options.port === undefined) return {};
  // prom-client is loaded only by a process that serves /metrics.
  const { Registry, collectDefaultMetrics } = await import('prom-client');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const start = MetricsHttpServer.start({ registry, port: options.port, host: options.host, ...options.access(), logger: ctx.logger });
  const server = ctx.lifecycle.add('/metrics endpoint', await start, (m) => m.close());
  return { registry, port: server.port };
}
