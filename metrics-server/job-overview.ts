import { Queue, type Job, type JobType } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from '../common/index.js';
import { INGEST_FILE_QUEUE, INGEST_QUEUE, connectionFromUrl, decodeJobFailure, formatJobFailure } from '../jobs/index.js';

/** A queue the page lists once it exists in Redis. */
export interface WatchedQueue {
  name: string;
  kind: 'ingest' | 'backup' | 'restore';
  /** `flow`: parent jobs, one per user-level operation; `task`: their children (files, shards). */
  role: 'flow' | 'task';
}

/** The queues of ingest, backup and restore. Backup and restore name theirs in jobs/ as they are built. */
export const WATCHED_QUEUES: readonly WatchedQueue[] = [
  { name: INGEST_QUEUE, kind: 'ingest', role: 'flow' },
  { name: INGEST_FILE_QUEUE, kind: 'ingest', role: 'task' },
  { name: 'shardpipe-backup', kind: 'backup', role: 'flow' },
  { name: 'shardpipe-backup-shard', kind: 'backup', role: 'task' },
  { name: 'shardpipe-restore', kind: 'restore', role: 'flow' },
  { name: 'shardpipe-restore-shard', kind: 'restore', role: 'task' },
];

export interface JobOverviewOptions {
  /** redis:// or rediss:// URL of the job queues. Required. */
  redisUrl: string;
  /** Default WATCHED_QUEUES. */
  queues?: readonly WatchedQueue[];
  /** Running jobs listed per queue. Default 20. */
  maxRunning?: number;
  /** Finished jobs (newest first) listed per queue. Default 10. */
  maxRecent?: number;
  /** Budget of one snapshot; Redis not answering within it is reported as unreachable. Default 3000 ms. */
  timeoutMs?: number;
  /** Called once for each queue found in Redis (to mount it in Bull Board). */
  onQueueFound?: (queue: Queue) => void;
  logger: Logger;
}

/** One job as the page shows it. Times are Unix ms. */
export interface JobView {
  id: string;
  name: string;
  state: string;
  createdMs: number;
  startedMs: number | null;
  finishedMs: number | null;
  attemptsMade: number;
  /** 0–1 when known. */
  progress: number | null;
  /** For people, e.g. "120,000 / 500,000 rows" or "3 / 8 children". */
  progressText: string;
  failedReason: string | null;
  /** Flow parents: their children by outcome. */
  children: { done: number; failed: number; pending: number } | null;
}

export interface QueueView extends WatchedQueue {
  paused: boolean;
  counts: Record<string, number>;
  running: JobView[];
  recent: JobView[];
}

export interface JobsView {
  redis: 'not-configured' | 'ok' | 'unreachable';
  error: string | null;
  /** Only the watched queues that exist in Redis. */
  queues: QueueView[];
}

const RUNNING_STATES: readonly JobType[] = ['active', 'waiting-children', 'waiting', 'prioritized', 'delayed'];
const COUNTED_STATES: readonly JobType[] = ['active', 'waiting-children', 'waiting', 'prioritized', 'delayed', 'completed', 'failed'];

/**
 * Reads the running and recent jobs of the watched queues from BullMQ, read-only: queues are
 * opened with `skipMetasUpdate`, so the metrics server never creates a queue by looking at it.
 */
export class JobOverview {
  private readonly redis: Redis;
  private readonly watched: readonly WatchedQueue[];
  private readonly found = new Map<string, Queue>();
  private readonly maxRunning: number;
  private readonly maxRecent: number;
  private readonly timeoutMs: number;
  private readonly onQueueFound: ((queue: Queue) => void) | undefined;
  private readonly logger: Logger;
  private closing: Promise<void> | undefined;

  constructor(options: JobOverviewOptions) {
    // A page must not hang on a Redis that is down: fail commands fast instead of queueing them forever.
    this.redis = new Redis({ ...(connectionFromUrl(options.redisUrl) as object), maxRetriesPerRequest: 1, lazyConnect: true });
    this.redis.on('error', (err) => this.logger.debug({ err: err.message }, 'redis connection error'));
    this.watched = options.queues ?? WATCHED_QUEUES;
    this.maxRunning = options.maxRunning ?? 20;
    this.maxRecent = options.maxRecent ?? 10;
    this.timeoutMs = options.timeoutMs ?? 3000;
    this.onQueueFound = options.onQueueFound;
    this.logger = options.logger.child({ module: 'metrics-jobs' });
  }

  /** Opens the watched queues that now exist in Redis (a queue exists once it has metadata, events or jobs). */
  async discover(): Promise<void> {
    if (this.redis.status === 'wait') await this.redis.connect();
    for (const watched of this.watched) {
      if (this.found.has(watched.name)) continue;
      const prefix = `bull:${watched.name}`;
      if ((await this.redis.exists(`${prefix}:meta`, `${prefix}:events`, `${prefix}:id`)) === 0) continue;
      const queue = new Queue(watched.name, { connection: this.redis, skipMetasUpdate: true });
      queue.on('error', (err) => this.logger.debug({ err: err.message, queue: watched.name }, 'queue error'));
      this.found.set(watched.name, queue);
      this.onQueueFound?.(queue);
    }
  }

  /** Counts, running and recent jobs of every watched queue that exists. Never rejects. */
  async snapshot(): Promise<JobsView> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Redis did not answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    try {
      return await Promise.race([this.read(), timeout]);
    } catch (err) {
      return { redis: 'unreachable', error: err instanceof Error ? err.message : String(err), queues: [] };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the queues and the connection. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.found.values()].map((q) => q.close()));
      this.redis.disconnect();
    })();
    return this.closing;
  }

  private async read(): Promise<JobsView> {
    await this.discover();
    const queues: QueueView[] = [];
    for (const watched of this.watched) {
      const queue = this.found.get(watched.name);
      if (!queue) continue;
      const counts = await queue.getJobCounts(...COUNTED_STATES);
      const running: JobView[] = [];
      for (const state of RUNNING_STATES) {
        if (running.length >= this.maxRunning || (counts[state] ?? 0) === 0) continue;
        const jobs = (await queue.getJobs([state], 0, this.maxRunning - running.length - 1, state !== 'active')) as Job[];
        for (const job of jobs) running.push(await this.view(job, state, watched.role));
      }
      const finished = [
        ...((await queue.getJobs(['completed'], 0, this.maxRecent - 1, false)) as Job[]),
        ...((await queue.getJobs(['failed'], 0, this.maxRecent - 1, false)) as Job[]),
      ]
        .filter((job) => job !== undefined && job !== null)
        .sort((a, b) => (b.finishedOn ?? 0) - (a.finishedOn ?? 0))
        .slice(0, this.maxRecent);
      const recent: JobView[] = [];
      for (const job of finished) recent.push(await this.view(job, job.failedReason ? 'failed' : 'completed', watched.role));
      queues.push({ ...watched, paused: await queue.isPaused(), counts, running, recent });
    }
    return { redis: 'ok', error: null, queues };
  }

  private async view(job: Job, state: string, role: WatchedQueue['role']): Promise<JobView> {
    let children: JobView['children'] = null;
    if (role === 'flow') {
      const c = await job.getDependenciesCount();
      const total = (c.processed ?? 0) + (c.unprocessed ?? 0) + (c.ignored ?? 0) + (c.failed ?? 0);
      if (total > 0) children = { done: c.processed ?? 0, failed: (c.ignored ?? 0) + (c.failed ?? 0), pending: c.unprocessed ?? 0 };
    }
    const { progress, progressText } = describeProgress(job, state, children);
    return {
      id: String(job.id),
      name: job.name,
      state,
      createdMs: job.timestamp,
      startedMs: job.processedOn ?? null,
      finishedMs: job.finishedOn ?? null,
      attemptsMade: job.attemptsMade,
      progress,
      progressText,
      // Decoded from the failure codec's envelope, so the page shows `CODE: message`.
      failedReason: job.failedReason ? formatJobFailure(decodeJobFailure(job.failedReason)) : null,
      children,
    };
  }
}

/** Progress from what the job reports: a number (percent), `{ rowsDone, rowsTotal }`, `{ bytesDone, bytesTotal }`, or its children. */
function describeProgress(job: Job, state: string, children: JobView['children']): { progress: number | null; progressText: string } {
  if (state === 'completed') return { progress: 1, progressText: describeResult(job) };
  const p = job.progress as unknown;
  if (typeof p === 'number' && p > 0) return { progress: Math.min(1, p / 100), progressText: `${Math.round(p)}%` };
  if (typeof p === 'object' && p !== null) {
    const o = p as Record<string, unknown>;
    for (const unit of ['rows', 'bytes'] as const) {
      const done = o[`${unit}Done`];
      const total = o[`${unit}Total`];
      if (typeof done === 'number' && typeof total === 'number') {
        return { progress: total > 0 ? Math.min(1, done / total) : null, progressText: `${fmt(done)} / ${fmt(total)} ${unit}` };
      }
    }
  }
  if (children) {
    const total = children.done + children.failed + children.pending;
    const rowsTotal = (job.data as { rowsTotal?: unknown } | undefined)?.rowsTotal;
    const rows = typeof rowsTotal === 'number' ? ` (${fmt(rowsTotal)} rows in all)` : '';
    return {
      progress: total > 0 ? (children.done + children.failed) / total : null,
      progressText: `${children.done + children.failed} / ${total} children done${children.failed ? `, ${children.failed} failed` : ''}${rows}`,
    };
  }
  return { progress: null, progressText: state };
}

function describeResult(job: Job): string {
  const r = job.returnvalue as Record<string, unknown> | null | undefined;
  if (r && typeof r === 'object') {
    if (typeof r.rowsIngested === 'number') return `${fmt(r.rowsIngested)} rows ingested${typeof r.rowsRejected === 'number' && r.rowsRejected > 0 ? `, ${fmt(r.rowsRejected)} rejected` : ''}`;
    for (const key of ['rows', 'rowsWritten', 'rowsRestored', 'rowsBackedUp']) {
      if (typeof r[key] === 'number') return `${fmt(r[key] as number)} rows`;
    }
  }
  return 'done';
}

function fmt(n: number): string {
  return n.toLocaleString('en-US');
}
