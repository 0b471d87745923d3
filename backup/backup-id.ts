import { randomBytes } from 'node:crypto';
import { BackupError } from './backup-errors.js';

/** `YYYYMMDDTHHMMSSZ-xxxxxx`: UTC start time, then 6 lowercase hex characters of randomness (FORMAT.md). */
export const BACKUP_ID_PATTERN = /^\d{8}T\d{6}Z-[0-9a-f]{6}$/;

/** A new backup id for a backup started at `now` (default: the current time). Ids sort by start time. */
export function newBackupId(now: Date = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}

export function isBackupId(id: string): boolean {
  return BACKUP_ID_PATTERN.test(id);
}

/** Throws BackupError BACKUP_INVALID_ID unless `id` is a backup id; returns it. */
export function assertBackupId(id: string): string {
  if (typeof id !== 'string' || !BACKUP_ID_PATTERN.test(id)) {
    throw new BackupError('BACKUP_INVALID_ID', `"${String(id).slice(0, 80)}" is not a backup id: expected YYYYMMDDTHHMMSSZ-xxxxxx, as \`backup list\` prints them`, {
      context: { backupId: String(id).slice(0, 80) },
    });
  }
  return id;
}

/** The start time encoded in a backup id, in Unix milliseconds. */
export function backupIdTimeMs(id: string): number {
  assertBackupId(id);
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id)!;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}
