import { MAX_ETAG, MAX_TIME_MS } from './field-limits.js';
import { StoreError } from './store-errors.js';

/** What the store keeps for a key: the value and its metadata. Times are Unix ms; 0 = unset. */
export interface StoredRecord {
  value: Buffer;
  /** Per-key version: changes on every write, never goes backwards on a node. */
  etag: number;
  updatedAtMs: number;
  /** 0 = never expires. */
  expiresAtMs: number;
}

/**
 * Layout, version 1 (big-endian):
 *   [0] format version = 1   [1] flags (bit 0: has expiry)
 *   [2..10) etag u64   [10..18) updatedAt ms u64   [18..26) expiresAt ms u64 (only with bit 0)
 *   then the value bytes.
 * A leading version byte lets a later layout be read next to this one.
 */
export const RECORD_FORMAT_VERSION = 1;
const FLAG_EXPIRES = 1;
const HEADER_BYTES = 18;
const TWO_32 = 2 ** 32;

/** The size of `encodeRecord(record)` in bytes, without encoding it. */
export function encodedRecordLength(record: StoredRecord): number {
  return HEADER_BYTES + (record.expiresAtMs > 0 ? 8 : 0) + record.value.length;
}

/** Header bytes of every record, and the extra bytes of one with an expiry. */
export const RECORD_HEADER_BYTES = HEADER_BYTES;
export const RECORD_EXPIRY_BYTES = 8;

export function encodeRecord(record: StoredRecord): Buffer {
  const out = Buffer.allocUnsafe(encodedRecordLength(record));
  record.value.copy(out, writeRecordHeader(out, 0, record.etag, record.updatedAtMs, record.expiresAtMs));
  return out;
}

/**
 * Writes a record's header into `out` at `at` (the value goes right after it, for records laid
 * out in a shared buffer); returns where the value starts.
 */
export function writeRecordHeader(out: Buffer, at: number, etag: number, updatedAtMs: number, expiresAtMs: number): number {
  const hasExpiry = expiresAtMs > 0;
  out[at] = RECORD_FORMAT_VERSION;
  out[at + 1] = hasExpiry ? FLAG_EXPIRES : 0;
  writeU64(out, at + 2, etag);
  writeU64(out, at + 10, updatedAtMs);
  if (!hasExpiry) return at + HEADER_BYTES;
  writeU64(out, at + 18, expiresAtMs);
  return at + HEADER_BYTES + 8;
}

/**
 * Decodes a stored record; the value is a view into `bytes`, not a copy.
 *
 * The store never writes a field outside its range (store/field-limits.ts), but a record can hold
 * one anyway (written by an older version, or planted). Such fields are clamped, so every reader
 * (Get, Scan, backups, checksums) can still carry them: an etag above MAX_ETAG reads as MAX_ETAG,
 * a time above MAX_TIME_MS as MAX_TIME_MS (9999-12-31T23:59:59.999Z: for an expiry, "never, in
 * practice"). The bytes on disk are left alone until the key is next written.
 */
export function decodeRecord(bytes: Buffer): StoredRecord {
  const hasExpiry = (bytes[1]! & FLAG_EXPIRES) !== 0;
  const header = HEADER_BYTES + (hasExpiry ? 8 : 0);
  if (bytes.length < header || bytes[0] !== RECORD_FORMAT_VERSION) {
    throw new StoreError('STORE_INTERNAL', `unreadable record: format version ${bytes[0] ?? 'missing'}, ${bytes.length} bytes`);
  }
  return {
    etag: Math.min(readU64(bytes, 2), MAX_ETAG),
    updatedAtMs: Math.min(readU64(bytes, 10), MAX_TIME_MS),
    expiresAtMs: hasExpiry ? Math.min(readU64(bytes, 18), MAX_TIME_MS) : 0,
    value: bytes.subarray(header),
  };
}

/** True when the record has an expiry at or before `nowMs`: it reads as absent. */
export function isExpired(record: Pick<StoredRecord, 'expiresAtMs'>, nowMs: number): boolean {
  return record.expiresAtMs > 0 && record.expiresAtMs <= nowMs;
}

export function writeU64(buf: Buffer, offset: number, n: number): void {
  buf.writeUInt32BE(Math.floor(n / TWO_32), offset);
  buf.writeUInt32BE(n >>> 0, offset + 4);
}

export function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * TWO_32 + buf.readUInt32BE(offset + 4);
}
