import { setTimeout as sleep } from 'node:timers/promises';
import { Job, Queue, type ConnectionOptions } from 'bullmq';
import { JobsError } from './jobs-errors.js';
import { INGEST_FILE_QUEUE, INGEST_QUEUE, childJobId, type IngestFileData, type IngestParentData, type IngestPlan, type IngestReport } from './ingest-flow.js';

/** A progress snapshot of an ingest. Rows never go backwards, also across resumes. */
export interface IngestProgress {
  rowsDone: number;
  rowsTotal: number;
  filesDone: number;
  filesFailed: number;
  files: number;
  /** Rows per second since watching began. */
  rowsPerSecond: number;
  /** Seconds left at that rate; undefined until there is a rate. */
  etaSeconds: number | undefined;
}

export interface WatchOptions {
  /** How often to look, in ms. Default 500. */
  pollMs?: number;
  onProgress?: (progress: IngestProgress) => void;
  signal?: AbortSignal;
}

const POLL_CHUNK = 200;

/** Follows an ingest until its parent job completes and resolves its report. */
export async function watchIngest(connection: ConnectionOptions, plan: IngestPlan, options: WatchOptions = {}): Promise<IngestReport> {
  const parents = new Queue<IngestParentData>(INGEST_QUEUE, { connection });
  const files = new Queue<IngestFileData>(INGEST_FILE_QUEUE, { connection });
  const best = new Map<number, number>();
  const started = performance.now();
  let startRows: number | undefined;
  try {
    for (;;) {
      const parent = await Job.fromId<IngestParentData, IngestReport>(parents, plan.ingestId);
      if (!parent) throw new JobsError('JOBS_NOT_FOUND', `ingest ${plan.ingestId} is not in Redis (removed, or another Redis?)`);
      const state = await parent.getState();
      // The job was read before getState, so it may predate completion: read it again for the report.
      if (state === 'completed') return await completedReport(parents, plan.ingestId);
      if (state === 'failed') throw new JobsError('JOBS_FAILED', `ingest ${plan.ingestId} failed: ${parent.failedReason}`);
      if (options.onProgress) {
        let filesDone = 0;
        let filesFailed = 0;
        for (let from = 0; from < plan.children.length; from += POLL_CHUNK) {
          const ids = plan.children.slice(from, from + POLL_CHUNK).map((_, i) => from + i);
          const jobs = await Promise.all(ids.map((i) => Job.fromId<IngestFileData>(files, childJobId(plan.ingestId, i))));
          for (const [k, job] of jobs.entries()) {
            if (!job) continue;
            const i = ids[k]!;
            const progress = job.progress as { rowsDone?: number } | number;
            const rows = typeof progress === 'object' && progress !== null ? (progress.rowsDone ?? 0) : 0;
            if (job.finishedOn !== undefined && job.failedReason === undefined) filesDone++;
            else if (job.finishedOn !== undefined) filesFailed++;
            best.set(i, Math.max(best.get(i) ?? 0, rows));
          }
        }
        const rowsDone = [...best.values()].reduce((s, n) => s + n, 0);
        startRows ??= rowsDone;
        const seconds = (performance.now() - started) / 1000;
        const rate = seconds > 0 ? (rowsDone - startRows) / seconds : 0;
        options.onProgress({
          rowsDone,
          rowsTotal: plan.rowsTotal,
          filesDone,
          filesFailed,
          files: plan.children.length,
          rowsPerSecond: Math.round(rate),
          etaSeconds: rate > 0 ? Math.max(0, Math.round((plan.rowsTotal - rowsDone) / rate)) : undefined,
        });
      }
      await sleep(options.pollMs ?? 500, undefined, { signal: options.signal });
    }
  } finally {
    await Promise.allSettled([parents.close(), files.close()]);
  }
}

async function completedReport(parents: Queue<IngestParentData>, ingestId: string): Promise<IngestReport> {
  const job = await Job.fromId<IngestParentData, IngestReport>(parents, ingestId);
  if (!job?.returnvalue) throw new JobsError('JOBS_NOT_FOUND', `ingest ${ingestId} completed but its report is gone from Redis`);
  return job.returnvalue;
}
