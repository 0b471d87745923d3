import type { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isAbsolute } from 'node:path';
import { describeCause, formatAzureUrl, isAzureUrl, parseAzureUrl } from '../common/index.js';
import { BackupError } from './backup-errors.js';

/** A parsed backup target URL. */
export type BackupUrl =
  | { kind: 'file'; /** Absolute local folder. */ dir: string }
  | { kind: 'az'; container: string; /** Blob name prefix, '' or ending in '/'. */ prefix: string };

/** A committed file of a backup. */
export interface TargetFileInfo {
  /** Name relative to the backup's folder (`shard-00000.parquet`, `manifest.json`). */
  name: string;
  bytes: number;
  /** Last modification, Unix milliseconds. */
  modifiedAtMs: number;
}

export interface TargetCallOptions {
  signal?: AbortSignal;
}

export interface TargetReadOptions extends TargetCallOptions {
  /** First byte to read. Default 0. */
  offset?: number;
  /** Bytes to read from `offset`. Default: to the end of the file. */
  length?: number;
}

/**
 * Where backups live: one folder per backup id, files inside (FORMAT.md). Implementations:
 * a local folder (`file:///DIR`) and an Azure Blob container prefix (`az://CONTAINER/PREFIX`).
 *
 * Writes are all-or-nothing: a file becomes visible under its name only once `writeFile` has
 * consumed its whole source and the bytes are durable (local: temporary name, fsync, rename;
 * Azure: a block blob whose block list is committed last). A write that fails or is aborted
 * leaves the previous content of that name (or nothing) visible, never a partial file.
 *
 * Every method throws BackupError: BACKUP_INVALID_ID, BACKUP_NOT_FOUND, BACKUP_ACCESS_DENIED,
 * BACKUP_TARGET_UNAVAILABLE (retryable), BACKUP_TARGET_IO_FAILED; or the signal's reason when aborted.
 */
export interface BackupTarget {
  /** The target's URL in canonical form (`file:///abs/dir`, `az://container/prefix`). */
  readonly url: string;
  /** Ids of every backup folder in the target (complete or not), ascending. Other names are ignored. */
  listBackupIds(options?: TargetCallOptions): Promise<string[]>;
  /** Committed files of one backup, by name ascending; [] when the backup folder does not exist. */
  listFiles(backupId: string, options?: TargetCallOptions): Promise<TargetFileInfo[]>;
  /** One committed file, or undefined when it does not exist. */
  stat(backupId: string, name: string, options?: TargetCallOptions): Promise<TargetFileInfo | undefined>;
  /**
   * Streams `source` into `name`, committing it only after the last chunk (see above). Memory is
   * bounded by the implementation's buffers, not by the file's size. Resolves with the bytes written.
   */
  writeFile(backupId: string, name: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options?: TargetCallOptions): Promise<{ bytes: number }>;
  /** Writes a small text file atomically (the manifest). */
  writeText(backupId: string, name: string, text: string, options?: TargetCallOptions): Promise<void>;
  /** A small text file, or undefined when it does not exist. */
  readText(backupId: string, name: string, options?: TargetCallOptions): Promise<string | undefined>;
  /** A stream of a file's bytes (or of a byte range). BACKUP_NOT_FOUND when it does not exist. */
  openRead(backupId: string, name: string, options?: TargetReadOptions): Promise<Readable>;
  /** The file's path when the target is a local folder (readers may then open it directly); undefined for remote targets. */
  localPath(backupId: string, name: string): string | undefined;
  /** Removes a backup's folder with every file in it (also uncommitted temporary files). Resolves with the files removed. */
  deleteBackup(backupId: string, options?: TargetCallOptions): Promise<number>;
  /** Releases clients. Idempotent. */
  close(): Promise<void>;
}

/** File names inside a backup folder: no separators, not hidden (hidden names are temporary files). */
const FILE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/;

/**
 * `file:///ABS/DIR` → `{ kind: 'file', dir }`; `az://CONTAINER/PREFIX` → `{ kind: 'az', container, prefix }`
 * with the prefix normalised to '' or ending in '/'. Throws BackupError BACKUP_INVALID_TARGET.
 */
export function parseBackupUrl(url: string): BackupUrl {
  if (typeof url !== 'string') throw new TypeError(`a backup target URL must be a string, got ${typeof url}`);
  const invalid = (why: string): BackupError =>
    new BackupError('BACKUP_INVALID_TARGET', `backup target "${url}" ${why}; expected file:///ABSOLUTE/DIR or az://CONTAINER/PREFIX`, { context: { target: url } });
  if (/^file:/i.test(url)) {
    let dir: string;
    try {
      dir = fileURLToPath(url);
    } catch (err) {
      throw invalid(`is not a valid file URL (${describeCause(err)})`);
    }
    if (!isAbsolute(dir)) throw invalid('does not name an absolute folder');
    return { kind: 'file', dir: dir.length > 1 ? dir.replace(/\/+$/, '') : dir };
  }
  if (isAzureUrl(url)) {
    // At most 900 characters leave room for the backup id and file names under Azure's 1024.
    const { container, prefix } = parseAzureUrl(url, { asFolder: true, maxPrefixChars: 900, invalid: (reason) => invalid(`is not usable: ${reason}`) });
    return { kind: 'az', container, prefix };
  }
  throw invalid('has an unknown scheme');
}

/** The canonical URL of a parsed target. */
export function formatBackupUrl(parsed: BackupUrl): string {
  if (parsed.kind === 'file') return pathToFileURL(parsed.dir).href;
  return formatAzureUrl(parsed.container, parsed.prefix.replace(/\/$/, ''));
}

/** Throws BackupError BACKUP_INVALID_TARGET for a file name that cannot live in a backup folder. */
export function assertFileName(name: string, target: string): string {
  if (typeof name !== 'string' || !FILE_NAME.test(name) || name === '..' || name === '.') {
    throw new BackupError('BACKUP_INVALID_TARGET', `"${String(name).slice(0, 80)}" is not a backup file name (letters, digits, '.', '_', '-'; not starting with '.')`, {
      context: { target },
    });
  }
  return name;
}
