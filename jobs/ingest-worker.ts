import type { RedisOptions } from 'ioredis';
import { Job, Queue, Redis } from './commonjs-libraries.js';
import type { Logger } from '../common/index.js';
import { IngestError, RejectsWriter, assertFileUnchanged, assertStagedBlobUnchanged, ingestFile, mergeRejects, type FileCheckpoint } from '../ingest/index.js';
import { INGEST_FILE_QUEUE, INGEST_QUEUE, rejectsFileOf, rejectsPartsDirOf, type IngestFileData, type IngestFileReport, type IngestFileResult, type IngestParentData, type IngestReport } from './ingest-flow.js';
import { childProgress } from './ingest-progress.js';
import { FanOutWorkers, type FanOutWorkerOptions } from './fan-out-workers.js';
import { decodeJobFailure, formatJobFailure, jobFailureError } from './job-failure.js';

/** Workers' options; `concurrency` counts files (default 2), `client` routes rows to the store nodes. */
export interface IngestWorkerOptions extends FanOutWorkerOptions {
  /** BulkInsert calls in flight per file. Default 4. */
  maxInFlight?: number;
}

/** Least time between two progress updates of a file child, in ms (the watch reads them every 500). */
const PROGRESS_INTERVAL_MS = 250;

/** The workers of one process: file children and the parents that report on them. */
export class IngestWorkers extends FanOutWorkers<IngestFileData, IngestFileResult, IngestParentData, IngestReport> {
  static start(options: IngestWorkerOptions): IngestWorkers {
    const logger = options.logger.child({ module: 'ingest-worker' });
    const fileQueue = new Queue<IngestFileData>(INGEST_FILE_QUEUE, { connection: options.connection });
    const budget = new RejectBudget(new Redis(options.connection as RedisOptions));
    return new IngestWorkers(options, {
      kind: 'ingest',
      children: { queue: INGEST_FILE_QUEUE, process: (job, signal, log) => processFile(job, options, budget, log, signal) },
      parents: { queue: INGEST_QUEUE, concurrency: 4, process: (job) => reportOnChildren(job, fileQueue) },
      resources: [fileQueue, budget],
    });
  }
}

async function processFile(job: Job<IngestFileData, IngestFileResult>, options: IngestWorkerOptions, budget: RejectBudget, logger: Logger, signal?: AbortSignal): Promise<IngestFileResult> {
  const data = job.data;
  const log = logger.child({ file: data.file.relativePath });
  const started = Date.now();
  if (data.plannedFailure !== undefined) throw jobFailureError(data.plannedFailure);
  // A blob of an Azure drop is read from its staged copy: it must still hold the planned version.
  await assertStagedBlobUnchanged(data.file);
  await assertFileUnchanged(data.file);
  // A resumed child keeps the rejects written before its checkpoint.
  const rejects = await RejectsWriter.open(data.rejectsPath, { append: data.checkpoint !== undefined });
  let rowsCounted = data.checkpoint?.rowsIngested ?? 0;
  let rejectsCounted = data.checkpoint?.rowsRejected ?? 0;
  let overBudget: IngestError | undefined;
  let progressAt = Number.NEGATIVE_INFINITY;
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
          options.metrics?.addRejected('ingest', checkpoint.rowsRejected - rejectsCounted);
          rejectsCounted = checkpoint.rowsRejected;
          await job.updateData({ ...data, checkpoint });
          // The checkpoint (what a resume needs) is kept at every acknowledged batch; the progress
          // only feeds views that read it every 500 ms or more, and the final one is always written.
          if (performance.now() - progressAt >= PROGRESS_INTERVAL_MS) {
            progressAt = performance.now();
            await job.updateProgress(childProgress(data, checkpoint));
          }
          if (data.spec.maxRejects === undefined || overBudget !== undefined) return;
          // Not thrown here: batches in flight still land, and the file stops at the next batch so
          // that the last checkpoint counts them (see stopWhen).
          try {
            await budget.check(String(job.id), data, checkpoint.rowsRejected);
          } catch (err) {
            if (!(err instanceof IngestError)) throw err;
            overBudget = err;
          }
        },
        stopWhen: () => overBudget,
      },
    );
  } finally {
    await rejects.close();
  }
  if (overBudget !== undefined) throw overBudget;
  await job.updateProgress(childProgress(data, final));
  return { ...final, file: data.file.relativePath, rowGroupStart: data.rowGroupStart, rowGroupEnd: data.rowGroupEnd, durationMs: Date.now() - started };
}

/**
 * --max-rejects is per ingest: each child records its own reject count in a Redis hash of the
 * ingest, so the budget holds across files and workers. A child fails only when rejects of its own
 * go over the budget: the one that crosses the line (recorded once, so every message names it) and
 * any that add rejects after it. Files without new rejects are never blamed.
 */
class RejectBudget {
  constructor(private readonly redis: Redis) {}

  async check(jobId: string, data: IngestFileData, childRejected: number): Promise<void> {
    const key = `shardpipe:ingest-rejects:${data.ingestId}`;
    const file = data.file.relativePath;
    const [previous, total, crossedBy] = (await this.redis.eval(BUDGET_SCRIPT, 2, key, `${key}:crossed-by`, jobId, childRejected, data.spec.maxRejects!, 7 * 24 * 3600, file)) as [number, number, string | null];
    if (total <= data.spec.maxRejects! || childRejected <= previous) return;
    const where = `see ${rejectsFileOf(data.spec, data.ingestId)}`;
    const message =
      crossedBy === file
        ? `${file} crossed the reject budget: ${total} rows rejected, over --max-rejects ${data.spec.maxRejects} (${childRejected} of them in this file); ${where}`
        : `${file} rejected ${childRejected} rows after ${crossedBy} crossed --max-rejects ${data.spec.maxRejects} (${total} rows rejected, over --max-rejects ${data.spec.maxRejects}); ${where}`;
    throw new IngestError('INGEST_TOO_MANY_REJECTS', message, { context: { file } });
  }

  async close(): Promise<void> {
    await this.redis.quit();
  }
}

/**
 * Atomically: record this child's count (KEYS[1] field ARGV[1] = ARGV[2]), sum all, and remember
 * the first file (ARGV[5]) whose count took the sum over ARGV[3]. Returns { previous count, sum, that file }.
 */
const BUDGET_SCRIPT = `
local previous = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total > tonumber(ARGV[3]) and tonumber(ARGV[2]) > previous then
  redis.call('SET', KEYS[2], ARGV[5], 'NX', 'EX', ARGV[4])
end
return { previous, total, redis.call('GET', KEYS[2]) }
`;

async function reportOnChildren(job: Job<IngestParentData, IngestReport>, fileQueue: Queue<IngestFileData>): Promise<IngestReport> {
  const values = (await job.getChildrenValues<IngestFileResult>()) as Record<string, IngestFileResult>;
  const ignored = await job.getIgnoredChildrenFailures();
  const files: Array<IngestFileReport & { order: number }> = [];
  for (const [key, result] of Object.entries(values)) {
    const { file, rowGroupStart, rowGroupEnd, rowsIngested, rowsRejected, rowsOutOfOrder, bytesIngested } = result;
    files.push({ order: childOrder(key), file, rowGroupStart, rowGroupEnd, state: 'ok', rowsIngested, rowsRejected, rowsOutOfOrder, bytesIngested });
  }
  for (const [key, failedReason] of Object.entries(ignored)) {
    const failure = decodeJobFailure(failedReason);
    const child = await Job.fromId<IngestFileData>(fileQueue, key.slice(key.lastIndexOf(':') + 1));
    // A failed file still wrote everything up to its last checkpoint: count it, so report and store agree.
    const done = child?.data.checkpoint;
    files.push({
      order: childOrder(key),
      file: child?.data.file.relativePath ?? key,
      rowGroupStart: child?.data.rowGroupStart ?? 0,
      rowGroupEnd: child?.data.rowGroupEnd ?? 0,
      state: 'failed',
      rowsIngested: done?.rowsIngested ?? 0,
      rowsRejected: done?.rowsRejected ?? 0,
      rowsOutOfOrder: done?.rowsOutOfOrder ?? 0,
      bytesIngested: done?.bytesIngested ?? 0,
      code: failure.code,
      reason: formatJobFailure(failure),
    });
  }
  files.sort((a, b) => a.order - b.order);
  const sum = (field: 'rowsIngested' | 'rowsRejected' | 'rowsOutOfOrder' | 'bytesIngested'): number => files.reduce((s, f) => s + f[field], 0);
  // Every child has finished: their rejects files become the ingest's one file.
  const rejectsPath = rejectsFileOf(job.data.spec, job.data.ingestId);
  await mergeRejects(rejectsPartsDirOf(job.data.spec, job.data.ingestId), rejectsPath);
  const rowsIngested = sum('rowsIngested');
  const durationMs = Date.now() - job.data.submittedAt;
  const failed = files.filter((f) => f.state === 'failed');
  return {
    id: job.data.ingestId,
    source: job.data.spec.source,
    rowsIngested,
    rowsRejected: sum('rowsRejected'),
    rowsOutOfOrder: sum('rowsOutOfOrder'),
    keyOverlaps: job.data.keyOverlaps ?? { filesOverlapping: 0, overlappingPairs: 0, overlaps: [], filesWithoutKeyRange: 0 },
    bytesIngested: sum('bytesIngested'),
    filesOk: files.length - failed.length,
    filesFailed: failed.length,
    failures: failed.map((f) => ({ file: f.file, code: f.code!, reason: f.reason! })),
    files: files.map(({ order: _order, ...f }) => f),
    rejectsPath,
    durationMs,
    rowsPerSecond: durationMs > 0 ? Math.round((rowsIngested * 1000) / durationMs) : 0,
  };
}

/** A child's index from its job key (`…-f<index>`, see childJobId), for listing files in plan order. */
function childOrder(key: string): number {
  const index = Number(key.slice(key.lastIndexOf('-f') + 2));
  return Number.isSafeInteger(index) ? index : Number.MAX_SAFE_INTEGER;
}
