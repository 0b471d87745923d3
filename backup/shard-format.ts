import { Binary, Field, Int64, RecordBatch, Schema, Struct, makeData } from 'apache-arrow';
import { asyncBufferFromFile, parquetMetadataAsync, type FileMetaData } from 'hyparquet';
import { endianness } from 'node:os';
import { copyBytes, describeCause } from '../common/index.js';
import type { PackedRows, RangeDigest, StoredEntry } from '../store/index.js';

// The one definition of a backup shard file (FORMAT.md): columns, Arrow schema, key-value metadata
// and the footer check. The writer (parquet-shard-stream.ts), the reader (shard-reader.ts), restore
// and the test fixtures all take it from here.

/** Rows per Parquet row group at most (FORMAT.md). */
export const MAX_ROW_GROUP_ROWS = 65_536;

/** The `shardpipe.format` value this code writes and reads. */
export const SHARD_FORMAT_VERSION = '1';

/** The columns of a shard file, in order (FORMAT.md). */
export const SHARD_COLUMNS = ['key', 'value', 'etag', 'updated_at_ms', 'expires_at_ms'] as const;

/** Arrow schema of a shard file (FORMAT.md column order and nullability). */
export const SHARD_SCHEMA = new Schema([
  new Field('key', new Binary(), false),
  new Field('value', new Binary(), false),
  new Field('etag', new Int64(), false),
  new Field('updated_at_ms', new Int64(), false),
  new Field('expires_at_ms', new Int64(), true),
]);

/** Parquet physical type and nullability of each column, as the footer must state them. */
const PARQUET_COLUMNS: Record<(typeof SHARD_COLUMNS)[number], { type: string; optional: boolean }> = {
  key: { type: 'BYTE_ARRAY', optional: false },
  value: { type: 'BYTE_ARRAY', optional: false },
  etag: { type: 'INT64', optional: false },
  updated_at_ms: { type: 'INT64', optional: false },
  expires_at_ms: { type: 'INT64', optional: true },
};

/** The Parquet key-value metadata keys of a shard file. */
export const SHARD_METADATA_KEYS = {
  format: 'shardpipe.format',
  backupId: 'shardpipe.backup_id',
  shard: 'shardpipe.shard',
  rangeStart: 'shardpipe.range_start',
  rangeEnd: 'shardpipe.range_end',
} as const;

/** What a shard file says about itself in its Parquet key-value metadata (FORMAT.md). */
export interface ShardFileMetadata {
  backupId: string;
  shard: number;
  /** Range start; empty = start of the keyspace. */
  rangeStart: Buffer;
  /** Range end (exclusive); empty = end of the keyspace. */
  rangeEnd: Buffer;
}

/** The key-value metadata a shard file carries, in FORMAT.md order (range bounds as lowercase hex). */
export function shardKeyValueMetadata(metadata: ShardFileMetadata): Map<string, string> {
  return new Map([
    [SHARD_METADATA_KEYS.format, SHARD_FORMAT_VERSION],
    [SHARD_METADATA_KEYS.backupId, metadata.backupId],
    [SHARD_METADATA_KEYS.shard, String(metadata.shard)],
    [SHARD_METADATA_KEYS.rangeStart, metadata.rangeStart.toString('hex')],
    [SHARD_METADATA_KEYS.rangeEnd, metadata.rangeEnd.toString('hex')],
  ]);
}

/** Entries as one Arrow record batch of the shard schema (`expiresAtMs` 0 → null). */
export function shardRecordBatch(entries: readonly StoredEntry[]): RecordBatch {
  const n = entries.length;
  const etag = new BigInt64Array(n);
  const updated = new BigInt64Array(n);
  const expires = new BigInt64Array(n);
  const validity = new Uint8Array(Math.ceil(n / 8));
  let nulls = 0;
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    etag[i] = BigInt(e.etag);
    updated[i] = BigInt(e.updatedAtMs);
    if (e.expiresAtMs > 0) {
      expires[i] = BigInt(e.expiresAtMs);
      validity[i >> 3]! |= 1 << (i & 7);
    } else {
      nulls++;
    }
  }
  const children = [
    binaryData(entries, (e) => e.key),
    binaryData(entries, (e) => e.value),
    makeData({ type: new Int64(), length: n, data: etag }),
    makeData({ type: new Int64(), length: n, data: updated }),
    makeData({ type: new Int64(), length: n, nullCount: nulls, nullBitmap: nulls === 0 ? null : validity, data: expires }),
  ];
  return new RecordBatch(SHARD_SCHEMA, makeData({ type: new Struct(SHARD_SCHEMA.fields), length: n, nullCount: 0, children }));
}

const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * Packed scan batches (or runs of their rows, `[from, to)` of each) as one Arrow record batch of the
 * shard schema — the same columns `shardRecordBatch` makes of the same entries, built from the
 * batches' buffers: keys and values copied once into their columns, the etag and times copied word
 * by word from the packed metadata (u64 little-endian, as Int64 columns are laid out), no object
 * per row. Rows without metadata get etag and times 0.
 */
export function packedShardRecordBatch(parts: ReadonlyArray<{ rows: PackedRows; from: number; to: number }>): RecordBatch {
  let n = 0;
  let keyBytes = 0;
  let valueBytes = 0;
  for (const { rows, from, to } of parts) {
    n += to - from;
    for (let i = from; i < to; i++) {
      keyBytes += rows.keyLength(i);
      valueBytes += rows.valueLength(i);
    }
  }
  const keyOffsets = new Int32Array(n + 1);
  const valueOffsets = new Int32Array(n + 1);
  const keys = new Uint8Array(keyBytes);
  const values = new Uint8Array(valueBytes);
  const etag = new BigInt64Array(n);
  const updated = new BigInt64Array(n);
  const expires = new BigInt64Array(n);
  const etag32 = new Uint32Array(etag.buffer);
  const updated32 = new Uint32Array(updated.buffer);
  const expires32 = new Uint32Array(expires.buffer);
  const validity = new Uint8Array(Math.ceil(n / 8));
  let nulls = 0;
  let row = 0;
  let k = 0;
  let v = 0;
  for (const { rows, from, to } of parts) {
    const message = rows.toMessage();
    const data = new Uint8Array(message.data.buffer, message.data.byteOffset, message.data.byteLength);
    const meta = message.meta;
    // Word views need 4-byte alignment; a batch's metadata inside a received message may have none.
    const words = meta.length === 0 || !LITTLE_ENDIAN ? undefined : meta.byteOffset % 4 === 0 ? new Uint32Array(meta.buffer, meta.byteOffset, meta.length / 4) : new Uint32Array(new Uint8Array(meta).buffer);
    for (let i = from; i < to; i++, row++) {
      const kl = rows.keyLength(i);
      const vl = rows.valueLength(i);
      const at = rows.keyOffset(i);
      copyBytes(data, at, kl, keys, k);
      copyBytes(data, at + kl, vl, values, v);
      k += kl;
      v += vl;
      keyOffsets[row + 1] = k;
      valueOffsets[row + 1] = v;
      let hasExpiry: boolean;
      if (words !== undefined) {
        const w = i * 6;
        etag32[2 * row] = words[w]!;
        etag32[2 * row + 1] = words[w + 1]!;
        updated32[2 * row] = words[w + 2]!;
        updated32[2 * row + 1] = words[w + 3]!;
        hasExpiry = words[w + 4] !== 0 || words[w + 5] !== 0;
        if (hasExpiry) {
          expires32[2 * row] = words[w + 4]!;
          expires32[2 * row + 1] = words[w + 5]!;
        }
      } else {
        etag[row] = BigInt(rows.metaField(i, 0));
        updated[row] = BigInt(rows.metaField(i, 1));
        const e = rows.metaField(i, 2);
        hasExpiry = e > 0;
        if (hasExpiry) expires[row] = BigInt(e);
      }
      if (hasExpiry) validity[row >> 3]! |= 1 << (row & 7);
      else nulls++;
    }
  }
  const children = [
    makeData({ type: new Binary(), length: n, nullCount: 0, valueOffsets: keyOffsets, data: keys }),
    makeData({ type: new Binary(), length: n, nullCount: 0, valueOffsets: valueOffsets, data: values }),
    makeData({ type: new Int64(), length: n, data: etag }),
    makeData({ type: new Int64(), length: n, data: updated }),
    makeData({ type: new Int64(), length: n, nullCount: nulls, nullBitmap: nulls === 0 ? null : validity, data: expires }),
  ];
  return new RecordBatch(SHARD_SCHEMA, makeData({ type: new Struct(SHARD_SCHEMA.fields), length: n, nullCount: 0, children }));
}

/** Adds every row of a packed batch to `digest` (as RangeDigest.add with etags), from its buffers. */
export function digestPackedRows(digest: RangeDigest, rows: PackedRows): void {
  const data = rows.toMessage().data;
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < rows.count; i++) {
    const kl = rows.keyLength(i);
    const at = rows.keyOffset(i);
    digest.addFrom(bytes, at, kl, bytes, at + kl, rows.valueLength(i), rows.metaField(i, 2), rows.metaField(i, 0));
  }
}

/** A Binary column from one contiguous value buffer and int32 offsets. */
function binaryData(entries: readonly StoredEntry[], pick: (e: StoredEntry) => Buffer) {
  const offsets = new Int32Array(entries.length + 1);
  let total = 0;
  for (let i = 0; i < entries.length; i++) {
    total += pick(entries[i]!).byteLength;
    offsets[i + 1] = total;
  }
  const data = Buffer.allocUnsafe(total);
  for (let i = 0; i < entries.length; i++) pick(entries[i]!).copy(data, offsets[i]!);
  return makeData({ type: new Binary(), length: entries.length, nullCount: 0, valueOffsets: offsets, data });
}

/** What a shard file's footer must say, from the manifest. Range bounds as lowercase hex, "" = open end. */
export interface ExpectedShardFooter {
  backupId: string;
  shard: number;
  rangeStart: string;
  rangeEnd: string;
  rows: number;
}

/** One way a shard file differs from FORMAT.md or the manifest. */
export interface ShardFooterProblem {
  problem: string;
  cause?: unknown;
}

/**
 * Checks a shard file's footer against FORMAT.md and `expected` before any row is read: the five
 * columns with their types, the key-value metadata (format, backup id, shard index, range) and the
 * row count. Returns the first difference, or undefined for a file that matches.
 */
export async function shardFooterProblem(path: string, expected: ExpectedShardFooter): Promise<ShardFooterProblem | undefined> {
  let meta: FileMetaData;
  try {
    meta = await parquetMetadataAsync(await asyncBufferFromFile(path));
  } catch (err) {
    return { problem: `cannot read the Parquet footer: ${describeCause(err)}`, cause: err };
  }
  const top = meta.schema.slice(1);
  const names = top.map((s) => s.name);
  if (names.length !== SHARD_COLUMNS.length || SHARD_COLUMNS.some((c, i) => names[i] !== c)) {
    return { problem: `columns are [${names.join(', ')}], FORMAT.md says [${SHARD_COLUMNS.join(', ')}]` };
  }
  for (const column of top) {
    const spec = PARQUET_COLUMNS[column.name as (typeof SHARD_COLUMNS)[number]];
    const optional = column.repetition_type === 'OPTIONAL';
    if (column.type !== spec.type || (optional && !spec.optional) || column.repetition_type === 'REPEATED') {
      return { problem: `column ${column.name} is ${column.repetition_type ?? ''} ${column.type ?? 'a group'}, FORMAT.md says ${spec.optional ? 'OPTIONAL' : 'REQUIRED'} ${spec.type}` };
    }
  }
  const kv = new Map((meta.key_value_metadata ?? []).map((e) => [e.key, e.value ?? '']));
  const want: Record<string, string> = {
    [SHARD_METADATA_KEYS.format]: SHARD_FORMAT_VERSION,
    [SHARD_METADATA_KEYS.backupId]: expected.backupId,
    [SHARD_METADATA_KEYS.shard]: String(expected.shard),
    [SHARD_METADATA_KEYS.rangeStart]: expected.rangeStart,
    [SHARD_METADATA_KEYS.rangeEnd]: expected.rangeEnd,
  };
  for (const [key, value] of Object.entries(want)) {
    if (kv.get(key) !== value) return { problem: `metadata ${key} is ${kv.has(key) ? `"${kv.get(key)}"` : 'missing'}, the manifest says "${value}"` };
  }
  if (Number(meta.num_rows) !== expected.rows) return { problem: `the file has ${meta.num_rows} rows, the manifest says ${expected.rows}` };
  return undefined;
}
