import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { DataType, type Data, type RecordBatch } from 'apache-arrow';
import { FileError, readFooter, readRecordBatches, statDataFile, type DataFile } from '../files/index.js';
import type { StoredEntry } from '../store/index.js';
import { BackupError, type BackupErrorContext } from './backup-errors.js';
import type { BackupTarget } from './backup-target.js';

/** A run of entries of a shard file and where it sits. */
export interface ShardChunk {
  rowGroup: number;
  /** Row index within the row group of the first row. */
  rowOffset: number;
  /** Rows in the row group, from the footer (so `rowOffset + rows.length === groupRows` marks its end). */
  groupRows: number;
  rows: StoredEntry[];
}

/** Options of `readShardRows`. */
export interface ReadShardRowsOptions {
  /** Start here: row group, and row within it. Default 0, 0. */
  rowGroup?: number;
  rowOffset?: number;
  /** Rows per chunk at most (a decoded batch is cut into chunks). Default: each decoded batch whole. */
  chunkRows?: number;
  /**
   * Check every row against the shard's range `[start, end)` (`end` empty = open): a non-empty key
   * inside it, above the previous key, an etag ≥ 1. Absent: rows are handed out as they are (verify
   * counts such rows itself).
   */
  range?: { start: Buffer; end: Buffer };
  /** How messages name the file. Default its path. */
  label?: string;
  /** Added to every error's context. */
  context?: BackupErrorContext;
  signal?: AbortSignal;
}

/**
 * Reads a local shard file one row group at a time (files/ reader: bounded memory, decoding on the
 * shared decoder thread, so a damaged file cannot take the process down) and hands out its entries
 * in chunks, checking the FORMAT.md column types and nulls (and with `range` each key) on the way.
 * Keys and values are views into the decoded batch. `expiresAtMs` is 0 for null.
 *
 * Throws BackupError BACKUP_CORRUPT_FILE (with the row group and row of the first bad row) and
 * BACKUP_NOT_FOUND when the file is gone.
 */
export async function* readShardRows(file: DataFile, options: ReadShardRowsOptions = {}): AsyncGenerator<ShardChunk> {
  const startGroup = options.rowGroup ?? 0;
  const startOffset = options.rowOffset ?? 0;
  const chunkRows = options.chunkRows ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isInteger(chunkRows) || chunkRows < 1) throw new RangeError(`chunkRows must be an integer ≥ 1, got ${chunkRows}`);
  const label = options.label ?? file.path;
  const corrupt = (problem: string, cause?: unknown, rowGroup?: number, row?: number): BackupError =>
    new BackupError('BACKUP_CORRUPT_FILE', `${label}: ${problem}`, { cause, context: { ...options.context, rowGroup, row } });
  const range = options.range;
  let previous: Buffer | undefined;
  let group = -1;
  let groupOffset = 0;
  try {
    // A row group is decoded in several batches: its end is where the footer says, not a batch's end.
    const groups = (await readFooter(file)).rowGroups;
    for await (const { rowGroup, batch } of readRecordBatches(file, { rowGroupStart: startGroup, signal: options.signal })) {
      if (rowGroup !== group) {
        group = rowGroup;
        groupOffset = 0;
      }
      const batchStart = groupOffset;
      groupOffset += batch.numRows;
      const row = shardColumns(batch, rowGroup, corrupt);
      const groupRows = groups[rowGroup]?.rows ?? batchStart + batch.numRows;
      const first = rowGroup === startGroup ? Math.max(0, startOffset - batchStart) : 0;
      for (let from = first; from < batch.numRows; from += chunkRows) {
        const to = Math.min(batch.numRows, from + chunkRows);
        const rows: StoredEntry[] = new Array(to - from);
        for (let i = from; i < to; i++) {
          const entry = row(i);
          if (range !== undefined) {
            const bad = (what: string): BackupError => corrupt(`row group ${rowGroup}, row ${batchStart + i}: ${what}`, undefined, rowGroup, batchStart + i);
            if (entry.key.length === 0) throw bad('empty key');
            if (Buffer.compare(entry.key, range.start) < 0 || (range.end.length > 0 && Buffer.compare(entry.key, range.end) >= 0)) {
              throw bad(`key ${entry.key.toString('hex')} lies outside the shard's range [${range.start.toString('hex') || '-∞'}, ${range.end.toString('hex') || '+∞'})`);
            }
            if (previous !== undefined && Buffer.compare(previous, entry.key) >= 0) throw bad(`key ${entry.key.toString('hex')} is not above the previous key ${previous.toString('hex')}`);
            if (!(entry.etag >= 1)) throw bad(`etag ${entry.etag} (etags are ≥ 1)`);
            previous = entry.key;
          }
          rows[i - from] = entry;
        }
        yield { rowGroup, rowOffset: batchStart + from, groupRows, rows };
      }
    }
  } catch (err) {
    if (!(err instanceof FileError)) throw err;
    if (err.code === 'FILE_NOT_FOUND') throw new BackupError('BACKUP_NOT_FOUND', `${label}: ${err.message}`, { cause: err, context: { ...options.context } });
    throw corrupt(err.message, err, err.context.rowGroup);
  }
}

type Corrupt = (problem: string, cause?: unknown, rowGroup?: number, row?: number) => BackupError;

/** Typed accessors over the five columns of one record batch. */
function shardColumns(batch: RecordBatch, rowGroup: number, corrupt: Corrupt): (i: number) => StoredEntry {
  const data = (name: string, nullable: boolean): Data => {
    const vector = batch.getChild(name);
    if (vector === null || vector.data.length !== 1) throw corrupt(`row group ${rowGroup}: column ${name} is missing or split`, undefined, rowGroup);
    const d = vector.data[0]!;
    // Freshly decoded batches are never slices; the accessors below rely on it.
    if (d.offset !== 0) throw new TypeError(`column ${name} of row group ${rowGroup} is a slice (offset ${d.offset})`);
    if (!nullable && d.nullCount > 0) throw corrupt(`row group ${rowGroup}: column ${name} has ${d.nullCount} nulls, FORMAT.md says none`, undefined, rowGroup);
    return d;
  };
  const binary = (name: string) => {
    const d = data(name, false);
    if (!DataType.isBinary(d.type) && !DataType.isLargeBinary(d.type)) throw corrupt(`row group ${rowGroup}: column ${name} decoded as ${String(d.type)}, not binary`, undefined, rowGroup);
    const offsets = d.valueOffsets as Int32Array | BigInt64Array;
    const values = d.values as Uint8Array;
    const large = offsets instanceof BigInt64Array;
    return (i: number): Buffer => {
      const s = large ? Number((offsets as BigInt64Array)[i]) : (offsets as Int32Array)[i]!;
      const e = large ? Number((offsets as BigInt64Array)[i + 1]) : (offsets as Int32Array)[i + 1]!;
      // A view, not a copy: the batch stays alive until its rows are written.
      return Buffer.from(values.buffer, values.byteOffset + s, e - s);
    };
  };
  const int64 = (name: string, nullable: boolean) => {
    const d = data(name, nullable);
    if (!DataType.isInt(d.type) || d.type.bitWidth !== 64) throw corrupt(`row group ${rowGroup}: column ${name} decoded as ${String(d.type)}, not a 64-bit integer`, undefined, rowGroup);
    const values = d.values as BigInt64Array | BigUint64Array;
    const bitmap = d.nullCount > 0 ? d.nullBitmap : undefined;
    return (i: number): number | undefined => {
      if (bitmap !== undefined && (bitmap[i >> 3]! & (1 << (i & 7))) === 0) return undefined;
      const n = Number(values[i]);
      if (!Number.isSafeInteger(n) || n < 0) throw corrupt(`row group ${rowGroup}, row ${i}: column ${name} holds ${values[i]}, not a time or etag`, undefined, rowGroup, i);
      return n;
    };
  };
  const key = binary('key');
  const value = binary('value');
  const etag = int64('etag', false);
  const updated = int64('updated_at_ms', false);
  const expires = int64('expires_at_ms', true);
  return (i) => ({ key: key(i), value: value(i), etag: etag(i)!, updatedAtMs: updated(i)!, expiresAtMs: expires(i) ?? 0 });
}

/** Options of `readShardFile`. */
export interface ReadShardFileOptions {
  /**
   * Where a remote target's file is downloaded before it is decoded (Parquet needs random access);
   * removed afterwards. Default: the OS temp folder.
   */
  tempDir?: string;
  signal?: AbortSignal;
}

/**
 * Reads a shard file of a backup in a target as batches of entries in file order (`readShardRows`,
 * no range checks). A local target's file is read in place; a remote one is first streamed into a
 * temporary file.
 *
 * Throws BackupError BACKUP_CORRUPT_FILE (the file cannot be decoded or lacks the format's columns),
 * BACKUP_NOT_FOUND, and the target's errors.
 */
export async function* readShardFile(target: BackupTarget, backupId: string, name: string, options: ReadShardFileOptions = {}): AsyncGenerator<StoredEntry[]> {
  const { signal } = options;
  const context = { target: target.url, backupId, file: name };
  let path = target.localPath(backupId, name);
  let tempFolder: string | undefined;
  try {
    if (path === undefined) {
      const source = await target.openRead(backupId, name, { signal });
      tempFolder = await mkdtemp(join(options.tempDir ?? tmpdir(), 'shardpipe-shard-'));
      path = join(tempFolder, name);
      await pipeline(source, createWriteStream(path), { signal });
    } else if ((await target.stat(backupId, name, { signal })) === undefined) {
      throw new BackupError('BACKUP_NOT_FOUND', `${target.url}/${backupId}/${name} does not exist`, { context });
    }
    let file: DataFile;
    try {
      file = await statDataFile(path, 'parquet');
    } catch (err) {
      throw new BackupError('BACKUP_NOT_FOUND', `${target.url}/${backupId}/${name} cannot be read: ${(err as Error).message}`, { cause: err, context });
    }
    for await (const chunk of readShardRows(file, { label: `${target.url}/${backupId}/${name}`, context, signal })) yield chunk.rows;
  } finally {
    if (tempFolder !== undefined) await rm(tempFolder, { recursive: true, force: true });
  }
}
