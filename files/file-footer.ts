import { open, type FileHandle } from 'node:fs/promises';
import { RecordBatchReader, type Schema } from 'apache-arrow';
import { parquetMetadataAsync, parquetSchema, type AsyncBuffer, type ColumnChunk, type FileMetaData, type SchemaTree } from 'hyparquet';
import { describeCause } from '../common/index.js';
import { isRecordBatchMessage, isSchemaMessage, readArrowFileLayout, walkArrowMessages } from './arrow-message-walker.js';
import { assertFileUnchanged, type DropFile } from '../ingest/drop-scanner.js';
import { IngestError } from '../ingest/ingest-errors.js';
import { arrowKeyEncoding, encodeIntKey, parquetKeyEncoding, type KeyEncoding } from '../ingest/key-encoding.js';

/** One row group (Parquet) or record batch (Arrow) as the footer describes it. */
export interface FooterRowGroup {
  /** 0-based position in the file; the unit of work and of `readRecordBatches` ranges. */
  index: number;
  rows: number;
  /** Bytes on disk (Parquet: compressed column chunks; Arrow: the message with its body). */
  bytes: number;
  /**
   * Lower bound of the key column in this row group, encoded like the row mapper encodes keys, so it
   * compares bytewise with store keys. From Parquet statistics; absent when the file has none, for
   * Arrow files, and when the statistics cannot be trusted to be in key order. A bound, not
   * necessarily a key present (writers may truncate long values).
   */
  keyMin?: Buffer;
  /** Upper bound of the key column in this row group; see keyMin. */
  keyMax?: Buffer;
}

/** What a file's footer (metadata) says, read without touching data pages or record batch bodies. */
export interface FileFooter {
  /** Sum of the row groups' row counts. */
  rows: number;
  rowGroups: FooterRowGroup[];
  /** Top-level columns. `type` is descriptive text: Parquet physical type with its annotation, or the Arrow type. */
  columns: Array<{ name: string; type: string }>;
}

/**
 * Reads the footer of a Parquet file (with hyparquet: statistics included) or the message headers of
 * an Arrow IPC file or stream (row counts per record batch; bodies are skipped). With `keyColumn`, the
 * column must exist and have a key encoding, and Parquet row groups get their key bounds.
 *
 * Throws IngestError INGEST_CORRUPT_FILE (naming the file and the problem), INGEST_INPUT_CHANGED, INGEST_SOURCE_NOT_FOUND,
 * INGEST_KEY_COLUMN_MISSING or INGEST_UNSUPPORTED_KEY_TYPE.
 */
export async function readFileFooter(file: DropFile, keyColumn?: string): Promise<FileFooter> {
  await assertFileUnchanged(file);
  let handle: FileHandle;
  try {
    handle = await open(file.path, 'r');
  } catch (err) {
    throw new IngestError('INGEST_SOURCE_NOT_FOUND', `${file.path} cannot be opened any more: ${describeCause(err)}`, {
      cause: err,
      context: { file: file.path },
    });
  }
  try {
    return file.format === 'parquet' ? await parquetFooter(file, handle, keyColumn) : await arrowFooter(file, handle, keyColumn);
  } catch (err) {
    if (err instanceof IngestError) throw err;
    // Whatever else escaped (a read failing with EIO, a length that breaks a Buffer read) comes from
    // the file: say which one.
    throw corrupt(file, `cannot read the footer: ${describeCause(err)}`, err);
  } finally {
    await handle.close();
  }
}

function corrupt(file: DropFile, problem: string, cause?: unknown): IngestError {
  return new IngestError('INGEST_CORRUPT_FILE', `${file.path}: ${problem}`, { cause, context: { file: file.path } });
}

function keyColumnMissing(file: DropFile, keyColumn: string, columns: Array<{ name: string; type: string }>): IngestError {
  const available = columns.map((c) => `${c.name} (${c.type})`).join(', ') || '(none)';
  return new IngestError('INGEST_KEY_COLUMN_MISSING', `${file.path}: key column "${keyColumn}" is not a top-level column; the file has: ${available}`, {
    context: { file: file.path, column: keyColumn },
  });
}

function unsupportedKeyType(file: DropFile, keyColumn: string, type: string): IngestError {
  return new IngestError(
    'INGEST_UNSUPPORTED_KEY_TYPE',
    `${file.path}: key column "${keyColumn}" has type ${type}, which has no key encoding; keys can be strings, binary, integers, dates or timestamps (see ingest/README-mapping.md)`,
    { context: { file: file.path, column: keyColumn } },
  );
}

// ---- Parquet ------------------------------------------------------------------------------------

/** Statistics as raw values: bytes stay bytes, timestamps and dates stay integers (hyparquet's defaults make Dates and strings). */
const RAW_PARSERS = {
  stringFromBytes: (bytes: Uint8Array) => bytes,
  jsonFromBytes: (bytes: Uint8Array) => bytes,
  uuidFromBytes: (bytes: Uint8Array) => bytes,
  geometryFromBytes: (bytes: Uint8Array) => bytes,
  geographyFromBytes: (bytes: Uint8Array) => bytes,
  timestampFromMilliseconds: (value: bigint) => value,
  timestampFromMicroseconds: (value: bigint) => value,
  timestampFromNanoseconds: (value: bigint) => value,
  dateFromDays: (days: number) => days,
};

/** The tail hyparquet fetches first; footers are usually far smaller, larger ones cost a second read. */
const FOOTER_FETCH_BYTES = 64 * 1024;

function asyncBufferOf(handle: FileHandle, size: number): AsyncBuffer {
  return {
    byteLength: size,
    async slice(start: number, end?: number): Promise<ArrayBuffer> {
      const stop = Math.min(end ?? size, size);
      if (!Number.isSafeInteger(start) || start < 0 || stop < start) throw new Error(`a read of bytes ${start}–${stop} of a ${size}-byte file`);
      const out = new Uint8Array(stop - start);
      if (out.byteLength > 0) await handle.read(out, 0, out.byteLength, start);
      return out.buffer;
    },
  };
}

async function parquetFooter(file: DropFile, handle: FileHandle, keyColumn: string | undefined): Promise<FileFooter> {
  let metadata: FileMetaData;
  let root: SchemaTree;
  try {
    metadata = await parquetMetadataAsync(asyncBufferOf(handle, file.sizeBytes), {
      parsers: RAW_PARSERS,
      geoparquet: false,
      initialFetchSize: FOOTER_FETCH_BYTES,
    } as Parameters<typeof parquetMetadataAsync>[1]);
    root = parquetSchema(metadata);
  } catch (err) {
    throw corrupt(file, `cannot read the Parquet footer: ${describeCause(err)}`, err);
  }
  if (root === undefined || !Array.isArray(root.children)) throw corrupt(file, 'the Parquet footer has no schema');

  const columns = root.children.map((c) => ({ name: c.element.name, type: describeParquetType(c) }));
  const groups = metadata.row_groups ?? [];
  // The row groups' counts are what readers deliver; the file-level num_rows is ignored (parquet-rs
  // 0.3 wrote 0 there, see repeated_no_annotation.parquet).
  let rows = 0;
  for (const rg of groups) rows += Number(rg.num_rows);
  if (!Number.isSafeInteger(rows) || rows < 0) throw corrupt(file, `the Parquet footer's row groups declare ${rows} rows`);

  let keyLeaf: { index: number; encoding: KeyEncoding; statsUsable: boolean } | undefined;
  if (keyColumn !== undefined) {
    const node = root.children.find((c) => c.element.name === keyColumn);
    if (node === undefined) throw keyColumnMissing(file, keyColumn, columns);
    const description = describeParquetType(node);
    if (node.children.length > 0 || node.element.repetition_type === 'REPEATED') throw unsupportedKeyType(file, keyColumn, description);
    const parquetEncoding = parquetKeyEncoding(node.element);
    if (parquetEncoding === undefined) throw unsupportedKeyType(file, keyColumn, description);
    // arrow-rs honours the Arrow schema a writer embeds (ARROW:schema), which can re-type a temporal
    // column (Timestamp(s) stored as millis, Date64 stored as days): then the Parquet statistics are
    // not in the key's unit. We do not decode that schema here — an unverified flatbuffer from a
    // corrupt file can make apache-arrow allocate without bound — and simply drop temporal bounds.
    const encoding = parquetEncoding;
    const hasArrowSchema = metadata.key_value_metadata?.some((kv) => kv.key === 'ARROW:schema') ?? false;
    const statsUsable = node.element.type !== 'INT96' && !(hasArrowSchema && encoding.kind === 'int' && encoding.temporal !== undefined);
    const index = groups[0]?.columns.findIndex((c) => pathIs(c, keyColumn)) ?? -1;
    keyLeaf = { index, encoding, statsUsable: statsUsable && index >= 0 };
  }

  const rowGroups: FooterRowGroup[] = groups.map((rg, index) => {
    let bytes = 0;
    for (const chunk of rg.columns) bytes += Number(chunk.meta_data?.total_compressed_size ?? 0);
    if (bytes === 0 && rg.total_compressed_size !== undefined) bytes = Number(rg.total_compressed_size);
    const out: FooterRowGroup = { index, rows: Number(rg.num_rows), bytes };
    if (keyLeaf?.statsUsable) {
      const chunk = rg.columns[keyLeaf.index];
      const bounds = chunk !== undefined && pathIs(chunk, keyColumn!) ? keyBounds(chunk, keyLeaf.encoding) : undefined;
      if (bounds !== undefined) {
        out.keyMin = bounds.min;
        out.keyMax = bounds.max;
      }
    }
    return out;
  });
  return { rows, rowGroups, columns };
}

function pathIs(chunk: ColumnChunk, column: string): boolean {
  const path = chunk.meta_data?.path_in_schema;
  return path !== undefined && path.length === 1 && path[0] === column;
}

/**
 * Key bounds from a column chunk's statistics. `min_value`/`max_value` follow the column's logical
 * sort order; the deprecated `min`/`max` were compared as signed values (and bytes as signed bytes by
 * old parquet-mr), so they are used only for signed integer keys.
 */
function keyBounds(chunk: ColumnChunk, encoding: KeyEncoding): { min: Buffer; max: Buffer } | undefined {
  const stats = chunk.meta_data?.statistics;
  if (stats === undefined) return undefined;
  let min: unknown = stats.min_value;
  let max: unknown = stats.max_value;
  if ((min === undefined || max === undefined) && encoding.kind === 'int' && encoding.signed) {
    min = stats.min;
    max = stats.max;
  }
  if (min === undefined || max === undefined || min === null || max === null) return undefined;
  try {
    return { min: encodeStat(min, encoding), max: encodeStat(max, encoding) };
  } catch {
    // A statistic that does not fit the key's width (a writer bug): no bounds rather than wrong ones.
    return undefined;
  }
}

function encodeStat(value: unknown, encoding: KeyEncoding): Buffer {
  if (encoding.kind === 'bytes') {
    if (value instanceof Uint8Array) return Buffer.from(value);
    if (typeof value === 'string') return Buffer.from(value, 'utf8');
    throw new TypeError(`byte statistic of type ${typeof value}`);
  }
  if (typeof value !== 'number' && typeof value !== 'bigint') throw new TypeError(`integer statistic of type ${typeof value}`);
  return encodeIntKey(value, encoding.width, encoding.signed);
}

/** `INT64 (TIMESTAMP(MICROS, UTC))`, `BYTE_ARRAY (STRING)`, `LIST`, `STRUCT`... */
function describeParquetType(node: SchemaTree): string {
  const el = node.element;
  const logical = el.logical_type;
  let annotation: string | undefined;
  if (logical !== undefined) {
    switch (logical.type) {
      case 'INTEGER':
        annotation = `INT(${logical.bitWidth}, ${logical.isSigned ? 'signed' : 'unsigned'})`;
        break;
      case 'TIMESTAMP':
      case 'TIME':
        annotation = `${logical.type}(${logical.unit}${logical.isAdjustedToUTC ? ', UTC' : ''})`;
        break;
      case 'DECIMAL':
        annotation = `DECIMAL(${logical.precision}, ${logical.scale})`;
        break;
      default:
        annotation = logical.type;
    }
  } else if (el.converted_type !== undefined) {
    annotation = el.converted_type === 'DECIMAL' ? `DECIMAL(${el.precision ?? '?'}, ${el.scale ?? 0})` : el.converted_type;
  }
  if (node.children.length > 0) return annotation ?? (el.repetition_type === 'REPEATED' ? 'LIST' : 'STRUCT');
  const physical = el.type === 'FIXED_LEN_BYTE_ARRAY' ? `FIXED_LEN_BYTE_ARRAY(${el.type_length ?? '?'})` : (el.type ?? 'UNKNOWN');
  const base = annotation === undefined ? physical : `${physical} (${annotation})`;
  return el.repetition_type === 'REPEATED' ? `REPEATED ${base}` : base;
}

// ---- Arrow IPC ----------------------------------------------------------------------------------

const ARROW_FILE_MAGIC_BYTES = 8; // "ARROW1" + 2 bytes of padding

async function arrowFooter(file: DropFile, handle: FileHandle, keyColumn: string | undefined): Promise<FileFooter> {
  const head = Buffer.alloc(6);
  await handle.read(head, 0, 6, 0);
  const isFileFormat = head.toString('latin1') === 'ARROW1';
  let start = 0;
  let end = file.sizeBytes;
  // The file format keeps its schema in the footer (writers may leave the schema message out of the
  // body). Once the footer's flatbuffer is checked, apache-arrow's file reader decodes it safely.
  let schema: Schema | undefined;
  let footerBatches: number | undefined;
  if (isFileFormat) {
    try {
      const layout = await readArrowFileLayout(handle, file.sizeBytes);
      start = ARROW_FILE_MAGIC_BYTES;
      end = layout.footerStart;
      footerBatches = layout.recordBatches.length;
      const reader = await RecordBatchReader.from(handle);
      await reader.open();
      schema = reader.schema;
    } catch (err) {
      throw corrupt(file, `cannot read the Arrow IPC file footer: ${describeCause(err)}`, err);
    }
  }
  const rowGroups: FooterRowGroup[] = [];
  let rows = 0;
  try {
    for await (const { message, totalBytes } of walkArrowMessages(handle, start, end)) {
      if (isSchemaMessage(message)) {
        schema ??= message.header() as Schema;
      } else if (isRecordBatchMessage(message)) {
        if (schema === undefined) throw new Error('a record batch comes before the schema');
        const batchRows = Number((message.header() as { length: number | bigint }).length);
        if (!Number.isSafeInteger(batchRows) || batchRows < 0) throw new Error(`record batch ${rowGroups.length} declares ${batchRows} rows`);
        rowGroups.push({ index: rowGroups.length, rows: batchRows, bytes: totalBytes });
        rows += batchRows;
      }
    }
  } catch (err) {
    throw corrupt(file, `cannot read the Arrow IPC ${isFileFormat ? 'file' : 'stream'}: ${describeCause(err)}`, err);
  }
  if (footerBatches !== undefined && footerBatches !== rowGroups.length) {
    throw corrupt(file, `the Arrow IPC file footer lists ${footerBatches} record batches but the file body holds ${rowGroups.length}`);
  }
  if (schema === undefined) throw corrupt(file, `the Arrow IPC ${isFileFormat ? 'file' : 'stream'} has no schema message`);
  const columns = schema.fields.map((f) => ({ name: f.name, type: String(f.type) }));
  if (keyColumn !== undefined) {
    const field = schema.fields.find((f) => f.name === keyColumn);
    if (field === undefined) throw keyColumnMissing(file, keyColumn, columns);
    // Arrow IPC carries no statistics, so there are no key bounds to compute; only validate the type.
    if (arrowKeyEncoding(field.type) === undefined) throw unsupportedKeyType(file, keyColumn, String(field.type));
  }
  return { rows, rowGroups, columns };
}
