import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BackupError, readManifest, type BackupManifest, type BackupTarget, type TargetCallOptions } from '../backup/index.js';
import type { DataFile } from '../files/index.js';
import { describeCause } from '../common/index.js';
import { RestoreError, type RestoreErrorCode } from './restore-errors.js';
import type { ShardSpec } from './shard-file.js';

/** A shard file readable on this machine, and the identity of its bytes at the target. */
export interface LocalShard {
  file: DataFile;
  /** Size and modification time of the file at the target, hashed with its name: checkpoints are bound to it. */
  fingerprint: string;
  /** Removes a staged copy (nothing for a local target). Idempotent. */
  release(): Promise<void>;
}

export interface LocalShardOptions {
  /** Where copies of remote shard files are staged while they are read (deleted afterwards). */
  stagingDir: string;
  signal?: AbortSignal;
}

/**
 * Reads a backup's manifest for a restore. Translates the backup module's errors into restore's:
 * RESTORE_BACKUP_NOT_FOUND (no such folder, or a malformed id), RESTORE_BACKUP_INCOMPLETE (no
 * manifest), RESTORE_UNSUPPORTED_FORMAT, RESTORE_INVALID_MANIFEST, RESTORE_TARGET_UNAVAILABLE.
 * Other BackupErrors (access denied, invalid target URL) pass through.
 */
export async function readRestoreManifest(target: BackupTarget, backupId: string, options: TargetCallOptions = {}): Promise<BackupManifest> {
  try {
    return await readManifest(target, backupId, options);
  } catch (err) {
    throw translate(err, { backupId, target: target.url }) ?? err;
  }
}

/**
 * Makes a shard file readable locally: a file of a `file://` target is read where it is; a blob is
 * copied to the staging folder (streamed, bounded memory) and checked against the size listed.
 * The file's size must be the manifest's `bytes`, else RESTORE_CORRUPT_SHARD.
 */
export async function openLocalShard(target: BackupTarget, backupId: string, shard: ShardSpec, options: LocalShardOptions): Promise<LocalShard> {
  const context = { backupId, target: target.url, shard: shard.index, file: shard.file };
  let info;
  try {
    info = await target.stat(backupId, shard.file, { signal: options.signal });
  } catch (err) {
    throw translate(err, context) ?? err;
  }
  if (info === undefined) throw new RestoreError('RESTORE_CORRUPT_SHARD', `shard ${shard.index}: ${shard.file} is missing from backup ${backupId} in ${target.url}`, { context });
  if (info.bytes !== shard.bytes) {
    throw new RestoreError('RESTORE_CORRUPT_SHARD', `shard ${shard.index}: ${shard.file} is ${info.bytes} bytes, the manifest says ${shard.bytes}`, { context });
  }
  const fingerprint = createHash('sha256').update(`${target.url}\0${backupId}\0${shard.file}\0${info.bytes}\0${info.modifiedAtMs}`).digest('hex');
  const inPlace = target.localPath(backupId, shard.file);
  if (inPlace !== undefined) return { file: await localFile(inPlace, shard), fingerprint, release: async () => {} };

  const dir = join(options.stagingDir, backupId);
  const path = join(dir, `${shard.file}.${fingerprint.slice(0, 12)}.${randomUUID().slice(0, 8)}`);
  const temp = `${path}.download`;
  try {
    await mkdir(dir, { recursive: true });
    const source = await target.openRead(backupId, shard.file, { signal: options.signal });
    await pipeline(source, createWriteStream(temp, { flags: 'wx' }), { signal: options.signal });
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    if (options.signal?.aborted) throw options.signal.reason;
    const translated = translate(err, context);
    if (translated) throw translated;
    throw new RestoreError('RESTORE_STAGING_FAILED', `shard ${shard.index}: cannot copy ${shard.file} to ${dir}: ${describeCause(err)}`, { cause: err, context });
  }
  let released = false;
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    await rm(path, { force: true });
  };
  try {
    const file = await localFile(path, shard);
    if (file.sizeBytes !== shard.bytes) {
      throw new RestoreError('RESTORE_TARGET_UNAVAILABLE', `shard ${shard.index}: received ${file.sizeBytes} bytes of ${shard.file}, expected ${shard.bytes}; try again`, { context });
    }
    return { file, fingerprint, release };
  } catch (err) {
    await release();
    throw err;
  }
}

async function localFile(path: string, shard: ShardSpec): Promise<DataFile> {
  let s;
  try {
    s = await stat(path);
  } catch (err) {
    throw new RestoreError('RESTORE_CORRUPT_SHARD', `shard ${shard.index}: cannot read ${path}: ${describeCause(err)}`, { cause: err, context: { shard: shard.index, file: shard.file } });
  }
  return { path, format: 'parquet', sizeBytes: s.size, mtimeMs: s.mtimeMs };
}

const TRANSLATIONS: Partial<Record<string, RestoreErrorCode>> = {
  BACKUP_NOT_FOUND: 'RESTORE_BACKUP_NOT_FOUND',
  BACKUP_INVALID_ID: 'RESTORE_BACKUP_NOT_FOUND',
  BACKUP_INCOMPLETE: 'RESTORE_BACKUP_INCOMPLETE',
  BACKUP_UNSUPPORTED_VERSION: 'RESTORE_UNSUPPORTED_FORMAT',
  BACKUP_MANIFEST_INVALID: 'RESTORE_INVALID_MANIFEST',
  BACKUP_TARGET_UNAVAILABLE: 'RESTORE_TARGET_UNAVAILABLE',
};

function translate(err: unknown, context: { backupId: string; target: string; shard?: number; file?: string }): RestoreError | undefined {
  if (!(err instanceof BackupError)) return undefined;
  let code = TRANSLATIONS[err.code];
  // A shard file named by the manifest that cannot be found is a damaged backup, not a missing one.
  if (code === 'RESTORE_BACKUP_NOT_FOUND' && context.shard !== undefined) code = 'RESTORE_CORRUPT_SHARD';
  return code === undefined ? undefined : new RestoreError(code, err.message, { cause: err, context });
}
