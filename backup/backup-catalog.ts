import { BackupError } from './backup-errors.js';
import { backupIdTimeMs } from './backup-id.js';
import { MANIFEST_FILE } from './backup-layout.js';
import { readManifest, type BackupManifest } from './backup-manifest.js';
import type { BackupTarget, TargetCallOptions } from './backup-target.js';

/** One backup folder of a target, as `backup list` shows it. */
export interface BackupSummary {
  id: string;
  /**
   * complete: a valid manifest (restorable); incomplete: no manifest (failed, killed or still
   * running); unreadable: a manifest that is invalid or of an unknown format version.
   */
  state: 'complete' | 'incomplete' | 'unreadable';
  /** Start time from the id, ISO. */
  startedAt: string;
  /** From the manifest (complete backups only). */
  finishedAt?: string;
  rows?: number;
  shards?: number;
  /** Bytes of the shard files (complete: from the manifest; otherwise what is in the folder now). */
  bytes: number;
  /** Files in the folder. */
  files: number;
  /** Newest file modification in the folder (Unix ms), or the start time when it is empty. */
  lastWriteMs: number;
  /** Why a manifest is unreadable. */
  problem?: string;
  manifest?: BackupManifest;
}

/** Every backup folder of the target, oldest first, with its state. Reads each manifest. */
export async function listBackups(target: BackupTarget, options: TargetCallOptions = {}): Promise<BackupSummary[]> {
  const out: BackupSummary[] = [];
  for (const id of await target.listBackupIds(options)) {
    const files = await target.listFiles(id, options);
    const startedMs = backupIdTimeMs(id);
    const base = {
      id,
      startedAt: new Date(startedMs).toISOString(),
      files: files.length,
      bytes: files.filter((f) => f.name !== MANIFEST_FILE).reduce((s, f) => s + f.bytes, 0),
      lastWriteMs: Math.max(startedMs, ...files.map((f) => f.modifiedAtMs)),
    };
    if (!files.some((f) => f.name === MANIFEST_FILE)) {
      out.push({ ...base, state: 'incomplete' });
      continue;
    }
    try {
      const manifest = await readManifest(target, id, options);
      out.push({ ...base, state: 'complete', finishedAt: manifest.finishedAt, rows: manifest.totals.rows, shards: manifest.shards.length, bytes: manifest.totals.bytes, manifest });
    } catch (err) {
      if (!(err instanceof BackupError) || !['BACKUP_MANIFEST_INVALID', 'BACKUP_UNSUPPORTED_VERSION', 'BACKUP_INCOMPLETE'].includes(err.code)) throw err;
      // Deleted between the listing and the read: it is now incomplete.
      if (err.code === 'BACKUP_INCOMPLETE') out.push({ ...base, state: 'incomplete' });
      else out.push({ ...base, state: 'unreadable', problem: `${err.code}: ${err.message}` });
    }
  }
  return out;
}
