import { DataType, type Data, type RecordBatch } from 'apache-arrow';
import { asyncBufferFromFile, parquetMetadataAsync, type FileMetaData } from 'hyparquet';
import { IngestError, readRecordBatches, type DropFile } from '../ingest/index.js';
import { describeCause } from '../common/index.js';
import { RestoreError } from './restore-errors.js';

/** One entry of a shard file (FORMAT.md), as the store takes it. Times in Unix ms; 0 = no expiry. */
export interface ShardRow {
  key: Buffer;
  value: Buffer;
  etag: number;
  updatedAtMs: number;
  expiresAtMs: number;
}

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
}

/** A run of rows of a shard file and where it sits. */
export interface ShardChunk {
  rowGroup: number;
  /** Row index within the row group of the first row. */
  rowOffset: number;
  /** Rows in the row group (so `rowOffset + rows.length === groupRows` marks its end). */
  groupRows: number;
  rows: ShardRow[];
}

export interface ReadShardOptions {
  /** Start here: row group, and row within it. Default 0, 0. */
  rowGroup?: number;
  rowOffset?: number;
  /** Rows per chunk at most (a row group is cut into chunks). Default 4096. */
  chunkRows?: number;
  signal?: AbortSignal;
}

const COLUMNS = ['key', 'value', 'etag', 'updated_at_ms', 'expires_at_ms'] as const;

/**
 * Checks a shard file's footer against FORMAT.md and the manifest before any row is read: the five
 * columns with their types, the key-value metadata (format, backup id, shard index, range) and the
 * row count. Throws RestoreError RESTORE_CORRUPT_SHARD naming the file and the difference.
 */
export async function checkShardFooter(path: string, backupId: string, shard: ShardSpec): Promise<void> {
  let meta: FileMetaData;
  try {
    meta = await parquetMetadataAsync(await asyncBufferFromFile(path));
  } catch (err) {
    throw corrupt(shard, `cannot read the Parquet footer: ${describeCause(err)}`, err);
  }
  const top = meta.schema.slice(1);
  const names = top.map((s) => s.name);
  if (names.length !== COLUMNS.length || COLUMNS.some((c, i) => names[i] !== c)) {
    throw corrupt(shard, `columns are [${names.join(', ')}], FORMAT.md says [${COLUMNS.join(', ')}]`);
  }
  const want: Record<(typeof COLUMNS)[number], { type: string; optional: boolean }> = {
    key: { type: 'BYTE_ARRAY', optional: false },
    value: { type: 'BYTE_ARRAY', optional: false },
    etag: { type: 'INT64', optional: false },
    updated_at_ms: { type: 'INT64', optional: false },
    expires_at_ms: { type: 'INT64', optional: true },
  };
  for (const column of top) {
    const spec = want[column.name as (typeof COLUMNS)[number]];
    const optional = column.repetition_type === 'OPTIONAL';
    if (column.type !== spec.type || (optional && !spec.optional) || column.repetition_type === 'REPEATED') {
      throw corrupt(shard, `column ${column.name} is ${column.repetition_type ?? ''} ${column.type ?? 'a group'}, FORMAT.md says ${spec.optional ? 'OPTIONAL' : 'REQUIRED'} ${spec.type}`);
    }
  }
  const kv = new Map((meta.key_value_metadata ?? []).map((e) => [e.key, e.value ?? '']));
  const expected: Record<string, string> = {
    'shardpipe.format': '1',
    'shardpipe.backup_id': backupId,
    'shardpipe.shard': String(shard.index),
    'shardpipe.range_start': shard.start,
    'shardpipe.range_end': shard.end,
  };
  for (const [key, value] of Object.entries(expected)) {
    if (kv.get(key) !== value) throw corrupt(shard, `metadata ${key} is ${kv.has(key) ? `"${kv.get(key)}"` : 'missing'}, the manifest says "${value}"`);
  }
  if (Number(meta.num_rows) !== shard.rows) throw corrupt(shard, `the file has ${meta.num_rows} rows, the manifest says ${shard.rows}`);
}

/**
 * Reads a shard file one row group at a time (ingest's reader: bounded memory, decoding on the shared
 * decoder thread) and hands out its rows in chunks, checking on the way that every key lies in the
 * shard's range and is above the previous one, and that no required field is null. Throws
 * RestoreError RESTORE_CORRUPT_SHARD with the row group and row of the first bad row.
 */
export async function* readShardRows(file: DropFile, shard: ShardSpec, options: ReadShardOptions = {}): AsyncGenerator<ShardChunk> {
  const startGroup = options.rowGroup ?? 0;
  const startOffset = options.rowOffset ?? 0;
  const chunkRows = options.chunkRows ?? 4096;
  if (!Number.isInteger(chunkRows) || chunkRows < 1) throw new RangeError(`chunkRows must be an integer ≥ 1, got ${chunkRows}`);
  const low = Buffer.from(shard.start, 'hex');
  const high = Buffer.from(shard.end, 'hex');
  let previous: Buffer | undefined;
  let group = -1;
  let groupOffset = 0;
  try {
    for await (const { rowGroup, batch } of readRecordBatches(file, { rowGroupStart: startGroup, signal: options.signal })) {
      if (rowGroup !== group) {
        group = rowGroup;
        groupOffset = 0;
      }
      const batchStart = groupOffset;
      groupOffset += batch.numRows;
      const columns = shardColumns(batch, shard, rowGroup);
      const groupRows = batchStart + batch.numRows;
      const first = rowGroup === startGroup ? Math.max(0, startOffset - batchStart) : 0;
      for (let from = first; from < batch.numRows; from += chunkRows) {
        const to = Math.min(batch.numRows, from + chunkRows);
        const rows: ShardRow[] = new Array(to - from);
        for (let i = from; i < to; i++) {
          const row = columns.row(i);
          const where = (): string => `row group ${rowGroup}, row ${batchStart + i}`;
          if (row.key.length === 0) throw corrupt(shard, `${where()}: empty key`, undefined, rowGroup, batchStart + i);
          if (Buffer.compare(row.key, low) < 0 || (high.length > 0 && Buffer.compare(row.key, high) >= 0)) {
            throw corrupt(shard, `${where()}: key ${row.key.toString('hex')} lies outside the shard's range [${shard.start || '-∞'}, ${shard.end || '+∞'})`, undefined, rowGroup, batchStart + i);
          }
          if (previous !== undefined && Buffer.compare(previous, row.key) >= 0) {
            throw corrupt(shard, `${where()}: key ${row.key.toString('hex')} is not above the previous key ${previous.toString('hex')}`, undefined, rowGroup, batchStart + i);
          }
          if (!(row.etag >= 1)) throw corrupt(shard, `${where()}: etag ${row.etag} (etags are ≥ 1)`, undefined, rowGroup, batchStart + i);
          previous = row.key;
          rows[i - from] = row;
        }
        yield { rowGroup, rowOffset: batchStart + from, groupRows, rows };
      }
    }
  } catch (err) {
    if (err instanceof IngestError) throw corrupt(shard, err.message, err);
    throw err;
  }
}

interface ShardColumns {
  row(i: number): ShardRow;
}

/** Typed accessors over the five columns of one record batch. */
function shardColumns(batch: RecordBatch, shard: ShardSpec, rowGroup: number): ShardColumns {
  const data = (name: string, nullable: boolean): Data => {
    const vector = batch.getChild(name);
    if (vector === null || vector.data.length !== 1) throw corrupt(shard, `row group ${rowGroup}: column ${name} is missing or split`, undefined, rowGroup);
    const d = vector.data[0]!;
    // Freshly decoded batches are never slices; the accessors below rely on it.
    if (d.offset !== 0) throw new TypeError(`column ${name} of row group ${rowGroup} is a slice (offset ${d.offset})`);
    if (!nullable && d.nullCount > 0) throw corrupt(shard, `row group ${rowGroup}: column ${name} has ${d.nullCount} nulls, FORMAT.md says none`, undefined, rowGroup);
    return d;
  };
  const binary = (name: string) => {
    const d = data(name, false);
    if (!DataType.isBinary(d.type) && !DataType.isLargeBinary(d.type)) throw corrupt(shard, `row group ${rowGroup}: column ${name} decoded as ${String(d.type)}, not binary`, undefined, rowGroup);
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
    if (!DataType.isInt(d.type) || d.type.bitWidth !== 64) throw corrupt(shard, `row group ${rowGroup}: column ${name} decoded as ${String(d.type)}, not a 64-bit integer`, undefined, rowGroup);
    const values = d.values as BigInt64Array | BigUint64Array;
    const bitmap = d.nullCount > 0 ? d.nullBitmap : undefined;
    return (i: number): number | undefined => {
      if (bitmap !== undefined && (bitmap[i >> 3]! & (1 << (i & 7))) === 0) return undefined;
      const n = Number(values[i]);
      if (!Number.isSafeInteger(n) || n < 0) throw corrupt(shard, `row group ${rowGroup}, row ${i}: column ${name} holds ${values[i]}, not a time or etag`, undefined, rowGroup, i);
      return n;
    };
  };
  const key = binary('key');
  const value = binary('value');
  const etag = int64('etag', false);
  const updated = int64('updated_at_ms', false);
  const expires = int64('expires_at_ms', true);
  return {
    row: (i) => ({ key: key(i), value: value(i), etag: etag(i)!, updatedAtMs: updated(i)!, expiresAtMs: expires(i) ?? 0 }),
  };
}

function corrupt(shard: ShardSpec, problem: string, cause?: unknown, rowGroup?: number, row?: number): RestoreError {
  return new RestoreError('RESTORE_CORRUPT_SHARD', `shard ${shard.index} (${shard.file}): ${problem}`, { cause, context: { shard: shard.index, file: shard.file, rowGroup, row } });
}
