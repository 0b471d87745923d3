import { createServer, type Server } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Router } from 'express';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { canServeTls, checkBind, type AuthTokens, type Logger, type TlsMaterial } from '../common/index.js';
import { StoreClient, type EtcdConnectionOptions, type StoreCredentials } from '../store/index.js';
import { BackupScheduleMetrics } from './backup-schedule-metrics.js';
import { ClusterMetrics } from './cluster-metrics.js';
import { createMetricsApp } from './http-app.js';
import { JobOverview } from './job-overview.js';
import { registerMovementMetrics } from './movement-metrics.js';
import { MovementPoller } from './movement-poller.js';
import { PartitionPoller } from './partition-poller.js';
import { ShardPlanner } from './shard-planner.js';

/** Options of the metrics server. Times in milliseconds. */
export interface MetricsServerOptions {
  /** Store nodes (HOST:PORT) to fetch the partition map from. Required. */
  seeds: readonly string[];
  /** HTTP port; 0 picks a free one. Default 9464 (Prometheus exporters' range). */
  port?: number;
  /** Bind address. Default '127.0.0.1'; '0.0.0.0' to serve other machines. */
  host?: string;
  /** Pause between polls of the store nodes. Default 10000. */
  intervalMs?: number;
  /** Budget of one poll. Default 5000. */
  pollTimeoutMs?: number;
  /** redis:// URL of the job queues for the jobs panel and Bull Board. Absent: "no Redis configured". */
  redisUrl?: string;
  /** Let Bull Board retry, promote and remove jobs. Default false (read-only). */
  allowQueueActions?: boolean;
  /** Most shards one /api/shards plan may have; a smaller target is answered 400 METRICS_PLAN_TOO_LARGE. Default 100,000 (store's DEFAULT_MAX_PLAN_SHARDS). */
  maxPlanShards?: number;
  /** Label cap of the per-partition metrics (see ClusterMetrics). Default 200. */
  maxPartitionSeries?: number;
  /** Registry served at /metrics. Default: a new one with prom-client's default process metrics. */
  registry?: Registry;
  /** Tokens accepted by the page, the API and /metrics (role read; queue actions admin). Absent: protected mode, loopback only. */
  tokens?: AuthTokens;
  /** Serve HTTPS with `cert` + `key`; with `ca`, require client certificates signed by it. Absent: plain HTTP. */
  tls?: TlsMaterial;
  /** Without tokens, bind any address and accept any peer anyway. Default false. */
  insecure?: boolean;
  /** How the poller reaches the store nodes (token, TLS). Default: plaintext, no token. */
  storeCredentials?: StoreCredentials;
  /** The cluster's etcd: operations in progress and data awaiting GC for the "Data movement" panel and metrics, read every `intervalMs`. Absent: the panel says "no etcd configured". */
  etcd?: EtcdConnectionOptions;
  logger: Logger;
}

/**
 * The metrics server: polls the store nodes' PartitionStats, serves them as JSON, Prometheus
 * metrics and a page, plans shards from them, and shows the job queues (Bull Board at /queues).
 */
export class MetricsServer {
  readonly port: number;
  readonly host: string;
  readonly poller: PartitionPoller;
  readonly registry: Registry;
  readonly movement: MovementPoller | undefined;
  private readonly server: Server;
  private readonly client: StoreClient;
  private readonly jobs: JobOverview | undefined;
  private readonly logger: Logger;
  private readonly tls: boolean;
  private closing: Promise<void> | undefined;

  private constructor(parts: { server: Server; client: StoreClient; poller: PartitionPoller; movement: MovementPoller | undefined; jobs: JobOverview | undefined; registry: Registry; logger: Logger; host: string; tls: boolean }) {
    this.tls = parts.tls;
    this.movement = parts.movement;
    this.server = parts.server;
    this.client = parts.client;
    this.poller = parts.poller;
    this.jobs = parts.jobs;
    this.registry = parts.registry;
    this.logger = parts.logger;
    this.host = parts.host;
    this.port = (parts.server.address() as AddressInfo).port;
  }

  /** Starts polling and listening; resolves once the HTTP port is bound (not waiting for the first poll). */
  static async start(options: MetricsServerOptions): Promise<MetricsServer> {
    const logger = options.logger.child({ module: 'metrics-server' });
    const host = options.host ?? '127.0.0.1';
    const auth = { tokens: options.tokens, insecure: options.insecure ?? false, what: 'the metrics server' };
    checkBind(host, { what: 'metrics server', authenticated: auth.tokens !== undefined, insecure: auth.insecure, flag: '--host' });
    const registry = options.registry ?? defaultRegistry();
    const client = new StoreClient({ seeds: options.seeds, logger, rpcDeadlineMs: options.pollTimeoutMs ?? 5000, credentials: options.storeCredentials });
    let metrics: ClusterMetrics | undefined;
    const poller = new PartitionPoller({
      client,
      intervalMs: options.intervalMs,
      pollTimeoutMs: options.pollTimeoutMs,
      onPoll: (result) => metrics?.observePoll(result),
      logger,
    });
    metrics = new ClusterMetrics({ registry, poller, maxPartitionSeries: options.maxPartitionSeries });
    const movement = options.etcd === undefined ? undefined : new MovementPoller({ etcd: options.etcd, intervalMs: options.intervalMs, logger });
    registerMovementMetrics(registry, poller, movement);

    let jobs: JobOverview | undefined;
    let queuesRouter: Router | undefined;
    if (options.redisUrl !== undefined) {
      new BackupScheduleMetrics({ registry, redisUrl: options.redisUrl, logger });
      const serverAdapter = new ExpressAdapter().setBasePath('/queues');
      const board = createBullBoard({ queues: [], serverAdapter, options: { uiConfig: { boardTitle: 'shardpipe jobs' } } });
      const readOnlyMode = !(options.allowQueueActions ?? false);
      const overview = new JobOverview({ redisUrl: options.redisUrl, logger, onQueueFound: (queue) => board.addQueue(new BullMQAdapter(queue, { readOnlyMode })) });
      jobs = overview;
      // Queues created after the start (a first backup, say) join Bull Board when someone looks.
      let lookedAt = 0;
      queuesRouter = Router().use((_req, _res, next) => {
        if (Date.now() - lookedAt < 5000) return next();
        lookedAt = Date.now();
        overview.discover().then(
          () => next(),
          (err: unknown) => {
            logger.debug({ err: (err as Error).message }, 'job queues not readable');
            next();
          },
        );
      }, serverAdapter.getRouter() as Router);
    }
    const app = createMetricsApp({ poller, movement, planner: new ShardPlanner({ poller, client, maxShards: options.maxPlanShards }), registry, jobs, queuesRouter, auth, logger });
    const tls = options.tls;

    let server: Server | undefined;
    try {
      // Queues that already exist are in Bull Board from the start; later ones join when the page looks.
      await jobs?.discover().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'job queues not readable yet'));
      const s: Server = canServeTls(tls)
        ? (createTlsServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: tls.ca !== undefined, rejectUnauthorized: tls.ca !== undefined }, app) as unknown as Server)
        : createServer(app);
      server = await new Promise<Server>((resolve, reject) => {
        s.once('error', reject);
        s.listen(options.port ?? 9464, host, () => {
          s.off('error', reject);
          resolve(s);
        });
      });
    } catch (err) {
      await jobs?.close();
      await movement?.close();
      client.close();
      throw err;
    }
    poller.start();
    movement?.start();
    const started = new MetricsServer({ server, client, poller, movement, jobs, registry, logger, host, tls: canServeTls(tls) });
    logger.info({ url: started.url, intervalMs: poller.intervalMs, redis: jobs !== undefined, tokens: auth.tokens !== undefined }, 'metrics server listening');
    return started;
  }

  /** `http(s)://host:port/`. */
  get url(): string {
    const host = this.host === '0.0.0.0' || this.host === '::' ? '127.0.0.1' : this.host.includes(':') ? `[${this.host}]` : this.host;
    return `${this.tls ? 'https' : 'http'}://${host}:${this.port}/`;
  }

  /** Stops listening and polling, closes Redis and the store channels. Idempotent; every step runs. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closeHttp = new Promise<void>((resolve, reject) => {
        this.server.close((err) => (err ? reject(err) : resolve()));
        this.server.closeIdleConnections();
      });
      const results = await Promise.allSettled([closeHttp, this.poller.close(), this.jobs?.close(), this.movement?.close()]);
      this.client.close();
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed.length > 0) throw new AggregateError(failed.map((f) => f.reason), 'closing the metrics server failed');
      this.logger.info('metrics server stopped');
    })();
    return this.closing;
  }
}

function defaultRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}
