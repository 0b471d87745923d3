import type { ConnectionOptions } from 'bullmq';
import { Queue } from './commonjs-libraries.js';
import { BackupError, parseBackupUrl } from '../backup/index.js';
import { BACKUP_QUEUE, type BackupSpec } from './backup-flow.js';
import type { ScheduledBackupData } from './backup-worker.js';

/** A registered backup schedule. */
export interface BackupSchedule {
  /** The schedule's name (its BullMQ job scheduler id is `backup:NAME`). */
  name: string;
  cron: string;
  tz?: string;
  /** Next run, Unix ms. */
  nextRunMs?: number;
  spec?: BackupSpec;
}

const PREFIX = 'backup:';
const NAME = /^[A-Za-z0-9._-]{1,100}$/;

/**
 * Registers (or updates: same name) a BullMQ job scheduler on the backup queue whose jobs start a
 * backup with `spec` — run by any backup worker; the backup's parent then applies retention
 * (`spec.keep`). Throws BackupError BACKUP_INVALID_SCHEDULE for a bad name, `keep` or cron pattern.
 */
export async function upsertBackupSchedule(connection: ConnectionOptions, schedule: { name: string; cron: string; tz?: string; spec: BackupSpec }): Promise<BackupSchedule> {
  const { name, cron, tz, spec } = schedule;
  if (!NAME.test(name)) throw new BackupError('BACKUP_INVALID_SCHEDULE', `schedule name "${name}" must be 1–100 letters, digits, '.', '_' or '-'`);
  if (spec.keep !== undefined && (!Number.isInteger(spec.keep) || spec.keep < 1)) throw new BackupError('BACKUP_INVALID_SCHEDULE', `--keep must be a whole number ≥ 1, got ${spec.keep}`);
  parseBackupUrl(spec.target);
  const queue = new Queue<ScheduledBackupData>(BACKUP_QUEUE, { connection });
  try {
    let job;
    try {
      job = await queue.upsertJobScheduler(PREFIX + name, { pattern: cron, ...(tz ? { tz } : {}) }, { name: 'scheduled-backup', data: { schedule: name, spec }, opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } } });
    } catch (err) {
      throw new BackupError('BACKUP_INVALID_SCHEDULE', `cron pattern "${cron}"${tz ? ` (tz ${tz})` : ''} is not accepted: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return { name, cron, tz, spec, nextRunMs: job ? job.timestamp + (job.opts.delay ?? 0) : undefined };
  } finally {
    await queue.close();
  }
}

/** Every backup schedule in this Redis, by name. */
export async function listBackupSchedules(connection: ConnectionOptions): Promise<BackupSchedule[]> {
  const queue = new Queue<ScheduledBackupData>(BACKUP_QUEUE, { connection });
  try {
    const schedulers = await queue.getJobSchedulers(0, -1, true);
    return schedulers
      .filter((s) => s.key.startsWith(PREFIX))
      .map((s) => ({
        name: s.key.slice(PREFIX.length),
        cron: s.pattern ?? '',
        tz: s.tz ?? undefined,
        nextRunMs: s.next ?? undefined,
        spec: (s.template?.data as ScheduledBackupData | undefined)?.spec,
      }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  } finally {
    await queue.close();
  }
}

/** Removes a schedule. Throws BackupError BACKUP_INVALID_SCHEDULE when there is none of that name. */
export async function removeBackupSchedule(connection: ConnectionOptions, name: string): Promise<void> {
  const queue = new Queue(BACKUP_QUEUE, { connection });
  try {
    if (!(await queue.removeJobScheduler(PREFIX + name))) {
      throw new BackupError('BACKUP_INVALID_SCHEDULE', `there is no backup schedule "${name}" (\`backup schedule list\` shows them)`);
    }
  } finally {
    await queue.close();
  }
}
