import { listBackups, type BackupSummary } from './backup-catalog.js';
import type { BackupTarget } from './backup-target.js';

/** Options of `applyRetention`. */
export interface RetentionOptions {
  /** Complete backups to keep, newest first. At least 1. */
  keep: number;
  /**
   * An incomplete backup is deleted only when nothing was written to it for this long, in ms
   * (a backup still running keeps writing shard files). Default 6 h.
   */
  incompleteGraceMs?: number;
  /** Report what would be deleted without deleting. Default false. */
  dryRun?: boolean;
  /** Unix ms to judge ages against. Default now. */
  nowMs?: number;
  signal?: AbortSignal;
}

export interface RetentionReport {
  target: string;
  kept: string[];
  deleted: Array<{ id: string; state: BackupSummary['state']; reason: string }>;
  dryRun: boolean;
}

/**
 * Applies the retention policy to a target:
 * - keeps the newest `keep` complete backups and deletes older complete ones; with `keep` ≥ 1 the
 *   newest complete backup — the only one, if there is one — is never deleted;
 * - deletes an incomplete backup (no manifest: failed or killed) when it is older than the newest
 *   complete backup AND nothing was written to it for `incompleteGraceMs` — so a backup that is
 *   still running is never removed under its workers;
 * - never touches a backup whose manifest is unreadable (possibly a newer format): reported as kept.
 * Age is by backup id, which sorts by start time.
 */
export async function applyRetention(target: BackupTarget, options: RetentionOptions): Promise<RetentionReport> {
  const { keep } = options;
  if (!Number.isInteger(keep) || keep < 1) throw new RangeError(`keep must be a whole number ≥ 1 (the newest complete backup is never deleted), got ${keep}`);
  const graceMs = options.incompleteGraceMs ?? 6 * 3600_000;
  if (!Number.isFinite(graceMs) || graceMs < 0) throw new RangeError(`incompleteGraceMs must be ≥ 0, got ${graceMs}`);
  const now = options.nowMs ?? Date.now();
  const dryRun = options.dryRun ?? false;
  const backups = await listBackups(target, { signal: options.signal });
  const complete = backups.filter((b) => b.state === 'complete').sort((a, b) => (a.id < b.id ? 1 : -1));
  const newestComplete = complete[0]?.id;
  const doomed = new Map<string, { b: BackupSummary; reason: string }>();
  for (const b of complete.slice(keep)) doomed.set(b.id, { b, reason: `older than the newest ${keep} complete backup(s)` });
  for (const b of backups) {
    if (b.state !== 'incomplete' || newestComplete === undefined || b.id >= newestComplete) continue;
    if (now - b.lastWriteMs < graceMs) continue;
    doomed.set(b.id, { b, reason: `incomplete, older than the newest complete backup ${newestComplete}, nothing written for ${Math.round((now - b.lastWriteMs) / 1000)} s` });
  }
  const deleted: RetentionReport['deleted'] = [];
  for (const { b, reason } of [...doomed.values()].sort((x, y) => (x.b.id < y.b.id ? -1 : 1))) {
    options.signal?.throwIfAborted();
    if (!dryRun) await target.deleteBackup(b.id, { signal: options.signal });
    deleted.push({ id: b.id, state: b.state, reason });
  }
  return { target: target.url, kept: backups.filter((b) => !doomed.has(b.id)).map((b) => b.id), deleted, dryRun };
}
