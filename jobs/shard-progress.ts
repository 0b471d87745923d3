import type { Job } from 'bullmq';
import { childState } from './flow-watch.js';

/** A progress snapshot of a backup or restore. Rows never go backwards, also across shard retries and resumes. */
export interface ShardProgress {
  rowsDone: number;
  /** Rows expected in all (for a backup: partition counts at the snapshots, approximate); never below rowsDone. */
  rowsTotal: number;
  shardsDone: number;
  shardsFailed: number;
  shards: number;
  /** Rows per second since watching began. */
  rowsPerSecond: number;
  /** Seconds left at that rate; undefined until there is a rate. */
  etaSeconds: number | undefined;
}

/**
 * Turns polls of a flow's shard jobs (each reporting `{ rowsDone }` as its BullMQ progress) into
 * ShardProgress. A retried shard starts again from its checkpoint or snapshot: its progress may
 * dip, the total kept here does not.
 */
export class ShardProgressTracker {
  private readonly best = new Map<number, number>();
  private readonly started = performance.now();
  private startRows: number | undefined;

  constructor(private readonly rowsTotal: number) {}

  /** `jobs[i]` is the job of shard i of the watch (undefined: not in Redis). */
  update(jobs: ReadonlyArray<Job | undefined>, now = performance.now()): ShardProgress {
    let shardsDone = 0;
    let shardsFailed = 0;
    for (const [i, job] of jobs.entries()) {
      if (!job) continue;
      const state = childState(job);
      if (state === 'done') shardsDone++;
      else if (state === 'failed') shardsFailed++;
      const progress = job.progress as { rowsDone?: number } | number;
      const rows = typeof progress === 'object' && progress !== null ? (progress.rowsDone ?? 0) : 0;
      this.best.set(i, Math.max(this.best.get(i) ?? 0, rows));
    }
    const rowsDone = [...this.best.values()].reduce((s, n) => s + n, 0);
    this.startRows ??= rowsDone;
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? (rowsDone - this.startRows) / seconds : 0;
    const rowsTotal = Math.max(this.rowsTotal, rowsDone);
    return {
      rowsDone,
      rowsTotal,
      shardsDone,
      shardsFailed,
      shards: jobs.length,
      rowsPerSecond: Math.round(rate),
      etaSeconds: rate > 0 ? Math.max(0, Math.round((rowsTotal - rowsDone) / rate)) : undefined,
    };
  }
}
