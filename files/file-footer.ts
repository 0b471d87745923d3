import { open, type FileHandle } from 'node:fs/promises';
import { RecordBatchReader, type DataType, type Schema } from 'apache-arrow';
import { asyncBufferFromFile, parquetMetadataAsync, parquetSchema, type AsyncBuffer, type ColumnChunk, type FileMetaData, type SchemaElement, type SchemaTree, type Statistics } from 'hyparquet';
import { describeCause } from '../common/index.js';
import { isRecordBatchMessage, isSchemaMessage, readArrowFileLayout, walkArrowMessages } from './arrow-message-walker.js';
import { assertUnchanged, type DataFile } from './data-file.js';
import { FileError } from './file-errors.js';

/** One row group (Parquet) or record batch (Arrow) as the footer describes it. */
export interface FooterRowGroup {
  /** 0-based position in the file; the unit of work and of `readRecordBatches` ranges. */
  index: number;
  rows: number;
  /** Bytes on disk (Parquet: compressed column chunks; Arrow: the message with its body). */
  bytes: number;
  /**
   * Parquet, with `statisticsColumn`: that column's chunk statistics in this row group, raw (bytes
   * stay bytes, timestamps and dates stay integers). Absent when the writer wrote none.
   */
  statistics?: Statistics;
}

/** One top-level column. */
export interface FooterColumn {
  name: string;
  /** Descriptive text: Parquet physical type with its annotation, or the Arrow type. */
  type: string;
  /** Parquet: the schema element, and whether the column is nested (a group) or repeated. */
  parquet?: { element: SchemaElement; nestedOrRepeated: boolean };
  /** Arrow: the field's type. */
  arrowType?: DataType;
}

/** What a file's footer (metadata) says, read without touching data pages or record batch bodies. */
export interface Footer {
  format: DataFile['format'];
  /** Sum of the row groups' row counts. */
  rows: number;
  rowGroups: FooterRowGroup[];
  columns: FooterColumn[];
  /** Parquet key-value metadata (empty for Arrow files). */
  keyValueMetadata: ReadonlyMap<string, string>;
}

/** Options of `readFooter`. */
export interface ReadFooterOptions {
  /** Parquet: a top-level leaf column whose statistics each row group should carry. */
  statisticsColumn?: string;
}

/**
 * Reads the footer of a Parquet file (with hyparquet: statistics included) or the message headers of
 * an Arrow IPC file or stream (row counts per record batch; bodies are skipped).
 *
 * Throws FileError FILE_CORRUPT (naming the file and the problem), FILE_CHANGED or FILE_NOT_FOUND.
 */
export async function readFooter(file: DataFile, options: ReadFooterOptions = {}): Promise<Footer> {
  await assertUnchanged(file);
  if (file.format === 'parquet') {
    let buffer: AsyncBuffer;
    try {
      buffer = await asyncBufferFromFile(file.path);
    } catch (err) {
      throw cannotOpen(file, err);
    }
    try {
      return await parquetFooter(file, buffer, options.statisticsColumn);
    } catch (err) {
      throw asCorrupt(file, err);
    }
  }
  let handle: FileHandle;
  try {
    handle = await open(file.path, 'r');
  } catch (err) {
    throw cannotOpen(file, err);
  }
  try {
    return await arrowFooter(file, handle);
  } catch (err) {
    throw asCorrupt(file, err);
  } finally {
    await handle.close();
  }
}

function cannotOpen(file: DataFile, err: unknown): FileError {
  return new FileError('FILE_NOT_FOUND', `${file.path} cannot be opened any more: ${describeCause(err)}`, { cause: err, context: { file: file.path } });
}

// Whatever else escaped (a read failing with EIO, a length that breaks a Buffer read) comes from the
// file: say which one.
function asCorrupt(file: DataFile, err: unknown): FileError {
  return err instanceof FileError ? err : corrupt(file, `cannot read the footer: ${describeCause(err)}`, err);
}

function corrupt(file: DataFile, problem: string, cause?: unknown): FileError {
  return new FileError('FILE_CORRUPT', `${file.path}: ${problem}`, { cause, context: { file: file.path } });
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

async function parquetFooter(file: DataFile, buffer: AsyncBuffer, statisticsColumn: string | undefined): Promise<Footer> {
  let metadata: FileMetaData;
  let root: SchemaTree;
  try {
    metadata = await parquetMetadataAsync(buffer, {
      parsers: RAW_PARSERS,
      geoparquet: false,
      initialFetchSize: FOOTER_FETCH_BYTES,
    } as Parameters<typeof parquetMetadataAsync>[1]);
    root = parquetSchema(metadata);
  } catch (err) {
    throw corrupt(file, `cannot read the Parquet footer: ${describeCause(err)}`, err);
  }
  if (root === undefined || !Array.isArray(root.children)) throw corrupt(file, 'the Parquet footer has no schema');

  const columns: FooterColumn[] = root.children.map((c) => ({
    name: c.element.name,
    type: describeParquetType(c),
    parquet: { element: c.element, nestedOrRepeated: c.children.length > 0 || c.element.repetition_type === 'REPEATED' },
  }));
  const groups = metadata.row_groups ?? [];
  // The row groups' counts are what readers deliver; the file-level num_rows is ignored (parquet-rs
  // 0.3 wrote 0 there, see repeated_no_annotation.parquet).
  let rows = 0;
  for (const rg of groups) rows += Number(rg.num_rows);
  if (!Number.isSafeInteger(rows) || rows < 0) throw corrupt(file, `the Parquet footer's row groups declare ${rows} rows`);

  const statsIndex = statisticsColumn === undefined ? -1 : (groups[0]?.columns.findIndex((c) => pathIs(c, statisticsColumn)) ?? -1);
  const rowGroups: FooterRowGroup[] = groups.map((rg, index) => {
    let bytes = 0;
    for (const chunk of rg.columns) bytes += Number(chunk.meta_data?.total_compressed_size ?? 0);
    if (bytes === 0 && rg.total_compressed_size !== undefined) bytes = Number(rg.total_compressed_size);
    const out: FooterRowGroup = { index, rows: Number(rg.num_rows), bytes };
    const chunk = statsIndex >= 0 ? rg.columns[statsIndex] : undefined;
    const statistics = chunk !== undefined && pathIs(chunk, statisticsColumn!) ? chunk.meta_data?.statistics : undefined;
    if (statistics !== undefined) out.statistics = statistics;
    return out;
  });
  const keyValueMetadata = new Map((metadata.key_value_metadata ?? []).map((kv) => [kv.key, kv.value ?? '']));
  return { format: 'parquet', rows, rowGroups, columns, keyValueMetadata };
}

function pathIs(chunk: ColumnChunk, column: string): boolean {
  const path = chunk.meta_data?.path_in_schema;
  return path !== undefined && path.length === 1 && path[0] === column;
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

async function arrowFooter(file: DataFile, handle: FileHandle): Promise<Footer> {
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
  const columns: FooterColumn[] = schema.fields.map((f) => ({ name: f.name, type: String(f.type), arrowType: f.type }));
  return { format: 'arrow', rows, rowGroups, columns, keyValueMetadata: new Map() };
}
