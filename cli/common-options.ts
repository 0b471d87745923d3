import type { Command } from 'commander';
import { parsePositiveInt } from './cli-io.js';

/** Help of `--seeds` wherever it names the store nodes to talk to. */
export const SEEDS_HELP = 'store nodes HOST:PORT[,...] (env SHARDPIPE_SEEDS)';

/** Help of `--lock-duration` on every command that runs job workers. */
export const LOCK_DURATION_HELP = 'how long a job stays claimed by a worker that stopped answering';

/**
 * `--no-local-worker`, `--concurrency <n>` (default 2) and `--lock-duration` (default 30s): the options
 * of a command that submits jobs and, unless told otherwise, works them off in-process.
 */
export function withLocalWorkerOptions(cmd: Command, concurrencyHelp: string): Command {
  return cmd
    .option('--no-local-worker', 'only submit; `shardpipe worker` processes elsewhere do the work')
    .option('--concurrency <n>', concurrencyHelp, '2')
    .option('--lock-duration <duration>', LOCK_DURATION_HELP, '30s');
}

/** The help of the options `withMetricsEndpointOptions` adds, as each process words them. */
export interface MetricsEndpointHelp {
  metricsPort: string;
  authTokenFile: string;
  insecure: string;
}

/** The values of the options `withMetricsEndpointOptions` adds. */
export interface MetricsEndpointFlags {
  metricsPort?: string;
  metricsHost: string;
  authTokenFile?: string;
  insecure?: boolean;
}

/**
 * `--metrics-port <n>` (no default: no endpoint), `--metrics-host` (default 127.0.0.1),
 * `--auth-token-file` and `--insecure`: a process that may serve Prometheus /metrics beside its work.
 */
export function withMetricsEndpointOptions(cmd: Command, help: MetricsEndpointHelp): Command {
  return cmd
    .option('--metrics-port <n>', help.metricsPort)
    .option('--metrics-host <host>', 'bind address of /metrics', '127.0.0.1')
    .option('--auth-token-file <file>', help.authTokenFile)
    .option('--insecure', help.insecure);
}

/** `--metrics-port` as a number, or undefined when it was not given (then no endpoint is served). */
export function metricsPortOf(flags: MetricsEndpointFlags): number | undefined {
  return flags.metricsPort === undefined ? undefined : parsePositiveInt(flags.metricsPort, '--metrics-port');
}
