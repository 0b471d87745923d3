import type { ChildProcess } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AuthTokens, type Logger } from '../common/index.js';
import { PrivateRedis } from '../jobs/index.js';
import type { MetricsServer } from '../metrics-server/index.js';
import type { PartitionMap } from '../store/index.js';
import { startCliChild, stopChild } from './cli-child.js';
import { LocalCluster } from './local-cluster.js';
import { ensureTokenFile, type RoleTokens } from './token-file.js';

export interface LocalStackOptions {
  /** Redis data, node data and the map go under here. Required. */
  dataDir: string;
  /** Store nodes. Default 3. */
  nodes?: number;
  /** Fixed node ports from here up (see LocalCluster); default: free ports. */
  basePort?: number;
  /** Give every store node a Prometheus /metrics port. Default false. */
  nodeMetrics?: boolean;
  /** The partition map for the nodes' addresses (with replicas ≥ 2: its ranges; chains are placed on the registered nodes). */
  map: (addresses: string[]) => PartitionMap;
  /** Replicas per partition: 1 (default) a static map file, no etcd; 2 or more a private etcd, a coordinator and chains (LocalCluster). */
  replicas?: number;
  /** Node and coordinator lease with replicas ≥ 2. Default "3s". */
  lease?: string;
  /** Use this Redis instead of starting a private one. */
  redisUrl?: string;
  /** Dashboard port; 0 = any free one. Default 0. */
  metricsPort?: number;
  /** Poll interval of the metrics server, in ms. Default 2000 (a demo changes fast). */
  metricsIntervalMs?: number;
  /** `shardpipe worker` processes. Default 1. */
  workers?: number;
  logger: Logger;
}

/**
 * Everything shardpipe needs on one machine, the shape of docker-compose.yml: Redis, store nodes
 * (with replicas ≥ 2 also etcd and a coordinator) and workers as child processes, and the metrics server with its dashboard in this process.
 * Locked like a deployment: a token file with fresh tokens (`<dataDir>/tokens`, mode 0600)
 * guards every node, /metrics and the dashboard. Closed in reverse order of start.
 */
export class LocalStack {
  private workers: ChildProcess[] = [];
  private constructor(
    readonly redisUrl: string,
    readonly cluster: LocalCluster,
    readonly metrics: MetricsServer,
    /** The token file every component uses. */
    readonly tokenFile: string,
    private readonly tokens: RoleTokens,
    private readonly redis: PrivateRedis | undefined,
    private readonly logger: Logger,
    private readonly secretFiles: { adminToken: string; redisUrl: string },
  ) {}

  static async start(options: LocalStackOptions): Promise<LocalStack> {
    const logger = options.logger;
    await mkdir(options.dataDir, { recursive: true });
    const tokenFile = join(options.dataDir, 'tokens');
    const tokens = await ensureTokenFile(tokenFile);
    const redis = options.redisUrl ? undefined : await PrivateRedis.start({ dataDir: join(options.dataDir, 'redis'), logger });
    const redisUrl = options.redisUrl ?? redis!.url;
    let cluster: LocalCluster | undefined;
    let metrics: MetricsServer | undefined;
    try {
      cluster = await LocalCluster.start({ dataDir: join(options.dataDir, 'cluster'), nodes: options.nodes, basePort: options.basePort, metricsPorts: options.nodeMetrics, map: options.map, replicas: options.replicas, lease: options.lease, tokenFile, logger });
      // Loaded here, not at import: the dashboard (bull-board, express) is a third of the CLI's start-up, and only `up` and `demo` serve it.
      const { MetricsServer } = await import('../metrics-server/index.js');
      metrics = await MetricsServer.start({
        seeds: cluster.addresses,
        port: options.metricsPort ?? 0,
        intervalMs: options.metricsIntervalMs ?? 2000,
        redisUrl,
        tokens: AuthTokens.fromFile(tokenFile),
        storeCredentials: { token: tokens.read },
        // Replicated: the private etcd, for the "Data movement" panel.
        ...(cluster.etcdUrl === undefined ? {} : { etcd: { url: cluster.etcdUrl } }),
        logger,
      });
      const secretFiles = { adminToken: join(options.dataDir, 'admin-token'), redisUrl: join(options.dataDir, 'redis-url') };
      await writeSecretFile(secretFiles.adminToken, tokens.admin);
      await writeSecretFile(secretFiles.redisUrl, redisUrl);
      const stack = new LocalStack(redisUrl, cluster, metrics, tokenFile, tokens, redis, logger, secretFiles);
      for (let i = 0; i < (options.workers ?? 1); i++) await stack.startWorker();
      return stack;
    } catch (err) {
      await metrics?.close();
      await cluster?.close();
      await redis?.stop();
      throw err;
    }
  }

  get seeds(): string[] {
    return this.cluster.addresses;
  }

  /** The environment that points the CLI at this stack, with the admin token (SHARDPIPE_TOKEN); for child processes, never to print. */
  get env(): Record<string, string> {
    return { SHARDPIPE_SEEDS: this.seeds.join(','), SHARDPIPE_REDIS_URL: this.redisUrl, SHARDPIPE_TOKEN: this.tokens.admin };
  }

  /**
   * The same environment to show a user: the admin token and the Redis URL (with its password)
   * as files (`<dataDir>/admin-token`, `<dataDir>/redis-url`, mode 0600), never the secrets themselves.
   */
  get printableEnv(): Record<string, string> {
    return { SHARDPIPE_SEEDS: this.seeds.join(','), SHARDPIPE_REDIS_URL_FILE: this.secretFiles.redisUrl, SHARDPIPE_TOKEN_FILE: this.secretFiles.adminToken };
  }

  /** Stops workers, the metrics server, the nodes and Redis, in that order; every step runs. */
  async close(): Promise<void> {
    const steps = [() => this.stopWorkers(), () => this.metrics.close(), () => this.cluster.close(), async () => this.redis?.stop()];
    const errors: unknown[] = [];
    for (const step of steps) await step().catch((err: unknown) => errors.push(err));
    if (errors.length > 0) throw new AggregateError(errors, 'the local stack did not stop cleanly');
  }

  private async startWorker(): Promise<void> {
    const n = this.workers.length + 1;
    // Credentials go by environment, not argv; a worker writes and reads but never administers.
    const env = { SHARDPIPE_TOKEN: this.tokens.write, SHARDPIPE_REDIS_URL: this.redisUrl };
    this.workers.push(await startCliChild(['worker', '--seeds', this.seeds.join(',')], `worker ${n}`, this.logger.child({ worker: n }), env));
  }

  private async stopWorkers(): Promise<void> {
    const workers = this.workers;
    this.workers = [];
    await Promise.all(workers.map(stopChild));
  }
}

/** Writes one secret on one line, readable by the owner only (also when the file was there before). */
async function writeSecretFile(path: string, secret: string): Promise<void> {
  await writeFile(path, secret + '\n', { mode: 0o600 });
  await chmod(path, 0o600);
}
