import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { DataType, type Data, type RecordBatch } from 'apache-arrow';
import { compareBytes } from '../common/index.js';
import { FileError, readFooter, readRecordBatches, statDataFile, type DataFile } from '../files/index.js';
import type { StoredEntry } from '../store/index.js';
import { BackupError, type BackupErrorContext } from './backup-errors.js';
import type { BackupTarget } from './backup-target.js';
import type { HashableColumns } from './shard-content-hash.js';

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
 * The five columns of one decoded record batch as flat arrays — no object per row. Row i's key is
 * `keys[keyOffsets[i], keyOffsets[i + 1])`, its value likewise; `expiresAtMs` is 0 for null.
 * Buffers are views into the decoded batch, valid while the caller keeps the chunk.
 */
export interface ShardColumns extends HashableColumns {
  keys: Buffer;
  keyOffsets: ArrayLike<number>;
  values: Buffer;
  valueOffsets: ArrayLike<number>;
  etag(i: number): number;
  updatedAtMs(i: number): number;
  expiresAtMs(i: number): number;
}

/** A run of rows `[from, to)` of one decoded batch of a shard file, and where it sits. */
export interface ShardColumnsChunk {
  rowGroup: number;
  /** Row index within the row group of row `from`. */
  rowOffset: number;
  /** Rows in the row group, from the footer (so `rowOffset + to - from === groupRows` marks its end). */
  groupRows: number;
  columns: ShardColumns;
  from: number;
  to: number;
}

/**
 * Reads a local shard file one row group at a time (files/ reader: bounded memory, decoding on the
 * shared decoder thread, so a damaged file cannot take the process down) and hands out its rows
 * in chunks of columns, checking the FORMAT.md column types and nulls (and with `range` each key)
 * on the way. The fast path of restore; `readShardRows` makes entries of the same chunks.
 *
 * Throws BackupError BACKUP_CORRUPT_FILE (with the row group and row of the first bad row) and
 * BACKUP_NOT_FOUND when the file is gone.
 */
export async function* readShardColumns(file: DataFile, options: ReadShardRowsOptions = {}): AsyncGenerator<ShardColumnsChunk> {
  const startGroup = options.rowGroup ?? 0;
  const startOffset = options.rowOffset ?? 0;
  const chunkRows = options.chunkRows ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isInteger(chunkRows) || chunkRows < 1) throw new RangeError(`chunkRows must be an integer ≥ 1, got ${chunkRows}`);
  const label = options.label ?? file.path;
  const corrupt = (problem: string, cause?: unknown, rowGroup?: number, row?: number): BackupError =>
    new BackupError('BACKUP_CORRUPT_FILE', `${label}: ${problem}`, { cause, context: { ...options.context, rowGroup, row } });
  const range = options.range;
  // The previous key, as a copy (it may sit in a batch already handed out).
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
      const columns = shardColumns(batch, rowGroup, corrupt);
      const groupRows = groups[rowGroup]?.rows ?? batchStart + batch.numRows;
      const first = rowGroup === startGroup ? Math.max(0, startOffset - batchStart) : 0;
      for (let from = first; from < batch.numRows; from += chunkRows) {
        const to = Math.min(batch.numRows, from + chunkRows);
        if (range !== undefined) previous = checkKeys(columns, from, to, range, previous, (i, what) => corrupt(`row group ${rowGroup}, row ${batchStart + i}: ${what}`, undefined, rowGroup, batchStart + i));
        else for (let i = from; i < to; i++) columns.etag(i);
        for (let i = from; i < to; i++) {
          columns.updatedAtMs(i);
          columns.expiresAtMs(i);
        }
        yield { rowGroup, rowOffset: batchStart + from, groupRows, columns, from, to };
      }
    }
  } catch (err) {
    if (!(err instanceof FileError)) throw err;
    if (err.code === 'FILE_NOT_FOUND') throw new BackupError('BACKUP_NOT_FOUND', `${label}: ${err.message}`, { cause: err, context: { ...options.context } });
    throw corrupt(err.message, err, err.context.rowGroup);
  }
}

/**
 * Checks rows `[from, to)`: non-empty keys inside `range`, each above the one before (`previous`
 * carries over from the last chunk), etags ≥ 1. Returns a copy of the last key. Keys that ascend
 * lie in the range when the first and the last do, so the range costs two comparisons a chunk;
 * on any failure the rows are checked one by one to name the first bad one.
 */
function checkKeys(c: ShardColumns, from: number, to: number, range: { start: Buffer; end: Buffer }, previous: Buffer | undefined, bad: (i: number, what: string) => BackupError): Buffer | undefined {
  if (to === from) return previous;
  const { keys, keyOffsets } = c;
  let ok = true;
  for (let i = from; i < to && ok; i++) {
    const s = keyOffsets[i]!;
    const e = keyOffsets[i + 1]!;
    // > 0 when key i is above the one before.
    const order = i > from ? compareBytes(keys, s, e, keys, keyOffsets[i - 1]!, s) : previous === undefined ? 1 : compareBytes(keys, s, e, previous, 0, previous.length);
    ok = e > s && order > 0 && c.etag(i) >= 1;
  }
  const last = to - 1;
  ok &&= range.start.compare(keys, keyOffsets[from]!, keyOffsets[from + 1]!) <= 0 && (range.end.length === 0 || range.end.compare(keys, keyOffsets[last]!, keyOffsets[last + 1]!) > 0);
  if (!ok) checkKeysOneByOne(c, from, to, range, previous, bad);
  return Buffer.from(keys.subarray(keyOffsets[last]!, keyOffsets[last + 1]!));
}

/** `checkKeys` row by row, in order: throws for the first bad row. */
function checkKeysOneByOne(c: ShardColumns, from: number, to: number, range: { start: Buffer; end: Buffer }, previous: Buffer | undefined, bad: (i: number, what: string) => BackupError): void {
  const { keys, keyOffsets } = c;
  const hex = (i: number): string => keys.toString('hex', keyOffsets[i]!, keyOffsets[i + 1]!);
  for (let i = from; i < to; i++) {
    const s = keyOffsets[i]!;
    const e = keyOffsets[i + 1]!;
    if (e === s) throw bad(i, 'empty key');
    if (range.start.compare(keys, s, e) > 0 || (range.end.length > 0 && range.end.compare(keys, s, e) <= 0)) {
      throw bad(i, `key ${hex(i)} lies outside the shard's range [${range.start.toString('hex') || '-∞'}, ${range.end.toString('hex') || '+∞'})`);
    }
    const order = i > from ? keys.compare(keys, keyOffsets[i - 1]!, s, s, e) : previous === undefined ? 1 : -previous.compare(keys, s, e);
    if (order <= 0) throw bad(i, `key ${hex(i)} is not above the previous key ${i > from ? hex(i - 1) : previous!.toString('hex')}`);
    const etag = c.etag(i);
    if (!(etag >= 1)) throw bad(i, `etag ${etag} (etags are ≥ 1)`);
  }
}

/**
 * Reads a local shard file as `readShardColumns` does and hands out its entries in chunks. Keys
 * and values are views into the decoded batch.
 *
 * Throws BackupError BACKUP_CORRUPT_FILE (with the row group and row of the first bad row) and
 * BACKUP_NOT_FOUND when the file is gone.
 */
export async function* readShardRows(file: DataFile, options: ReadShardRowsOptions = {}): AsyncGenerator<ShardChunk> {
  for await (const { rowGroup, rowOffset, groupRows, columns: c, from, to } of readShardColumns(file, options)) {
    const rows: StoredEntry[] = new Array(to - from);
    for (let i = from; i < to; i++) {
      rows[i - from] = {
        key: c.keys.subarray(c.keyOffsets[i]!, c.keyOffsets[i + 1]!),
        value: c.values.subarray(c.valueOffsets[i]!, c.valueOffsets[i + 1]!),
        etag: c.etag(i),
        updatedAtMs: c.updatedAtMs(i),
        expiresAtMs: c.expiresAtMs(i),
      };
    }
    yield { rowGroup, rowOffset, groupRows, rows };
  }
}

type Corrupt = (problem: string, cause?: unknown, rowGroup?: number, row?: number) => BackupError;

const TWO_32 = 2 ** 32;
// 2^53 = 2^21 × 2^32: a high word at or above this is not a safe integer.
const SAFE_HIGH_WORD = 2 ** 21;

/** Typed accessors over the five columns of one record batch. */
function shardColumns(batch: RecordBatch, rowGroup: number, corrupt: Corrupt): ShardColumns {
  const data = (name: string, nullable: boolean): Data => {
    const vector = batch.getChild(name);
    if (vector === null || vector.data.length !== 1) throw corrupt(`row group ${rowGroup}: column ${name} is missing or split`, undefined, rowGroup);
    const d = vector.data[0]!;
    // Freshly decoded batches are never slices; the accessors below rely on it.
    if (d.offset !== 0) throw new TypeError(`column ${name} of row group ${rowGroup} is a slice (offset ${d.offset})`);
    if (!nullable && d.nullCount > 0) throw corrupt(`row group ${rowGroup}: column ${name} has ${d.nullCount} nulls, FORMAT.md says none`, undefined, rowGroup);
    return d;
  };
  const binary = (name: string): { bytes: Buffer; offsets: ArrayLike<number> } => {
    const d = data(name, false);
    if (!DataType.isBinary(d.type) && !DataType.isLargeBinary(d.type)) throw corrupt(`row group ${rowGroup}: column ${name} decoded as ${String(d.type)}, not binary`, undefined, rowGroup);
    const values = d.values as Uint8Array;
    const raw = d.valueOffsets as Int32Array | BigInt64Array;
    // 64-bit offsets (LargeBinary) once per batch into doubles: exact below 2^53.
    const offsets = raw instanceof BigInt64Array ? Float64Array.from(raw, (n) => Number(n)) : raw;
    // A view, not a copy: the batch stays alive until its rows are written.
    return { bytes: Buffer.from(values.buffer, values.byteOffset, values.byteLength), offsets };
  };
  const words = (name: string, nullable: boolean): Data => {
    const d = data(name, nullable);
    if (!DataType.isInt(d.type) || d.type.bitWidth !== 64) throw corrupt(`row group ${rowGroup}: column ${name} decoded as ${String(d.type)}, not a 64-bit integer`, undefined, rowGroup);
    return d;
  };
  const int64 = (d: Data, name: string): ((i: number) => number) => {
    const values = d.values as BigInt64Array | BigUint64Array;
    // Little-endian 32-bit halves: reading them is much cheaper than a BigInt per row.
    const words = new Uint32Array(values.buffer, values.byteOffset, values.length * 2);
    const bitmap = d.nullCount > 0 ? d.nullBitmap : undefined;
    return (i: number): number => {
      if (bitmap !== undefined && (bitmap[i >> 3]! & (1 << (i & 7))) === 0) return 0;
      const high = words[2 * i + 1]!;
      if (high >= SAFE_HIGH_WORD) throw corrupt(`row group ${rowGroup}, row ${i}: column ${name} holds ${values[i]}, not a time or etag`, undefined, rowGroup, i);
      return high * TWO_32 + words[2 * i]!;
    };
  };
  const key = binary('key');
  const value = binary('value');
  const etag = words('etag', false);
  const updated = words('updated_at_ms', false);
  const expires = words('expires_at_ms', true);
  return {
    keys: key.bytes,
    keyOffsets: key.offsets,
    values: value.bytes,
    valueOffsets: value.offsets,
    etag: int64(etag, 'etag'),
    updatedAtMs: int64(updated, 'updated_at_ms'),
    expiresAtMs: int64(expires, 'expires_at_ms'),
    etagWords: etag.values as BigInt64Array,
    updatedAtWords: updated.values as BigInt64Array,
    expiresAtWords: expires.values as BigInt64Array,
    expiresAtValid: expires.nullCount > 0 ? (expires.nullBitmap ?? undefined) : undefined,
  };
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
