import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectionOptions } from 'bullmq';
import { Job, Queue, QueueEvents } from './commonjs-libraries.js';
import { decodeJobFailure, formatJobFailure, type JobFailure } from './job-failure.js';
import { JobsError } from './jobs-errors.js';

/** One fan-out flow to follow: a parent job whose children do the work. */
export interface FlowWatch<ParentData, Report, ChildData> {
  /** Names the flow in messages: `ingest`, `backup`, `restore`. */
  kind: string;
  parentQueue: string;
  childQueue: string;
  /** The parent job's id (the ingest, backup or restore id). */
  parentId: string;
  /** Ids of the children whose jobs `onChildren` is given, in the order it gets them. */
  childIds?: (parent: Job<ParentData, Report>) => readonly string[];
  /** Called at every poll while the parent runs, with each child's job (undefined: not in Redis yet or any more). */
  onChildren?: (children: ReadonlyArray<Job<ChildData> | undefined>, parent: Job<ParentData, Report>) => void;
  /** The error a failed parent rejects with, from its failure; undefined or absent: JobsError JOBS_FAILED. */
  errorOf?: (failure: JobFailure) => Error | undefined;
}

export interface WatchFlowOptions {
  /** How often to read the children for `onChildren`, in ms. Default 500. */
  pollMs?: number;
  /**
   * How often to look whether the parent has finished, in ms (at most `pollMs`), while the parent
   * queue's events cannot be followed. Default 50: the wait after the last child finishes is part of
   * every command's wall time. While they can (the usual case), the parent's `completed` or `failed`
   * event wakes the watch at once and it looks only every `pollMs`: a look every 50 ms was a tenth
   * of an ingest's Redis commands and of its CPU besides the rows.
   */
  finishPollMs?: number;
  signal?: AbortSignal;
}

/** Children read from Redis at once. */
const POLL_CHUNK = 200;

/**
 * Follows a flow until its parent job finishes: resolves the parent's return value (the report),
 * rejects with the parent's failure (see `errorOf`), or with JobsError JOBS_NOT_FOUND once the
 * parent is not in Redis (removed, another Redis) or completed without a report.
 */
export async function watchFlow<ParentData, Report, ChildData>(connection: ConnectionOptions, watch: FlowWatch<ParentData, Report, ChildData>, options: WatchFlowOptions = {}): Promise<Report> {
  const parents = new Queue<ParentData>(watch.parentQueue, { connection });
  const children = new Queue<ChildData>(watch.childQueue, { connection });
  const what = `${watch.kind} ${watch.parentId}`;
  const notFound = (): JobsError => new JobsError('JOBS_NOT_FOUND', `${what} is not in Redis (removed, or another Redis?)`, { context: { jobId: watch.parentId } });
  const pollMs = options.pollMs ?? 500;
  const finishPollMs = Math.min(pollMs, options.finishPollMs ?? 50);
  let childrenReadAt = Number.NEGATIVE_INFINITY;
  // The look stays the truth; the events only end a wait early (see followFinish).
  const finished = followFinish(connection, watch.parentQueue, watch.parentId);
  try {
    for (;;) {
      // The state alone is one small call; the job (its data and outcome) is read when needed.
      const state = await parents.getJobState(watch.parentId);
      if (state === 'unknown') throw notFound();
      if (state === 'completed' || state === 'failed') {
        const done = await Job.fromId<ParentData, Report>(parents, watch.parentId);
        if (state === 'failed') throw failed(what, watch.parentId, decodeJobFailure(done?.failedReason), watch.errorOf);
        if (done?.returnvalue === undefined || done.returnvalue === null) throw new JobsError('JOBS_NOT_FOUND', `${what} completed but its report is gone from Redis`, { context: { jobId: watch.parentId } });
        return done.returnvalue;
      }
      if (watch.onChildren && performance.now() - childrenReadAt >= pollMs) {
        childrenReadAt = performance.now();
        const parent = await Job.fromId<ParentData, Report>(parents, watch.parentId);
        if (!parent) throw notFound();
        const ids = watch.childIds?.(parent) ?? [];
        const jobs: Array<Job<ChildData> | undefined> = [];
        for (let from = 0; from < ids.length; from += POLL_CHUNK) {
          jobs.push(...(await Promise.all(ids.slice(from, from + POLL_CHUNK).map((id) => Job.fromId<ChildData>(children, id)))));
        }
        watch.onChildren(jobs, parent);
      }
      await finished.wait(finished.following ? pollMs : finishPollMs, options.signal);
    }
  } finally {
    await Promise.allSettled([parents.close(), children.close(), finished.close()]);
  }
}

/** Wakes a watch when the parent job finishes: `wait(ms)` ends early at its `completed` or `failed` event. */
interface FinishFollower {
  /** Whether the queue's events are being read (else `wait` only times out). */
  readonly following: boolean;
  wait(ms: number, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/**
 * Until the events connection is ready the watch looks every `finishPollMs`, as without it (its
 * start stays off the command's path); once it is, the wait in hand ends so that one more look
 * catches a finish from before, and every later finish comes as an event.
 */
function followFinish(connection: ConnectionOptions, queue: string, jobId: string): FinishFollower {
  let wake: (() => void) | undefined;
  // Set when the next wait should end at once: a finish event, or the events just became ready.
  let lookNow = false;
  const events = new QueueEvents(queue, { connection });
  const onFinish = ({ jobId: id }: { jobId: string }): void => {
    if (id !== jobId) return;
    lookNow = true;
    wake?.();
  };
  events.on('completed', onFinish);
  events.on('failed', onFinish);
  let following = false;
  let broken = false;
  // A failed events connection (after the start too) only costs the fast polling back.
  events.on('error', () => {
    broken = true;
    following = false;
    wake?.();
  });
  events.waitUntilReady().then(
    () => {
      if (broken) return;
      following = true;
      lookNow = true;
      wake?.();
    },
    () => {
      broken = true;
    },
  );
  return {
    get following() {
      return following;
    },
    async wait(ms, signal) {
      if (!lookNow) {
        const woken = new AbortController();
        wake = () => woken.abort();
        try {
          await sleep(ms, undefined, { signal: signal === undefined ? woken.signal : AbortSignal.any([signal, woken.signal]) });
        } catch (err) {
          if (signal?.aborted || !woken.signal.aborted) throw err;
        } finally {
          wake = undefined;
        }
      }
      lookNow = false;
    },
    close: () => events.close(),
  };
}

function failed(what: string, jobId: string, failure: JobFailure, errorOf?: (failure: JobFailure) => Error | undefined): Error {
  return errorOf?.(failure) ?? new JobsError('JOBS_FAILED', `${what} failed: ${formatJobFailure(failure)}`, { context: { jobId, failureCode: failure.code } });
}

/** Where a child job stands. */
export type ChildState = 'waiting' | 'running' | 'done' | 'failed';

/**
 * A child's state from its job. A finished job with a result completed; one without failed for
 * good — an attempt that is retried is not finished, and a job that failed once, then completed,
 * is done.
 */
export function childState(job: Job | undefined): ChildState {
  if (job === undefined) return 'waiting';
  if (job.finishedOn !== undefined) return job.returnvalue !== null && job.returnvalue !== undefined ? 'done' : 'failed';
  return job.processedOn !== undefined ? 'running' : 'waiting';
}
