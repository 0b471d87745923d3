import { endianness } from 'node:os';
import { DataType, makeVector, type Data, type RecordBatch } from 'apache-arrow';
import { DEFAULT_MAX_KEY_BYTES, Key, PACKED_ROWS_FORMAT, PackedRows, PackedRowsBuilder, type BulkRowInput } from '../store/index.js';
import { compareBytes, type BatchBufferPool } from '../common/index.js';
import { IngestError } from './ingest-errors.js';
import { arrowKeyEncoding, writeIntKey, type KeyEncoding } from './key-encoding.js';
import { jsonRenderer, type JsonRenderer } from './value-json.js';

/** Default largest value, in bytes (the store's default `--max-value-bytes`). */
export const DEFAULT_MAX_VALUE_BYTES = 4 * 1024 * 1024;

/** Options of `createRowMapper`. See README-mapping.md for the encodings. */
export interface RowMapperOptions {
  /** Top-level column whose value becomes the key. Required. */
  keyColumn: string;
  /**
   * Top-level column whose bytes become the value (strings as UTF-8, binary as is, anything else as
   * its JSON rendering). Default: none — the value is a JSON document of every column but the key.
   */
  valueColumn?: string;
  /** Longest key accepted, in bytes; longer keys are rejects. Default DEFAULT_MAX_KEY_BYTES (4096). */
  maxKeyBytes?: number;
  /** Largest value accepted, in bytes; larger values are rejects. Default 4 MiB (4,194,304). */
  maxValueBytes?: number;
  /**
   * Hive partition values of the file (`DropFile.partitionValues`), added as string fields to the
   * JSON value document (not with `valueColumn`). A column of the same name in the file wins.
   * Default none.
   */
  partitionValues?: Readonly<Record<string, string>>;
}

/** Where a batch comes from; copied into every reject. */
export interface BatchLocation {
  /** The file's path. */
  file: string;
  /** Row group (Parquet) or record batch (Arrow) index. */
  rowGroup: number;
  /** Index of the batch's first row within its row group. Default 0. */
  rowOffset?: number;
}

/** A row that was not turned into a store row, and why. */
export interface Reject {
  file: string;
  rowGroup: number;
  /** Row index within the row group, 0-based. */
  row: number;
  /** The key's bytes as hex when there is one (the first 256 bytes of an over-long key). */
  keyHex?: string;
  reason: string;
}

/** What `mapBatch` made of one batch: store rows in input order, and rejects in input order. */
export interface MappedBatch {
  rows: BulkRowInput[];
  rejects: Reject[];
}

/**
 * What `mapBatchPacked` made of one batch: the store rows as one packed batch in input order, the
 * rejects in input order, and the order of the accepted keys.
 */
export interface PackedMappedBatch {
  rows: PackedRows;
  rejects: Reject[];
  /** Accepted rows whose key is below the accepted key before them (the first row's: `previousKey`). */
  outOfOrder: number;
  /** The first such row's key and the key before it (copies), for messages. */
  firstOutOfOrder?: { key: Buffer; previousKey: Buffer };
  /**
   * The key the next batch's first row is compared with (pass it as its `previousKey`): the last
   * accepted key (a copy), or `previousKey` when no row was accepted; absent when neither exists.
   */
  lastKey?: Buffer;
  /**
   * Gives the batch's buffer back to the pool it was taken from (a no-op without one). Call it once,
   * when nothing reads `rows` any more (they are acknowledged, or copied); rejects and keys above
   * are copies and stay valid.
   */
  release(): void;
}

/** Turns Arrow record batches into store rows. Stateless between batches; one per (file, options). */
export interface RowMapper {
  /** The frozen, defaulted options. */
  readonly options: Readonly<Required<Omit<RowMapperOptions, 'valueColumn'>> & Pick<RowMapperOptions, 'valueColumn'>>;
  /**
   * Maps every row of `batch`. Bad rows (null, empty or over-long key, over-large or null value)
   * become rejects; it throws only for problems of the whole file: IngestError
   * INGEST_KEY_COLUMN_MISSING, INGEST_VALUE_COLUMN_MISSING or INGEST_UNSUPPORTED_KEY_TYPE.
   */
  mapBatch(batch: RecordBatch, where: BatchLocation): MappedBatch;
  /**
   * `mapBatch` into one packed batch: the same rows, the same rejects, the same errors. String and
   * binary key and value columns are copied from the Arrow buffers straight into the batch, with no
   * per-row objects. Also counts the accepted keys that fall below the key before them, starting
   * from `previousKey` (the last key of the batch before). With `pool`, the direct path builds the
   * batch in a buffer taken from it (see PackedMappedBatch.release).
   */
  mapBatchPacked(batch: RecordBatch, where: BatchLocation, previousKey?: Buffer, pool?: BatchBufferPool): PackedMappedBatch;
}

const REJECT_KEY_HEX_BYTES = 256;
const PACK_CHUNK_BYTES = 1024 * 1024;

/**
 * Encodes value strings into shared 1 MiB buffers: one allocation per MiB of values instead of one
 * per row (per-row Buffers cost more than building the JSON). Rows get views; a chunk lives as long
 * as any row of it. Large values get a buffer of their own.
 */
class Utf8Packer {
  #chunk = Buffer.alloc(0);
  #used = 0;

  encode(text: string): Buffer {
    const worstCase = text.length * 3;
    if (worstCase > PACK_CHUNK_BYTES / 8) return Buffer.from(text, 'utf8');
    if (this.#used + worstCase > this.#chunk.byteLength) {
      // Unused bytes of the chunk are never exposed: every row's view covers only what was written.
      this.#chunk = Buffer.allocUnsafeSlow(PACK_CHUNK_BYTES);
      this.#used = 0;
    }
    const written = this.#chunk.write(text, this.#used, 'utf8');
    const out = this.#chunk.subarray(this.#used, this.#used + written);
    this.#used += written;
    return out;
  }
}

/** Validates and freezes the options; the returned mapper can be shared by the batches of many files. */
export function createRowMapper(options: RowMapperOptions): RowMapper {
  if (typeof options?.keyColumn !== 'string' || options.keyColumn.length === 0) {
    throw new TypeError(`keyColumn must be a non-empty column name, got ${JSON.stringify(options?.keyColumn)}`);
  }
  if (options.valueColumn !== undefined && (typeof options.valueColumn !== 'string' || options.valueColumn.length === 0)) {
    throw new TypeError(`valueColumn must be a non-empty column name when given, got ${JSON.stringify(options.valueColumn)}`);
  }
  const maxKeyBytes = options.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES;
  if (!Number.isInteger(maxKeyBytes) || maxKeyBytes < 1) throw new RangeError(`maxKeyBytes must be an integer ≥ 1, got ${maxKeyBytes}`);
  const maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
  if (!Number.isInteger(maxValueBytes) || maxValueBytes < 0) throw new RangeError(`maxValueBytes must be an integer ≥ 0, got ${maxValueBytes}`);
  const partitionValues = Object.freeze({ ...(options.partitionValues ?? {}) });
  for (const [k, v] of Object.entries(partitionValues)) {
    if (typeof v !== 'string') throw new TypeError(`partitionValues.${k} must be a string, got ${typeof v}`);
  }
  const frozen = Object.freeze({
    keyColumn: options.keyColumn,
    valueColumn: options.valueColumn,
    maxKeyBytes,
    maxValueBytes,
    partitionValues,
  });
  return {
    options: frozen,
    mapBatch: (batch, where) => mapBatch(frozen, batch, where),
    mapBatchPacked: (batch, where, previousKey, pool) => mapBatchPacked(frozen, batch, where, previousKey, pool),
  };
}

function columnNames(batch: RecordBatch): string {
  return batch.schema.fields.map((f) => `${f.name} (${String(f.type)})`).join(', ') || '(none)';
}

/** The key column, its encoding and the value column of a batch; throws for problems of the whole file. */
interface BatchColumns {
  keyData: Data;
  encoding: KeyEncoding;
  /** The value column (with `valueColumn`); undefined: the value is the JSON document. */
  valueData: Data | undefined;
  keyIndex: number;
}

function batchColumns(options: RowMapper['options'], batch: RecordBatch, where: BatchLocation): BatchColumns {
  const { file, rowGroup } = where;
  const fields = batch.schema.fields;
  const keyIndex = fields.findIndex((f) => f.name === options.keyColumn);
  if (keyIndex < 0) {
    throw new IngestError(
      'INGEST_KEY_COLUMN_MISSING',
      `${file}: key column "${options.keyColumn}" is not a top-level column; the file has: ${columnNames(batch)}`,
      { context: { file, rowGroup, column: options.keyColumn } },
    );
  }
  const keyData = batch.data.children[keyIndex]!;
  const encoding = arrowKeyEncoding(keyData.type);
  if (encoding === undefined) {
    throw new IngestError(
      'INGEST_UNSUPPORTED_KEY_TYPE',
      `${file}: key column "${options.keyColumn}" has type ${String(keyData.type)}, which has no key encoding; ` +
        'keys can be strings, binary, integers, dates or timestamps (see ingest/README-mapping.md)',
      { context: { file, rowGroup, column: options.keyColumn } },
    );
  }
  if (options.valueColumn === undefined) return { keyData, encoding, valueData: undefined, keyIndex };
  const valueIndex = fields.findIndex((f) => f.name === options.valueColumn);
  if (valueIndex < 0) {
    throw new IngestError(
      'INGEST_VALUE_COLUMN_MISSING',
      `${file}: value column "${options.valueColumn}" is not a top-level column; the file has: ${columnNames(batch)}`,
      { context: { file, rowGroup, column: options.valueColumn } },
    );
  }
  return { keyData, encoding, valueData: batch.data.children[valueIndex]!, keyIndex };
}

function mapBatch(options: RowMapper['options'], batch: RecordBatch, where: BatchLocation): MappedBatch {
  const rows: BulkRowInput[] = [];
  const rejects = mapRows(options, batch, where, batchColumns(options, batch, where), (key, value) => void rows.push({ key, value }));
  return { rows, rejects };
}

/** Every row of the batch: accepted ones to `accept` in input order; returns the rejects in input order. */
function mapRows(options: RowMapper['options'], batch: RecordBatch, where: BatchLocation, columns: BatchColumns, accept: (key: Buffer, value: Buffer) => void): Reject[] {
  const { file, rowGroup } = where;
  const rowOffset = where.rowOffset ?? 0;
  const valueOf = columns.valueData !== undefined ? valueColumnReader(columns.valueData) : documentBuilder(batch, columns.keyIndex, options.partitionValues);
  const n = batch.numRows;
  const keys = extractKeys(columns.keyData, columns.encoding);
  const packer = new Utf8Packer();
  const rejects: Reject[] = [];
  for (let i = 0; i < n; i++) {
    const key = keys[i];
    const problem = key === null ? `key column "${options.keyColumn}" is null` : Key.problem(key, options.maxKeyBytes);
    if (problem !== undefined) {
      rejects.push(makeReject(file, rowGroup, rowOffset + i, key, problem));
      continue;
    }
    let value: Buffer | string | null;
    try {
      value = valueOf(i);
    } catch (err) {
      // A cell too large to turn into a string (V8's ~512 MiB limit) or otherwise unrenderable.
      rejects.push(makeReject(file, rowGroup, rowOffset + i, key, `value cannot be built: ${err instanceof Error ? err.message : String(err)}`));
      continue;
    }
    if (value === null) {
      rejects.push(makeReject(file, rowGroup, rowOffset + i, key, `value column "${options.valueColumn}" is null`));
      continue;
    }
    const bytes = typeof value === 'string' ? packer.encode(value) : value;
    if (bytes.byteLength > options.maxValueBytes) {
      rejects.push(makeReject(file, rowGroup, rowOffset + i, key, `value is ${bytes.byteLength} bytes, over the limit of ${options.maxValueBytes} bytes`));
      continue;
    }
    accept(key!, bytes);
  }
  return rejects;
}

/** Rows of one batch into a packed batch (see RowMapper.mapBatchPacked). */
function mapBatchPacked(options: RowMapper['options'], batch: RecordBatch, where: BatchLocation, previousKey: Buffer | undefined, pool: BatchBufferPool | undefined): PackedMappedBatch {
  const columns = batchColumns(options, batch, where);
  const direct = packBytesColumns(options, where, columns);
  if (direct !== undefined) return direct(previousKey, pool);
  // Other types: the per-row path's rows, copied into one batch; the order counted on its keys.
  const builder = new PackedRowsBuilder({ rowsHint: batch.numRows });
  const order = new KeyOrder(previousKey);
  const rejects = mapRows(options, batch, where, columns, (key, value) => {
    order.next(key, 0, key.length);
    builder.add(key, value);
  });
  return { rows: builder.finish(), rejects, ...order.result(), release: NO_RELEASE };
}

const NO_RELEASE = (): void => {};
/** Row lengths are written through a Uint32Array where the machine is little-endian, as the format is. */
const LITTLE_ENDIAN = endianness() === 'LE';

/** Counts keys below the key before them; keys are given as ranges of a buffer, so nothing is allocated per row. */
class KeyOrder {
  outOfOrder = 0;
  #buf: Buffer | undefined;
  #start = 0;
  #end = 0;
  #first: { key: Buffer; previousKey: Buffer } | undefined;

  constructor(previousKey: Buffer | undefined) {
    if (previousKey !== undefined) this.#remember(previousKey, 0, previousKey.length);
  }

  next(buf: Buffer, start: number, end: number): void {
    const prev = this.#buf;
    if (prev !== undefined && compareBytes(buf, start, end, prev, this.#start, this.#end) < 0) {
      this.outOfOrder++;
      this.#first ??= { key: Buffer.from(buf.subarray(start, end)), previousKey: Buffer.from(prev.subarray(this.#start, this.#end)) };
    }
    this.#remember(buf, start, end);
  }

  result(): Pick<PackedMappedBatch, 'outOfOrder' | 'firstOutOfOrder' | 'lastKey'> {
    const lastKey = this.#buf === undefined ? undefined : Buffer.from(this.#buf.subarray(this.#start, this.#end));
    return { outOfOrder: this.outOfOrder, firstOutOfOrder: this.#first, lastKey };
  }

  #remember(buf: Buffer, start: number, end: number): void {
    this.#buf = buf;
    this.#start = start;
    this.#end = end;
  }
}

const NO_META = Buffer.alloc(0);
/** Up to this many bytes a byte loop copies faster than a native copy call (measured on Node 20: 16 B 18 ns vs 86 ns). */
const LOOP_COPY_BYTES = 32;

/** A Buffer over an Arrow values array, without copying. */
function bufferOf(values: Uint8Array): Buffer {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

/**
 * The direct path: a Utf8 or Binary key column (32-bit offsets, not dictionary-encoded) and a Utf8 or
 * Binary value column, copied from the Arrow buffers into the batch's buffers. Undefined for any
 * other columns (the per-row path then maps them). The rejects and their reasons are mapRows's.
 */
function packBytesColumns(options: RowMapper['options'], where: BatchLocation, columns: BatchColumns): ((previousKey: Buffer | undefined, pool: BatchBufferPool | undefined) => PackedMappedBatch) | undefined {
  const { keyData, valueData } = columns;
  if (valueData === undefined || !isPlainBytes(keyData.type) || !isPlainBytes(valueData.type)) return undefined;
  return (previousKey, pool) => {
    const { file, rowGroup } = where;
    const rowOffset = where.rowOffset ?? 0;
    const n = keyData.length;
    const kOff = keyData.valueOffsets as Int32Array;
    const vOff = valueData.valueOffsets as Int32Array;
    const kBuf = bufferOf(keyData.values as Uint8Array);
    const vBuf = bufferOf(valueData.values as Uint8Array);
    const keyNulls = keyData.nullCount > 0;
    const valueNulls = valueData.nullCount > 0;
    const { maxKeyBytes, maxValueBytes } = options;
    // Room for every row (rejects only leave some unused), lengths first, in one buffer.
    const dataBytes = kOff[n]! - kOff[0]! + (vOff[n]! - vOff[0]!);
    const slab = pool === undefined ? Buffer.allocUnsafe(n * 8 + dataBytes) : pool.take(n * 8 + dataBytes);
    const lengths = slab.subarray(0, n * 8);
    const data = slab.subarray(n * 8);
    // Only where aligned: a small unpooled allocation comes from Node's shared pool at any offset.
    const lengths32 = LITTLE_ENDIAN && lengths.byteOffset % 4 === 0 ? new Uint32Array(lengths.buffer, lengths.byteOffset, n * 2) : undefined;
    const order = new KeyOrder(previousKey);
    const rejects: Reject[] = [];
    let count = 0;
    let at = 0;
    for (let i = 0; i < n; i++) {
      const ks = kOff[i]!;
      const ke = kOff[i + 1]!;
      const kLen = ke - ks;
      if (keyNulls && !keyData.getValid(i)) {
        rejects.push(makeReject(file, rowGroup, rowOffset + i, null, `key column "${options.keyColumn}" is null`));
        continue;
      }
      if (kLen === 0 || kLen > maxKeyBytes) {
        const key = kBuf.subarray(ks, ke);
        rejects.push(makeReject(file, rowGroup, rowOffset + i, key, Key.problem(key, maxKeyBytes)!));
        continue;
      }
      if (valueNulls && !valueData.getValid(i)) {
        rejects.push(makeReject(file, rowGroup, rowOffset + i, kBuf.subarray(ks, ke), `value column "${options.valueColumn}" is null`));
        continue;
      }
      const vs = vOff[i]!;
      const ve = vOff[i + 1]!;
      const vLen = ve - vs;
      if (vLen > maxValueBytes) {
        rejects.push(makeReject(file, rowGroup, rowOffset + i, kBuf.subarray(ks, ke), `value is ${vLen} bytes, over the limit of ${maxValueBytes} bytes`));
        continue;
      }
      order.next(kBuf, ks, ke);
      if (lengths32 !== undefined) {
        lengths32[2 * count] = kLen;
        lengths32[2 * count + 1] = vLen;
      } else {
        lengths.writeUInt32LE(kLen, count * 8);
        lengths.writeUInt32LE(vLen, count * 8 + 4);
      }
      if (kLen <= LOOP_COPY_BYTES) for (let j = 0; j < kLen; j++) data[at + j] = kBuf[ks + j]!;
      else kBuf.copy(data, at, ks, ke);
      at += kLen;
      if (vLen <= LOOP_COPY_BYTES) for (let j = 0; j < vLen; j++) data[at + j] = vBuf[vs + j]!;
      else vBuf.copy(data, at, vs, ve);
      at += vLen;
      count++;
    }
    const rows = PackedRows.fromMessage({ format: PACKED_ROWS_FORMAT, count, lengths: lengths.subarray(0, count * 8), data: data.subarray(0, at), meta: NO_META });
    let released = pool === undefined;
    const release = (): void => {
      if (released) return;
      released = true;
      pool!.give(slab);
    };
    return { rows, rejects, ...order.result(), release };
  };
}

/** Utf8 or Binary with 32-bit offsets: the types the direct path copies. */
function isPlainBytes(type: DataType): boolean {
  return DataType.isUtf8(type) || DataType.isBinary(type);
}

function makeReject(file: string, rowGroup: number, row: number, key: Buffer | null | undefined, reason: string): Reject {
  if (key === null || key === undefined || key.byteLength === 0) return { file, rowGroup, row, reason };
  const keyHex = key.subarray(0, REJECT_KEY_HEX_BYTES).toString('hex');
  return {
    file,
    rowGroup,
    row,
    keyHex,
    reason: key.byteLength > REJECT_KEY_HEX_BYTES ? `${reason} (keyHex holds the first ${REJECT_KEY_HEX_BYTES} bytes)` : reason,
  };
}

/** Copies a Uint8Array region into a Buffer the batch's Arrow memory does not outlive. */
function copyOf(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes);
}

/**
 * Every row's key bytes (null where the key is null), computed for the whole batch: integer keys go
 * into one allocation, byte keys are views into one copy of the column's data.
 */
export function extractKeys(data: Data, encoding: KeyEncoding): Array<Buffer | null> {
  const n = data.length;
  const keys = new Array<Buffer | null>(n);
  const hasNulls = data.nullCount > 0;
  const type = data.type as DataType;

  if (DataType.isDictionary(type)) {
    // Keys are dictionary values: encode the dictionary once, then pick by index.
    const dictionary = data.dictionary;
    const dictKeys = dictionary === undefined ? [] : dictionary.data.flatMap((d) => extractKeys(d, encoding));
    const indices = data.values as Int32Array | BigInt64Array;
    for (let i = 0; i < n; i++) keys[i] = hasNulls && !data.getValid(i) ? null : (dictKeys[Number(indices[i])] ?? null);
    return keys;
  }

  if (encoding.kind === 'int') {
    const { width, signed } = encoding;
    const out = Buffer.allocUnsafe(n * width);
    // Date32 days are Int32Array values written 8 bytes wide: every temporal key is an int64.
    const values = data.values as ArrayLike<number | bigint>;
    for (let i = 0; i < n; i++) {
      if (hasNulls && !data.getValid(i)) {
        keys[i] = null;
        continue;
      }
      writeIntKey(out, i * width, values[i]!, width, signed);
      keys[i] = out.subarray(i * width, (i + 1) * width);
    }
    return keys;
  }

  if (DataType.isUtf8(type) || DataType.isLargeUtf8(type) || DataType.isBinary(type) || DataType.isLargeBinary(type)) {
    const offsets = data.valueOffsets as Int32Array | BigInt64Array;
    const base = Number(offsets[0]);
    const bytes = copyOf((data.values as Uint8Array).subarray(base, Number(offsets[n])));
    for (let i = 0; i < n; i++) {
      keys[i] = hasNulls && !data.getValid(i) ? null : bytes.subarray(Number(offsets[i]) - base, Number(offsets[i + 1]) - base);
    }
    return keys;
  }
  if (DataType.isFixedSizeBinary(type)) {
    const width = type.byteWidth;
    const bytes = copyOf((data.values as Uint8Array).subarray(0, n * width));
    for (let i = 0; i < n; i++) keys[i] = hasNulls && !data.getValid(i) ? null : bytes.subarray(i * width, (i + 1) * width);
    return keys;
  }
  // String and binary views: through apache-arrow's getter.
  const vector = makeVector(data);
  for (let i = 0; i < n; i++) {
    const v = vector.get(i) as string | Uint8Array | null;
    keys[i] = v === null ? null : typeof v === 'string' ? Buffer.from(v, 'utf8') : copyOf(v);
  }
  return keys;
}

/** The value of `--value-column`: strings as UTF-8, binary as is, other types as their JSON text. */
function valueColumnReader(data: Data): (i: number) => Buffer | string | null {
  const type = data.type as DataType;
  const hasNulls = data.nullCount > 0;
  if (DataType.isUtf8(type) || DataType.isLargeUtf8(type) || DataType.isBinary(type) || DataType.isLargeBinary(type)) {
    const offsets = data.valueOffsets as Int32Array | BigInt64Array;
    const values = data.values as Uint8Array;
    return (i) => (hasNulls && !data.getValid(i) ? null : copyOf(values.subarray(Number(offsets[i]), Number(offsets[i + 1]))));
  }
  if (DataType.isFixedSizeBinary(type)) {
    const width = type.byteWidth;
    const values = data.values as Uint8Array;
    return (i) => (hasNulls && !data.getValid(i) ? null : copyOf(values.subarray(i * width, (i + 1) * width)));
  }
  const dictionaryOfBytes = DataType.isDictionary(type) && isBytesType(type.dictionary);
  if (DataType.isUtf8View(type) || DataType.isBinaryView(type) || dictionaryOfBytes) {
    const vector = makeVector(data);
    return (i) => {
      const v = vector.get(i) as string | Uint8Array | null;
      return v === null ? null : typeof v === 'string' ? v : copyOf(v);
    };
  }
  const render = jsonRenderer(data);
  return (i) => (hasNulls && !data.getValid(i) ? null : render(i));
}

/** The JSON document of every column but the key, plus partition values; field names escaped once. */
function documentBuilder(batch: RecordBatch, keyIndex: number, partitionValues: Readonly<Record<string, string>>): (i: number) => string {
  const parts: Array<{ prefix: string; render: JsonRenderer }> = [];
  const fields = batch.schema.fields;
  const names = new Set(fields.map((f) => f.name));
  for (let c = 0; c < fields.length; c++) {
    if (c === keyIndex) continue;
    parts.push({ prefix: JSON.stringify(fields[c]!.name) + ':', render: jsonRenderer(batch.data.children[c]!) });
  }
  let tail = '';
  for (const [k, v] of Object.entries(partitionValues)) {
    if (!names.has(k)) tail += `${parts.length > 0 || tail.length > 0 ? ',' : ''}${JSON.stringify(k)}:${JSON.stringify(v)}`;
  }
  tail += '}';
  const count = parts.length;
  return (i) => {
    let out = '{';
    for (let c = 0; c < count; c++) {
      const part = parts[c]!;
      out += (c > 0 ? ',' : '') + part.prefix + part.render(i);
    }
    return out + tail;
  };
}

/** String and binary types, whose cells are bytes as they are. */
function isBytesType(type: DataType): boolean {
  return (
    DataType.isUtf8(type) || DataType.isLargeUtf8(type) || DataType.isBinary(type) || DataType.isLargeBinary(type) || DataType.isFixedSizeBinary(type) || DataType.isUtf8View(type) || DataType.isBinaryView(type)
  );
}
