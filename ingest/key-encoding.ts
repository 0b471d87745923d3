import { DataType, DateUnit, TimeUnit } from 'apache-arrow';

/**
 * How a key column's values become key bytes. Bytes sort bytewise in the store, so every encoding
 * here preserves the column's natural order:
 * - `bytes`: UTF-8 strings and binary values as they are (UTF-8 byte order is code-point order).
 * - `int`: big-endian, fixed width (1, 2, 4 or 8 bytes by type); signed values get their sign bit
 *   flipped so that negative numbers sort before positive ones (offset binary). `temporal` says what
 *   the integer counts when the column is a date or timestamp (always signed 8 bytes then).
 */
export type KeyEncoding =
  | { readonly kind: 'bytes' }
  | { readonly kind: 'int'; readonly width: 1 | 2 | 4 | 8; readonly signed: boolean; readonly temporal?: string };

const BYTES: KeyEncoding = Object.freeze({ kind: 'bytes' });

function intEncoding(width: number, signed: boolean, temporal?: string): KeyEncoding | undefined {
  if (width !== 1 && width !== 2 && width !== 4 && width !== 8) return undefined;
  return temporal === undefined ? { kind: 'int', width, signed } : { kind: 'int', width, signed, temporal };
}

const TIME_UNIT_NAMES: Record<number, string> = {
  [TimeUnit.SECOND]: 's',
  [TimeUnit.MILLISECOND]: 'ms',
  [TimeUnit.MICROSECOND]: 'us',
  [TimeUnit.NANOSECOND]: 'ns',
};

/** The key encoding of an Arrow type, or undefined when the type cannot be a key. */
export function arrowKeyEncoding(type: DataType): KeyEncoding | undefined {
  if (DataType.isDictionary(type)) return arrowKeyEncoding(type.dictionary);
  if (
    DataType.isUtf8(type) ||
    DataType.isLargeUtf8(type) ||
    DataType.isBinary(type) ||
    DataType.isLargeBinary(type) ||
    DataType.isFixedSizeBinary(type) ||
    DataType.isUtf8View(type) ||
    DataType.isBinaryView(type)
  ) {
    return BYTES;
  }
  if (DataType.isInt(type)) return intEncoding(type.bitWidth / 8, type.isSigned);
  if (DataType.isTimestamp(type)) return intEncoding(8, true, `timestamp[${TIME_UNIT_NAMES[type.unit] ?? type.unit}]`);
  if (DataType.isDate(type)) return intEncoding(8, true, type.unit === DateUnit.DAY ? 'date[day]' : 'date[ms]');
  return undefined;
}

/** The subset of a Parquet schema element (as hyparquet parses it) that decides a key's encoding. */
export interface ParquetColumnType {
  type?: string;
  converted_type?: string;
  logical_type?: { type: string; bitWidth?: number; isSigned?: boolean; unit?: string };
}

const PARQUET_TS_UNITS: Record<string, string> = { MILLIS: 'ms', MICROS: 'us', NANOS: 'ns' };

/**
 * The key encoding of a Parquet leaf column, matching the Arrow type the reader (arrow-rs in
 * parquet-wasm) decodes it to: the footer's key bounds must be encoded exactly like the row mapper
 * encodes the decoded values.
 */
export function parquetKeyEncoding(column: ParquetColumnType): KeyEncoding | undefined {
  const logical = column.logical_type?.type;
  const converted = column.converted_type;
  if (logical === 'DECIMAL' || converted === 'DECIMAL') return undefined;
  switch (column.type) {
    case 'BYTE_ARRAY':
      return BYTES;
    case 'FIXED_LEN_BYTE_ARRAY':
      return logical === 'FLOAT16' || converted === 'INTERVAL' ? undefined : BYTES;
    case 'INT32': {
      if (logical === 'DATE' || converted === 'DATE') return intEncoding(8, true, 'date[day]');
      if (logical === 'TIME' || converted?.startsWith('TIME_')) return undefined;
      if (logical === 'INTEGER') return intEncoding((column.logical_type?.bitWidth ?? 32) / 8, column.logical_type?.isSigned ?? true);
      const m = /^(U?)INT_(8|16|32)$/.exec(converted ?? '');
      if (m) return intEncoding(Number(m[2]) / 8, m[1] !== 'U');
      return intEncoding(4, true);
    }
    case 'INT64': {
      if (logical === 'TIMESTAMP') return intEncoding(8, true, `timestamp[${PARQUET_TS_UNITS[column.logical_type?.unit ?? ''] ?? 'ms'}]`);
      if (converted === 'TIMESTAMP_MILLIS') return intEncoding(8, true, 'timestamp[ms]');
      if (converted === 'TIMESTAMP_MICROS') return intEncoding(8, true, 'timestamp[us]');
      if (logical === 'TIME' || converted?.startsWith('TIME_')) return undefined;
      if (logical === 'INTEGER') return intEncoding(8, column.logical_type?.isSigned ?? true);
      if (converted === 'UINT_64') return intEncoding(8, false);
      return intEncoding(8, true);
    }
    case 'INT96':
      // arrow-rs decodes Spark's INT96 timestamps to Timestamp(ns).
      return intEncoding(8, true, 'timestamp[ns]');
    default:
      return undefined;
  }
}

/** A readable name of an encoding for messages and docs: `bytes`, `int32 (sign-flipped big-endian)`... */
export function describeKeyEncoding(encoding: KeyEncoding): string {
  if (encoding.kind === 'bytes') return 'raw bytes';
  const base = `${encoding.signed ? 'int' : 'uint'}${encoding.width * 8} big-endian${encoding.signed ? ' with the sign bit flipped' : ''}`;
  return encoding.temporal === undefined ? base : `${encoding.temporal} as ${base}`;
}

/**
 * Writes `value` at `offset` in the order-preserving encoding (big-endian, sign bit flipped when
 * signed). `value` must fit the width; bigint for width 8, number otherwise.
 */
export function writeIntKey(target: Buffer, offset: number, value: number | bigint, width: 1 | 2 | 4 | 8, signed: boolean): void {
  if (width === 8) {
    const big = typeof value === 'bigint' ? value : BigInt(value);
    if (signed) {
      target.writeBigInt64BE(big, offset);
      target[offset] = target[offset]! ^ 0x80;
    } else {
      target.writeBigUInt64BE(big, offset);
    }
    return;
  }
  const n = Number(value);
  if (signed) {
    target.writeIntBE(n, offset, width);
    target[offset] = target[offset]! ^ 0x80;
  } else {
    target.writeUIntBE(n, offset, width);
  }
}

/** One integer key, encoded. Throws RangeError when the value does not fit the width. */
export function encodeIntKey(value: number | bigint, width: 1 | 2 | 4 | 8, signed: boolean): Buffer {
  const out = Buffer.allocUnsafe(width);
  writeIntKey(out, 0, value, width, signed);
  return out;
}
