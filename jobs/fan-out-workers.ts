import type { ConnectionOptions } from 'bullmq';
import { Worker, type Job } from './commonjs-libraries.js';
import { contextOf, inSpan, isUnexpectedError, type Logger } from '../common/index.js';
import type { StoreClient } from '../store/index.js';
import type { TracedJobData } from './fan-out-flow.js';
import { decodeJobFailure, toBullmqError } from './job-failure.js';
import type { JobMetrics } from './job-metrics.js';
import { workerSettings } from './worker-settings.js';

/**
 * A processor of one queue; `signal` aborts when the worker closes or the job's lock is lost; `log`
 * is the worker's logger bound to the job's id and trace id (log every line of the job through it).
 */
export type FanOutProcessor<Data, Result> = (job: Job<Data, Result>, signal: AbortSignal | undefined, log: Logger) => Promise<Result>;

/** The options every job family's workers take (each family adds its own). */
export interface FanOutWorkerOptions {
  connection: ConnectionOptions;
  /** Reads or writes the store. Required; the caller owns and closes it. */
  client: StoreClient;
  /** Children (files, shards) worked on at once by this process. Default 2. */
  concurrency?: number;
  /** How long a job stays claimed by a worker that stopped answering (then another takes it over). Default 30000 ms. */
  lockDurationMs?: number;
  /** Job durations and `shardpipe_rows_total{kind}`; absent = no metrics. */
  metrics?: JobMetrics;
  logger: Logger;
}

/** One side of a fan-out: the queue a worker takes jobs from and what it does with them. */
export interface FanOutQueue<Data, Result> {
  queue: string;
  /** Jobs at once. Children: the options' `concurrency` (default 2); parents: required. */
  concurrency?: number;
  process: FanOutProcessor<Data, Result>;
}

/** What makes one job family out of the skeleton. */
export interface FanOutWorkersConfig<ChildData, ChildResult, ParentData, ParentResult> {
  /** Names the family in logs (`module: <kind>-worker`): `ingest`, `backup`, `restore`. */
  kind: string;
  children: FanOutQueue<ChildData, ChildResult>;
  parents: FanOutQueue<ParentData, ParentResult> & { concurrency: number };
  /** Closed after the workers, in order: what running jobs still use (queues, Redis clients, targets). */
  resources?: ReadonlyArray<{ close(): Promise<void> | void }>;
}

/**
 * The skeleton every job family runs on: a worker for the children (files, shards) and one for the
 * parents that report on them. A processor's error reaches BullMQ through the failure codec
 * (`toBullmqError`): its code, retryability and context travel in the job's failedReason, and a
 * non-retryable one is an UnrecoverableError, so BullMQ does not try again.
 */
export class FanOutWorkers<ChildData, ChildResult, ParentData, ParentResult> {
  private readonly workers: Worker[];
  private readonly resources: ReadonlyArray<{ close(): Promise<void> | void }>;
  private readonly kind: string;
  private closing: Promise<void> | undefined;

  protected constructor(options: Omit<FanOutWorkerOptions, 'client'>, config: FanOutWorkersConfig<ChildData, ChildResult, ParentData, ParentResult>) {
    const logger = options.logger.child({ module: `${config.kind}-worker` });
    const settings = workerSettings(options.connection, options.lockDurationMs);
    this.kind = config.kind;
    this.resources = config.resources ?? [];
    this.workers = [worker(config.children, settings, options.concurrency ?? 2, logger), worker(config.parents, settings, config.parents.concurrency, logger)];
    for (const worker of this.workers) {
      worker.on('error', (err) => logger.error({ err, queue: worker.name }, `${config.kind} worker error`));
      worker.on('failed', (job, err) => {
        const failure = decodeJobFailure(err.message);
        logger.warn({ queue: worker.name, jobId: job?.id, traceId: traceIdOf(job?.data), attemptsMade: job?.attemptsMade, code: failure.code, retryable: failure.retryable, context: failure.context, err: failure.message }, `${config.kind} job attempt failed`);
      });
    }
    options.metrics?.watch(this.workers);
  }

  /** Resolves once both workers are connected and taking jobs. */
  async waitUntilReady(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
  }

  /** Stops taking jobs and lets running ones finish (their checkpoints make a later resume cheap), then closes the resources. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // Running jobs still use the resources: close those after the workers.
      const results = await Promise.allSettled(this.workers.map((w) => w.close()));
      for (const resource of this.resources) results.push(...(await Promise.allSettled([resource.close()])));
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed.length > 0) throw new AggregateError(failed.map((f) => f.reason), `closing ${this.kind} workers failed`);
    })();
    return this.closing;
  }
}

function worker<Data, Result>(side: FanOutQueue<Data, Result>, settings: ReturnType<typeof workerSettings>, concurrency: number, logger: Logger): Worker<Data, Result> {
  return new Worker<Data, Result>(
    side.queue,
    // One span per job attempt (a file, a shard, a report), child of the operation's span.
    (job, _token, signal) =>
      inSpan(job.name, { 'messaging.destination.name': side.queue, 'shardpipe.job_id': String(job.id), 'shardpipe.attempt': job.attemptsMade + 1, ...jobContext(job.data) }, contextOf((job.data as TracedJobData | undefined)?.traceparent), async () => {
        const traceId = traceIdOf(job.data);
        const log = logger.child(traceId === undefined ? { jobId: job.id } : { jobId: job.id, traceId });
        try {
          return await side.process(job, signal, log);
        } catch (err) {
          // A bug or an unplanned failure: its stack is logged here (and so reaches the error reporter);
          // planned failures travel by code and are logged by the 'failed' listener.
          if (isUnexpectedError(err) && !signal?.aborted) log.error({ err, queue: side.queue, attemptsMade: job.attemptsMade, ...jobContext(job.data) }, 'job attempt failed with an unexpected error');
          throw toBullmqError(err);
        }
      }),
    { ...settings, concurrency },
  );
}

/** What identifies a job's work in a report: its operation's id, file and shard, where its data has them. */
function jobContext(data: unknown): Record<string, string | number> {
  const d = (data ?? {}) as Record<string, unknown> & { file?: { relativePath?: unknown }; shard?: { index?: unknown; file?: unknown } };
  const out: Record<string, string | number> = {};
  for (const key of ['ingestId', 'backupId', 'restoreId', 'index'] as const) {
    const v = d[key];
    if (typeof v === 'string' || typeof v === 'number') out[key === 'index' ? 'shard' : key] = v;
  }
  if (typeof d.file?.relativePath === 'string') out.file = d.file.relativePath;
  if (typeof d.shard?.index === 'number') out.shard = d.shard.index;
  if (typeof d.shard?.file === 'string') out.file = d.shard.file;
  return out;
}

/** The trace id a job's data carries (its operation's), if any. */
function traceIdOf(data: unknown): string | undefined {
  const traceparent = (data as TracedJobData | undefined)?.traceparent;
  return typeof traceparent === 'string' ? /^00-([0-9a-f]{32})-/.exec(traceparent)?.[1] : undefined;
}
