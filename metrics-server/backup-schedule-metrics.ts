import { getNextMillis } from 'bullmq';
import { Gauge, type Registry } from 'prom-client';
import { formatBackupUrl, parseBackupUrl } from '../backup/index.js';
import type { Logger } from '../common/index.js';
import { connectionFromUrl, listBackupSchedules } from '../jobs/index.js';

export interface BackupScheduleMetricsOptions {
  /** Where the gauge is registered. Required. */
  registry: Registry;
  /** redis:// or rediss:// URL holding the backup schedules. Required. */
  redisUrl: string;
  /** How long one reading of the schedules is reused by later scrapes. Default 30000 ms. */
  cacheMs?: number;
  logger: Logger;
}

interface ScheduleFigure {
  schedule: string;
  target: string;
  intervalSeconds: number;
}

/**
 * `shardpipe_backup_schedule_interval_seconds{schedule, target}`: the time between a backup
 * schedule's next run and the one after (its cron pattern read as BullMQ reads it), so an alert can
 * compare `shardpipe_backup_last_success_timestamp_seconds` of the same `target` (the target's URL
 * as the workers label it) with the schedule's own period. Read from Redis at most every `cacheMs`;
 * while Redis does not answer, the last figures stay.
 */
export class BackupScheduleMetrics {
  private figures: ScheduleFigure[] = [];
  private readAtMs = -Infinity;
  private reading: Promise<void> | undefined;

  constructor(private readonly options: BackupScheduleMetricsOptions) {
    const metrics = this;
    new Gauge({
      name: 'shardpipe_backup_schedule_interval_seconds',
      help: 'Seconds between the next two runs of a backup schedule, by schedule name and target URL',
      labelNames: ['schedule', 'target'],
      registers: [options.registry],
      async collect(this: Gauge<'schedule' | 'target'>) {
        await metrics.refresh();
        this.reset();
        for (const f of metrics.figures) this.set({ schedule: f.schedule, target: f.target }, f.intervalSeconds);
      },
    });
  }

  private refresh(): Promise<void> {
    if (Date.now() - this.readAtMs < (this.options.cacheMs ?? 30_000)) return Promise.resolve();
    this.reading ??= this.read().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async read(): Promise<void> {
    try {
      const schedules = await listBackupSchedules({ ...connectionFromUrl(this.options.redisUrl), maxRetriesPerRequest: 1, connectTimeout: 3000 });
      const figures: ScheduleFigure[] = [];
      for (const s of schedules) {
        if (s.spec === undefined || s.cron === '') continue;
        try {
          const next = s.nextRunMs ?? Date.now();
          const after = getNextMillis(next, { pattern: s.cron, ...(s.tz ? { tz: s.tz } : {}) });
          if (after !== undefined && after > next) {
            figures.push({ schedule: s.name, target: formatBackupUrl(parseBackupUrl(s.spec.target)), intervalSeconds: (after - next) / 1000 });
          }
        } catch (err) {
          // One unreadable schedule (a target or pattern an older version accepted) does not hide the others.
          this.options.logger.debug({ schedule: s.name, err: (err as Error).message }, 'backup schedule skipped in metrics');
        }
      }
      this.figures = figures;
      this.readAtMs = Date.now();
    } catch (err) {
      this.options.logger.debug({ err: (err as Error).message }, 'backup schedules not readable');
    }
  }
}
