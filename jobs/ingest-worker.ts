import { Redis, type RedisOptions } from 'ioredis';
import { Job, Queue, UnrecoverableError, Worker, type ConnectionOptions } from 'bullmq';
import { ShardpipeError, type Logger } from '../common/index.js';
import { IngestError, RejectsWriter, assertFileUnchanged, assertStagedBlobUnchanged, ingestFile, mergeRejects, type FileCheckpoint } from '../ingest/index.js';
import type { StoreClient } from '../store/index.js';
import type { JobMetrics } from './job-metrics.js';
import { INGEST_FILE_QUEUE, INGEST_QUEUE, rejectsFileOf, rejectsPartsDirOf, type IngestFileData, type IngestFileResult, type IngestParentData, type IngestReport } from './ingest-flow.js';
import { childProgress } from './ingest-progress.js';
import { workerSettings } from './worker-settings.js';

export interface IngestWorkerOptions {
  connection: ConnectionOptions;
  /** Routes rows to the store nodes. Required; the caller owns and closes it. */
  client: StoreClient;
  /** Files ingested at once by this worker. Default 2. */
  concurrency?: number;
  /** How long a job stays claimed by a worker that stopped answering (then another takes it over). Default 30000 ms. */
  lockDurationMs?: number;
  /** BulkInsert calls in flight per file. Default 4. */
  maxInFlight?: number;
  /** Records job durations and rows ingested. Default: none. */
  metrics?: JobMetrics;
  logger: Logger;
}

/** The workers of one process: file children and the parents that report on them. */
export class IngestWorkers {
  private readonly workers: Worker[];
  private readonly fileQueue: Queue;
  private readonly budget: RejectBudget;
  private closing: Promise<void> | undefined;

  private constructor(workers: Worker[], fileQueue: Queue, budget: RejectBudget) {
    this.workers = workers;
    this.fileQueue = fileQueue;
    this.budget = budget;
  }

  static start(options: IngestWorkerOptions): IngestWorkers {
    const logger = options.logger.child({ module: 'ingest-worker' });
    const common = workerSettings(options.connection, options.lockDurationMs);
    const fileQueue = new Queue<IngestFileData>(INGEST_FILE_QUEUE, { connection: options.connection });
    const rejectCounts = new RejectBudget(new Redis(options.connection as RedisOptions));
    const files = new Worker<IngestFileData, IngestFileResult>(INGEST_FILE_QUEUE, (job, _token, signal) => processFile(job, options, rejectCounts, logger, signal), {
      ...common,
      concurrency: options.concurrency ?? 2,
    });
    const parents = new Worker<IngestParentData, IngestReport>(INGEST_QUEUE, (job) => reportOnChildren(job, fileQueue), { ...common, concurrency: 4 });
    for (const worker of [files, parents]) {
      worker.on('error', (err) => logger.error({ err, queue: worker.name }, 'ingest worker error'));
      worker.on('failed', (job, err) => logger.warn({ jobId: job?.id, attemptsMade: job?.attemptsMade, err: err.message }, 'ingest job attempt failed'));
    }
    options.metrics?.watch([files, parents]);
    return new IngestWorkers([files, parents], fileQueue, rejectCounts);
  }

  /** Resolves once both workers are connected and taking jobs. */
  async waitUntilReady(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
  }

  /** Stops taking jobs and lets running ones finish (their checkpoints make a later resume cheap). Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // Running jobs still use the queue and the reject budget: close those after the workers.
      const results = await Promise.allSettled(this.workers.map((w) => w.close()));
      results.push(...(await Promise.allSettled([this.fileQueue.close(), this.budget.close()])));
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed.length > 0) throw new AggregateError(failed.map((f) => f.reason), 'closing ingest workers failed');
    })();
    return this.closing;
  }
}

async function processFile(job: Job<IngestFileData, IngestFileResult>, options: IngestWorkerOptions, budget: RejectBudget, logger: Logger, signal?: AbortSignal): Promise<IngestFileResult> {
  const data = job.data;
  const log = logger.child({ jobId: job.id, file: data.file.relativePath });
  const started = Date.now();
  if (data.plannedFailure !== undefined) throw new UnrecoverableError(data.plannedFailure);
  try {
    // A blob of an Azure drop is read from its staged copy: it must still hold the planned version.
    await assertStagedBlobUnchanged(data.file);
    await assertFileUnchanged(data.file);
    // A resumed child keeps the rejects written before its checkpoint.
    const rejects = await RejectsWriter.open(data.rejectsPath, { append: data.checkpoint !== undefined });
    let rowsCounted = data.checkpoint?.rowsIngested ?? 0;
    let final;
    try {
      if (data.checkpoint) log.info({ rowGroup: data.checkpoint.rowGroup, rowOffset: data.checkpoint.rowOffset, rowsDone: data.checkpoint.rowsDone }, 'resuming file from checkpoint');
      final = await ingestFile(
        options.client,
        { file: data.file, rowGroupStart: data.rowGroupStart, rowGroupEnd: data.rowGroupEnd },
        {
          keyColumn: data.spec.keyColumn,
          valueColumn: data.spec.valueColumn,
          rejects,
          resumeFrom: data.checkpoint,
          strictOrder: data.spec.strictOrder,
          maxRowsPerSecond: data.spec.maxRowsPerSecond,
          maxInFlight: options.maxInFlight,
          signal,
          onCheckpoint: async (checkpoint: FileCheckpoint) => {
            options.metrics?.addRows('ingest', checkpoint.rowsIngested - rowsCounted);
            rowsCounted = checkpoint.rowsIngested;
            await job.updateData({ ...data, checkpoint });
            await job.updateProgress(childProgress(data, checkpoint));
            if (data.spec.maxRejects !== undefined) await budget.check(String(job.id), data, checkpoint.rowsRejected);
          },
        },
      );
    } finally {
      await rejects.close();
    }
    await job.updateProgress(childProgress(data, final));
    return { ...final, file: data.file.relativePath, rowGroupStart: data.rowGroupStart, rowGroupEnd: data.rowGroupEnd, durationMs: Date.now() - started };
  } catch (err) {
    // Bad input does not get better by retrying; the store being unavailable may.
    if (err instanceof ShardpipeError && !err.retryable) {
      log.error({ code: err.code, err: err.message }, 'file failed');
      throw new UnrecoverableError(`${err.code}: ${err.message}`);
    }
    throw err;
  }
}

/**
 * --max-rejects is per ingest: each child records its own reject count in a Redis hash of the
 * ingest, so the budget holds across files and workers.
 */
class RejectBudget {
  constructor(private readonly redis: Redis) {}

  async check(jobId: string, data: IngestFileData, childRejected: number): Promise<void> {
    const client = this.redis;
    const key = `shardpipe:ingest-rejects:${data.ingestId}`;
    await client.hset(key, jobId, childRejected);
    await client.expire(key, 7 * 24 * 3600);
    const total = (await client.hvals(key)).reduce((sum, n) => sum + Number(n), 0);
    if (total > data.spec.maxRejects!) {
      throw new IngestError('INGEST_TOO_MANY_REJECTS', `${total} rows rejected, over --max-rejects ${data.spec.maxRejects}: see ${rejectsFileOf(data.spec, data.ingestId)}`, {
        context: { file: data.file.relativePath },
      });
    }
  }

  async close(): Promise<void> {
    await this.redis.quit();
  }
}

async function reportOnChildren(job: Job<IngestParentData, IngestReport>, fileQueue: Queue<IngestFileData>): Promise<IngestReport> {
  const values = (await job.getChildrenValues<IngestFileResult>()) as Record<string, IngestFileResult>;
  const ignored = await job.getIgnoredChildrenFailures();
  const failures: IngestReport['failures'] = [];
  for (const [key, reason] of Object.entries(ignored)) {
    const child = await Job.fromId<IngestFileData>(fileQueue, key.slice(key.lastIndexOf(':') + 1));
    failures.push({ file: child?.data.file.relativePath ?? key, reason });
  }
  const results = Object.values(values);
  // Every child has finished: their rejects files become the ingest's one file.
  const rejectsPath = rejectsFileOf(job.data.spec, job.data.ingestId);
  await mergeRejects(rejectsPartsDirOf(job.data.spec, job.data.ingestId), rejectsPath);
  const rowsIngested = results.reduce((s, r) => s + r.rowsIngested, 0);
  const durationMs = Date.now() - job.data.submittedAt;
  return {
    id: job.data.ingestId,
    source: job.data.spec.source,
    rowsIngested,
    rowsRejected: results.reduce((s, r) => s + r.rowsRejected, 0),
    rowsOutOfOrder: results.reduce((s, r) => s + r.rowsOutOfOrder, 0),
    keyOverlaps: job.data.keyOverlaps ?? { filesOverlapping: 0, overlappingPairs: 0, overlaps: [], filesWithoutKeyRange: 0 },
    bytesIngested: results.reduce((s, r) => s + r.bytesIngested, 0),
    filesOk: results.length,
    filesFailed: failures.length,
    failures,
    rejectsPath,
    durationMs,
    rowsPerSecond: durationMs > 0 ? Math.round((rowsIngested * 1000) / durationMs) : 0,
  };
}
