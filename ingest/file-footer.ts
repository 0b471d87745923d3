import type { FooterColumn, FooterRowGroup as FileRowGroup } from '../files/index.js';
import type { DropFile } from './drop-scanner.js';
import { readDropFileFooter } from './file-reading.js';
import { IngestError } from './ingest-errors.js';
import { arrowKeyEncoding, encodeIntKey, parquetKeyEncoding, type KeyEncoding } from './key-encoding.js';

/** One row group (Parquet) or record batch (Arrow) as the footer describes it, with key bounds. */
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
 * Reads a drop file's footer (files/ `readFooter`). With `keyColumn`, the column must exist and have
 * a key encoding, and Parquet row groups get their key bounds from the column's statistics.
 *
 * Throws IngestError INGEST_CORRUPT_FILE (naming the file and the problem), INGEST_INPUT_CHANGED, INGEST_SOURCE_NOT_FOUND,
 * INGEST_KEY_COLUMN_MISSING or INGEST_UNSUPPORTED_KEY_TYPE.
 */
export async function readFileFooter(file: DropFile, keyColumn?: string): Promise<FileFooter> {
  const footer = await readDropFileFooter(file, keyColumn === undefined ? {} : { statisticsColumn: keyColumn });
  const columns = footer.columns.map((c) => ({ name: c.name, type: c.type }));
  const plain = (rg: FileRowGroup): FooterRowGroup => ({ index: rg.index, rows: rg.rows, bytes: rg.bytes });
  if (keyColumn === undefined) return { rows: footer.rows, rowGroups: footer.rowGroups.map(plain), columns };
  const column = footer.columns.find((c) => c.name === keyColumn);
  if (column === undefined) throw keyColumnMissing(file, keyColumn, columns);
  const encoding = keyEncodingOf(file, keyColumn, column);
  // arrow-rs honours the Arrow schema a writer embeds (ARROW:schema), which can re-type a temporal
  // column (Timestamp(s) stored as millis, Date64 stored as days): then the Parquet statistics are
  // not in the key's unit. We do not decode that schema here — an unverified flatbuffer from a
  // corrupt file can make apache-arrow allocate without bound — and simply drop temporal bounds.
  // Arrow IPC carries no statistics, so there are no bounds to compute.
  const statsUsable =
    column.parquet !== undefined &&
    column.parquet.element.type !== 'INT96' &&
    !(footer.keyValueMetadata.has('ARROW:schema') && encoding.kind === 'int' && encoding.temporal !== undefined);
  const rowGroups = footer.rowGroups.map((rg) => {
    const out = plain(rg);
    const bounds = statsUsable && rg.statistics !== undefined ? keyBounds(rg.statistics, encoding) : undefined;
    if (bounds !== undefined) {
      out.keyMin = bounds.min;
      out.keyMax = bounds.max;
    }
    return out;
  });
  return { rows: footer.rows, rowGroups, columns };
}

function keyEncodingOf(file: DropFile, keyColumn: string, column: FooterColumn): KeyEncoding {
  if (column.parquet !== undefined) {
    const encoding = column.parquet.nestedOrRepeated ? undefined : parquetKeyEncoding(column.parquet.element);
    if (encoding === undefined) throw unsupportedKeyType(file, keyColumn, column.type);
    return encoding;
  }
  const encoding = column.arrowType === undefined ? undefined : arrowKeyEncoding(column.arrowType);
  if (encoding === undefined) throw unsupportedKeyType(file, keyColumn, column.type);
  return encoding;
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

/**
 * Key bounds from a column chunk's statistics. `min_value`/`max_value` follow the column's logical
 * sort order; the deprecated `min`/`max` were compared as signed values (and bytes as signed bytes by
 * old parquet-mr), so they are used only for signed integer keys.
 */
function keyBounds(stats: NonNullable<FileRowGroup['statistics']>, encoding: KeyEncoding): { min: Buffer; max: Buffer } | undefined {
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
