import type { Job, Worker } from 'bullmq';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** What a job moved: rows ingested into the store, written to backup shards, restored from them. */
export type RowsKind = 'ingest' | 'backup' | 'restore';

/** Seconds; a job is one file or shard, from under a second to hours. */
const JOB_BUCKETS_SECONDS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200];

/**
 * Job metrics of a worker process, on a prom-client registry passed in:
 * - `shardpipe_job_duration_seconds{queue, outcome}` — one observation per finished attempt
 *   (`outcome` "completed" or "failed"; a failed attempt that is retried counts as failed), from
 *   BullMQ's `processedOn` to `finishedOn` (or now);
 * - `shardpipe_rows_total{kind}` — rows moved, `kind` "ingest" | "backup" | "restore", incremented
 *   by job processors per acknowledged batch via `addRows`;
 * - `shardpipe_rows_rejected_total{kind}` — rows an ingest rejected (written to its rejects file),
 *   per checkpoint via `addRejected`;
 * - `shardpipe_backup_last_success_timestamp_seconds{target}` — Unix time at which the last backup
 *   to that target (redacted URL) wrote its manifest: completed in this process (`backupCompleted`)
 *   or recorded in Redis by any worker before this one started (`restoreBackupSuccess`).
 *
 * Usage in a worker: `metrics.watch([worker1, worker2])` once, and `metrics.addRows('backup', n)`
 * in the processor after each batch is durable. Several JobMetrics may share one registry.
 */
export class JobMetrics {
  private readonly durations: Histogram<'queue' | 'outcome'>;
  private readonly rows: Counter<'kind'>;
  private readonly rejected: Counter<'kind'>;
  private readonly backupSuccess: Gauge<'target'>;
  /** What backupSuccess holds, by target (Unix ms). */
  private readonly lastSuccessMs = new Map<string, number>();

  constructor(registry: Registry) {
    this.durations =
      (registry.getSingleMetric('shardpipe_job_duration_seconds') as Histogram<'queue' | 'outcome'> | undefined) ??
      new Histogram({
        name: 'shardpipe_job_duration_seconds',
        help: 'Duration of job attempts by queue and outcome (completed or failed)',
        labelNames: ['queue', 'outcome'],
        buckets: JOB_BUCKETS_SECONDS,
        registers: [registry],
      });
    this.rows =
      (registry.getSingleMetric('shardpipe_rows_total') as Counter<'kind'> | undefined) ??
      new Counter({ name: 'shardpipe_rows_total', help: 'Rows moved by jobs: ingested, backed up, restored', labelNames: ['kind'], registers: [registry] });
    this.rejected =
      (registry.getSingleMetric('shardpipe_rows_rejected_total') as Counter<'kind'> | undefined) ??
      new Counter({ name: 'shardpipe_rows_rejected_total', help: 'Rows rejected by jobs (written to the rejects file with the reason)', labelNames: ['kind'], registers: [registry] });
    this.backupSuccess =
      (registry.getSingleMetric('shardpipe_backup_last_success_timestamp_seconds') as Gauge<'target'> | undefined) ??
      new Gauge({
        name: 'shardpipe_backup_last_success_timestamp_seconds',
        help: 'Unix time the last complete backup to the target (redacted URL) wrote its manifest (kept in Redis across worker restarts)',
        labelNames: ['target'],
        registers: [registry],
      });
    // Present from the start, so rates and alerts work before the first job.
    for (const kind of ['ingest', 'backup', 'restore'] as const) this.rows.inc({ kind }, 0);
    this.rejected.inc({ kind: 'ingest' }, 0);
  }

  /** Records the duration of every attempt these workers finish. */
  watch(workers: readonly Worker[]): void {
    for (const worker of workers) {
      worker.on('completed', (job: Job) => this.observe(worker.name, 'completed', job));
      worker.on('failed', (job: Job | undefined) => {
        if (job) this.observe(worker.name, 'failed', job);
      });
    }
  }

  /** Adds `rows` (≥ 0) moved by a job of `kind`. */
  addRows(kind: RowsKind, rows: number): void {
    if (rows > 0) this.rows.inc({ kind }, rows);
  }

  /** Adds `rows` (≥ 0) rejected by a job of `kind`. */
  addRejected(kind: RowsKind, rows: number): void {
    if (rows > 0) this.rejected.inc({ kind }, rows);
  }

  /** Records that a backup to `target` (a redacted URL) became complete at `finishedAtMs`. */
  backupCompleted(target: string, finishedAtMs: number): void {
    this.lastSuccessMs.set(target, finishedAtMs);
    this.backupSuccess.set({ target }, finishedAtMs / 1000);
  }

  /** Sets the last success of each target from the durable record (Unix ms), unless this process saw a later one. */
  restoreBackupSuccess(lastSuccessMs: ReadonlyMap<string, number>): void {
    for (const [target, ms] of lastSuccessMs) {
      const current = this.lastSuccessMs.get(target);
      if (current === undefined || current < ms) this.backupCompleted(target, ms);
    }
  }

  private observe(queue: string, outcome: 'completed' | 'failed', job: Job): void {
    if (job.processedOn === undefined) return;
    const seconds = Math.max(0, ((job.finishedOn ?? Date.now()) - job.processedOn) / 1000);
    this.durations.observe({ queue, outcome }, seconds);
  }
}
