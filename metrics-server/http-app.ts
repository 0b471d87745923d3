import { existsSync } from 'node:fs';
import { join } from 'node:path';
import express, { type ErrorRequestHandler, type Express, type Router } from 'express';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { ShardpipeError, checkHttpRequest, type HttpAuthOptions, type Logger } from '../common/index.js';
import { StoreError } from '../store/index.js';
import type { JobOverview } from './job-overview.js';
import { nodeDataShares, type MovementPoller } from './movement-poller.js';
import { MetricsError } from './metrics-errors.js';
import type { PartitionPoller } from './partition-poller.js';

/** What the HTTP app serves from. */
export interface MetricsAppOptions {
  poller: PartitionPoller;
  /** Operations and GC from etcd; absent: `/api/movement` says `etcd: "not-configured"` (per-node shares are still given). */
  movement?: MovementPoller;
  planner: { plan(target: { targetRows: number } | { targetBytes: number }, options: { signal?: AbortSignal }): Promise<unknown> };
  registry: Registry;
  /** Absent: no Redis configured (the page and /api/jobs say so). */
  jobs?: JobOverview;
  /** Bull Board's router, mounted at /queues. */
  queuesRouter?: Router;
  /** Who may look: tokens (role read; changing jobs in Bull Board admin) or loopback only. */
  auth: HttpAuthOptions;
  logger: Logger;
}

const wholeNumber = (name: string) =>
  z
    .string({ error: `${name} must be given once` })
    .regex(/^[0-9]+$/, `${name} must be a whole number`)
    .transform(Number)
    .refine((n) => Number.isSafeInteger(n) && n >= 1, `${name} must be at least 1`);

const shardsQuery = z
  .object({ targetRows: wholeNumber('targetRows').optional(), targetBytes: wholeNumber('targetBytes').optional() })
  .strict()
  .refine((q) => (q.targetRows === undefined) !== (q.targetBytes === undefined), 'give exactly one of targetRows and targetBytes');

/** The metrics server's routes: JSON API, /metrics, health, the page and Bull Board. */
export function createMetricsApp(options: MetricsAppOptions): Express {
  const { poller, planner, registry, jobs, logger } = options;
  const app = express();
  app.disable('x-powered-by');
  app.set('json spaces', 0);

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', (_req, res) => {
    if (poller.ready) res.json({ ready: true });
    else res.status(503).json({ ready: false, reason: poller.cluster().lastPoll?.error ?? 'no poll has reached a store node yet' });
  });
  // Everything below needs a token (or, without tokens, a loopback peer); probes above do not.
  app.use((req, res, next) => {
    const role = req.method === 'GET' || req.method === 'HEAD' ? 'read' : 'admin';
    const refusal = checkHttpRequest(req, role, options.auth);
    if (refusal === undefined) return next();
    res.status(refusal.status).set(refusal.headers).json({ error: { code: refusal.status === 401 ? 'UNAUTHENTICATED' : 'PERMISSION_DENIED', message: refusal.message } });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });

  app.get('/api/cluster', (_req, res) => {
    res.json(poller.cluster());
  });
  app.get('/api/partitions', (_req, res) => {
    res.json({ mapVersion: poller.currentMap()?.version ?? null, partitions: poller.partitions() });
  });
  app.get('/api/nodes', (_req, res) => {
    res.json({ nodes: poller.nodeViews() });
  });
  app.get('/api/movement', (_req, res) => {
    const partitions = poller.partitions();
    res.json(options.movement?.view(partitions) ?? { etcd: 'not-configured', error: null, readAtMs: null, operations: [], finished: [], gc: [], nodes: nodeDataShares(partitions) });
  });
  app.get('/api/jobs', async (_req, res) => {
    res.json(jobs ? await jobs.snapshot() : { redis: 'not-configured', error: null, queues: [] });
  });
  app.get('/api/shards', async (req, res) => {
    const parsed = shardsQuery.safeParse(req.query);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      // Our messages name the parameter already.
      const message = issue.code === 'unrecognized_keys' ? `unknown parameter ${issue.keys.map((k) => `"${k}"`).join(', ')}` : issue.message;
      throw new MetricsError('METRICS_INVALID_QUERY', `${message} (e.g. /api/shards?targetRows=1000000 or /api/shards?targetBytes=268435456)`);
    }
    const target = parsed.data.targetRows !== undefined ? { targetRows: parsed.data.targetRows } : { targetBytes: parsed.data.targetBytes! };
    const abort = new AbortController();
    res.once('close', () => abort.abort());
    res.json(await planner.plan(target, { signal: abort.signal }));
  });
  app.use('/api', (req, res) => {
    res.status(404).json({ error: { code: 'NOT_FOUND', message: `no API route ${req.method} ${req.originalUrl}` } });
  });

  if (options.queuesRouter) {
    app.use('/queues', options.queuesRouter);
  } else {
    app.get('/queues', (_req, res) => {
      res.status(404).type('text/plain').send('no Redis configured: start the metrics server with --redis URL (or SHARDPIPE_REDIS_URL) to see the job queues\n');
    });
  }

  app.use(express.static(webDir(), { index: 'index.html', maxAge: 0 }));
  app.use(errorHandler(logger));
  return app;
}

/** Maps errors to JSON: our codes with their HTTP status, store failures as 502/503. */
function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    let status = 500;
    if (err instanceof MetricsError) status = err.httpStatus;
    else if (err instanceof StoreError) status = err.retryable ? 503 : 502;
    if (status === 500) logger.error({ err, path: req.path }, 'request failed');
    else logger.debug({ err: err instanceof Error ? err.message : String(err), path: req.path, status }, 'request refused');
    if (res.headersSent) return;
    const code = err instanceof ShardpipeError ? err.code : 'INTERNAL';
    res.status(status).json({ error: { code, message: err instanceof Error ? err.message : String(err) } });
  };
}

/**
 * The page's static files (index.html, dashboard.js, dashboard.css) stay plain files in
 * metrics-server/web: found beside this module when run from the sources, or from dist/.
 */
function webDir(): string {
  const candidates = [join(import.meta.dirname, 'web'), join(import.meta.dirname, '../../metrics-server/web')];
  const found = candidates.find((dir) => existsSync(join(dir, 'index.html')));
  if (!found) throw new Error(`the metrics page is missing: none of ${candidates.join(', ')} has index.html`);
  return found;
}

