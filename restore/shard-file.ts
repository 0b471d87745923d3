import { BackupError, readShardColumns as readBackupShardColumns, readShardRows as readBackupShardRows, shardFooterProblem, type ReadShardRowsOptions, type ShardChunk as BackupShardChunk, type ShardColumnsChunk } from '../backup/index.js';
import type { DataFile } from '../files/index.js';
import type { StoredEntry } from '../store/index.js';
import { RestoreError } from './restore-errors.js';

/** One entry of a shard file (FORMAT.md), as the store takes it. Times in Unix ms; 0 = no expiry. */
export type ShardRow = StoredEntry;

/** What a shard file must be, from the manifest. Keys are lowercase hex; "" = open end. */
export interface ShardSpec {
  index: number;
  start: string;
  end: string;
  /** Relative to the backup folder. */
  file: string;
  rows: number;
  bytes: number;
  /** RangeDigest hex of every row, etag included (FORMAT.md "Checksum"). */
  checksum: string;
  /**
   * The ordered content hash of the file's rows (FORMAT.md "Content hash"), in manifests of format 2.
   * Absent (format 1): the restore checks the file with each row's digest against `checksum`.
   */
  contentHash?: string;
}

/** A run of rows of a shard file and where it sits (backup's reader). */
export type ShardChunk = BackupShardChunk;

export interface ReadShardOptions {
  /** Start here: row group, and row within it. Default 0, 0. */
  rowGroup?: number;
  rowOffset?: number;
  /** Rows per chunk at most (a row group is cut into chunks). Default 4096. */
  chunkRows?: number;
  signal?: AbortSignal;
}

/**
 * Checks a shard file's footer against FORMAT.md and the manifest before any row is read (backup's
 * `shardFooterProblem`: columns and types, key-value metadata, row count). Throws RestoreError
 * RESTORE_CORRUPT_SHARD naming the file and the difference.
 */
export async function checkShardFooter(path: string, backupId: string, shard: ShardSpec): Promise<void> {
  const found = await shardFooterProblem(path, { backupId, shard: shard.index, rangeStart: shard.start, rangeEnd: shard.end, rows: shard.rows });
  if (found !== undefined) throw corrupt(shard, `${label(shard)}: ${found.problem}`, found.cause);
}

/**
 * Reads a shard file with backup's reader (one row group at a time, decoding on the shared decoder
 * thread) in chunks, checking that every key lies in the shard's range and is above the previous
 * one, and that no required field is null. Throws RestoreError RESTORE_CORRUPT_SHARD with the row
 * group and row of the first bad row.
 */
export async function* readShardRows(file: DataFile, shard: ShardSpec, options: ReadShardOptions = {}): AsyncGenerator<ShardChunk> {
  yield* translated(shard, readBackupShardRows(file, backupReadOptions(shard, options)));
}

/**
 * `readShardRows` as column chunks (backup's `readShardColumns`): the same checks and errors, no
 * object per row — restore's fast path.
 */
export async function* readShardColumns(file: DataFile, shard: ShardSpec, options: ReadShardOptions = {}): AsyncGenerator<ShardColumnsChunk> {
  yield* translated(shard, readBackupShardColumns(file, backupReadOptions(shard, options)));
}

function backupReadOptions(shard: ShardSpec, options: ReadShardOptions): ReadShardRowsOptions {
  return {
    rowGroup: options.rowGroup,
    rowOffset: options.rowOffset,
    chunkRows: options.chunkRows ?? 4096,
    range: { start: Buffer.from(shard.start, 'hex'), end: Buffer.from(shard.end, 'hex') },
    label: label(shard),
    signal: options.signal,
  };
}

/** Backup's corrupt-file and not-found errors as RESTORE_CORRUPT_SHARD naming the shard. */
async function* translated<T>(shard: ShardSpec, chunks: AsyncGenerator<T>): AsyncGenerator<T> {
  try {
    yield* chunks;
  } catch (err) {
    if (err instanceof BackupError && (err.code === 'BACKUP_CORRUPT_FILE' || err.code === 'BACKUP_NOT_FOUND')) throw corrupt(shard, err.message, err.cause ?? err, err.context.rowGroup, err.context.row);
    throw err;
  }
}

function label(shard: ShardSpec): string {
  return `shard ${shard.index} (${shard.file})`;
}

function corrupt(shard: ShardSpec, message: string, cause?: unknown, rowGroup?: number, row?: number): RestoreError {
  return new RestoreError('RESTORE_CORRUPT_SHARD', message, { cause, context: { shard: shard.index, file: shard.file, rowGroup, row } });
}
