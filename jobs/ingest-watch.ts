import { setTimeout as sleep } from 'node:timers/promises';
import { Job, Queue, type ConnectionOptions } from 'bullmq';
import { JobsError } from './jobs-errors.js';
import { INGEST_FILE_QUEUE, INGEST_QUEUE, childJobId, type IngestFileData, type IngestParentData, type IngestPlan, type IngestReport } from './ingest-flow.js';
import { ProgressTracker, type ChildProgress, type ChildSnapshot, type IngestProgress } from './ingest-progress.js';

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
  const tracker = new ProgressTracker({ rowsTotal: plan.rowsTotal, bytesTotal: plan.bytesTotal, files: plan.children.length });
  const names = childNames(plan);
  try {
    for (;;) {
      const parent = await Job.fromId<IngestParentData, IngestReport>(parents, plan.ingestId);
      if (!parent) throw new JobsError('JOBS_NOT_FOUND', `ingest ${plan.ingestId} is not in Redis (removed, or another Redis?)`);
      const state = await parent.getState();
      // The job was read before getState, so it may predate completion: read it again for the report.
      if (state === 'completed') return await completedReport(parents, plan.ingestId);
      if (state === 'failed') throw new JobsError('JOBS_FAILED', `ingest ${plan.ingestId} failed: ${parent.failedReason}`);
      if (options.onProgress) {
        const snapshots: ChildSnapshot[] = [];
        for (let from = 0; from < plan.children.length; from += POLL_CHUNK) {
          const ids = plan.children.slice(from, from + POLL_CHUNK).map((_, i) => from + i);
          const jobs = await Promise.all(ids.map((i) => Job.fromId<IngestFileData>(files, childJobId(plan.ingestId, i))));
          for (const [k, job] of jobs.entries()) {
            const i = ids[k]!;
            const child = plan.children[i]!;
            const progress = job !== undefined && typeof job.progress === 'object' && job.progress !== null ? (job.progress as Partial<ChildProgress>) : undefined;
            snapshots.push({ index: i, name: names[i]!, rowsTotal: child.rowsTotal, bytesTotal: child.bytesTotal ?? 0, progress, state: childState(job) });
          }
        }
        options.onProgress(tracker.update(snapshots, performance.now()));
      }
      await sleep(options.pollMs ?? 500, undefined, { signal: options.signal });
    }
  } finally {
    await Promise.allSettled([parents.close(), files.close()]);
  }
}

/** Each child's file, with its row groups when the file is split over several children. */
function childNames(plan: IngestPlan): string[] {
  const perFile = new Map<string, number>();
  for (const c of plan.children) perFile.set(c.file.relativePath, (perFile.get(c.file.relativePath) ?? 0) + 1);
  return plan.children.map((c) => (perFile.get(c.file.relativePath)! > 1 ? `${c.file.relativePath} [row groups ${c.rowGroupStart}–${c.rowGroupEnd - 1}]` : c.file.relativePath));
}

function childState(job: Job<IngestFileData> | undefined): ChildSnapshot['state'] {
  if (job === undefined) return 'waiting';
  // A finished job with a result completed; one without failed for good (retries show as running).
  if (job.finishedOn !== undefined) return job.returnvalue !== null && job.returnvalue !== undefined ? 'done' : 'failed';
  return job.processedOn !== undefined ? 'running' : 'waiting';
}

async function completedReport(parents: Queue<IngestParentData>, ingestId: string): Promise<IngestReport> {
  const job = await Job.fromId<IngestParentData, IngestReport>(parents, ingestId);
  if (!job?.returnvalue) throw new JobsError('JOBS_NOT_FOUND', `ingest ${ingestId} completed but its report is gone from Redis`);
  return job.returnvalue;
}
