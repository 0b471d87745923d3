import { describe, expect, it } from 'vitest';
import { MAX_TIME_MS, RECORD_FORMAT_VERSION, StoreError, decodeRecord, encodeRecord, isExpired, type StoredRecord } from '../../store/index.js';
import { encodedRecordLength, readU64, writeU64 } from '../../store/record.js';
import { thrownBy } from '../helpers/rejection.js';

function roundTrip(record: StoredRecord): StoredRecord {
  return decodeRecord(encodeRecord(record));
}

describe('encodeRecord / decodeRecord', () => {
  it('round-trips a record without expiry (18-byte header)', () => {
    const record: StoredRecord = { value: Buffer.from('hello'), etag: 7, updatedAtMs: 1_700_000_000_123, expiresAtMs: 0 };
    const bytes = encodeRecord(record);
    expect(bytes.length).toBe(18 + 5);
    expect(bytes[0]).toBe(RECORD_FORMAT_VERSION);
    expect(bytes[1]).toBe(0);
    expect(roundTrip(record)).toEqual(record);
  });

  it('round-trips a record with expiry (26-byte header)', () => {
    const record: StoredRecord = { value: Buffer.from([0, 1, 2, 0xff]), etag: 1, updatedAtMs: 1_700_000_000_000, expiresAtMs: 1_700_000_060_000 };
    const bytes = encodeRecord(record);
    expect(bytes.length).toBe(26 + 4);
    expect(bytes[1]).toBe(1);
    expect(roundTrip(record)).toEqual(record);
  });

  it('round-trips an empty value', () => {
    for (const expiresAtMs of [0, 5]) {
      const record: StoredRecord = { value: Buffer.alloc(0), etag: 3, updatedAtMs: 4, expiresAtMs };
      expect(roundTrip(record)).toEqual(record);
    }
  });

  it.each([0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 40 + 12345, 2 ** 52 + 1, Number.MAX_SAFE_INTEGER])(
    'round-trips etag and times of %d exactly (times past MAX_TIME_MS read clamped)',
    (n) => {
      const record: StoredRecord = { value: Buffer.from('v'), etag: n, updatedAtMs: n, expiresAtMs: n };
      const back = roundTrip(record);
      expect(back.etag).toBe(n);
      expect(back.updatedAtMs).toBe(Math.min(n, MAX_TIME_MS));
      expect(back.expiresAtMs).toBe(Math.min(n, MAX_TIME_MS));
      expect(readU64(encodeRecord(record), 10)).toBe(n);
    },
  );

  it('stores u64 fields big-endian at the documented offsets', () => {
    const bytes = encodeRecord({ value: Buffer.from('x'), etag: 0x0102030405, updatedAtMs: 0x0a0b, expiresAtMs: 0x0c0d });
    expect(bytes.subarray(2, 10).toString('hex')).toBe('0000000102030405');
    expect(bytes.subarray(10, 18).toString('hex')).toBe('0000000000000a0b');
    expect(bytes.subarray(18, 26).toString('hex')).toBe('0000000000000c0d');
    expect(bytes.subarray(26).toString()).toBe('x');
    const big = Buffer.alloc(8);
    writeU64(big, 0, Number.MAX_SAFE_INTEGER);
    expect(big.toString('hex')).toBe('001fffffffffffff');
    expect(readU64(big, 0)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('decodes the value as a view into the input, not a copy', () => {
    const bytes = encodeRecord({ value: Buffer.from('abc'), etag: 1, updatedAtMs: 1, expiresAtMs: 0 });
    const decoded = decodeRecord(bytes);
    bytes[bytes.length - 1] = 0x7a;
    expect(decoded.value.toString()).toBe('abz');
  });

  it.each([0, 2, 0xff])('rejects format version byte %d with STORE_INTERNAL', (version) => {
    const bytes = encodeRecord({ value: Buffer.from('v'), etag: 1, updatedAtMs: 1, expiresAtMs: 0 });
    bytes[0] = version;
    const caught = thrownBy(() => decodeRecord(bytes), StoreError);
    expect(caught.code).toBe('STORE_INTERNAL');
    expect(caught.message).toBe(`unreadable record: format version ${version}, 19 bytes`);
  });

  it('rejects input shorter than the header with STORE_INTERNAL', () => {
    expect(() => decodeRecord(Buffer.alloc(0))).toThrow('unreadable record: format version missing, 0 bytes');
    expect(() => decodeRecord(Buffer.from([1, 0, 0]))).toThrow('unreadable record: format version 1, 3 bytes');
    expect(() => decodeRecord(Buffer.alloc(17, 1))).toThrow(StoreError);
  });

  // Regression: the length check once ignored the 8 expiry bytes, so a truncated record with the
  // expiry flag threw a raw RangeError instead of StoreError STORE_INTERNAL.
  it('rejects a truncated record whose expiry flag is set with STORE_INTERNAL', () => {
    const full = encodeRecord({ value: Buffer.alloc(0), etag: 1, updatedAtMs: 1, expiresAtMs: 99 });
    const truncated = full.subarray(0, 20);
    const caught = thrownBy(() => decodeRecord(truncated), StoreError);
    expect(caught.code).toBe('STORE_INTERNAL');
  });
});

describe('encodedRecordLength', () => {
  it.each<[string, StoredRecord]>([
    ['empty value, no expiry', { value: Buffer.alloc(0), etag: 1, updatedAtMs: 1, expiresAtMs: 0 }],
    ['empty value, expiry', { value: Buffer.alloc(0), etag: 1, updatedAtMs: 1, expiresAtMs: 1 }],
    ['small value, no expiry', { value: Buffer.from('abc'), etag: 2, updatedAtMs: 3, expiresAtMs: 0 }],
    ['large value, expiry', { value: Buffer.alloc(100_000, 7), etag: Number.MAX_SAFE_INTEGER, updatedAtMs: 3, expiresAtMs: 2 ** 45 }],
  ])('equals encodeRecord(...).length: %s', (_label, record) => {
    expect(encodedRecordLength(record)).toBe(encodeRecord(record).length);
  });
});

describe('isExpired', () => {
  it('0 never expires', () => {
    expect(isExpired({ expiresAtMs: 0 }, 0)).toBe(false);
    expect(isExpired({ expiresAtMs: 0 }, Number.MAX_SAFE_INTEGER)).toBe(false);
  });

  it('expires at (not after) the expiry time', () => {
    expect(isExpired({ expiresAtMs: 1000 }, 999)).toBe(false);
    expect(isExpired({ expiresAtMs: 1000 }, 1000)).toBe(true);
    expect(isExpired({ expiresAtMs: 1000 }, 1001)).toBe(true);
  });

  it('works on a decoded record', () => {
    const record = roundTrip({ value: Buffer.from('v'), etag: 1, updatedAtMs: 10, expiresAtMs: 20 });
    expect(isExpired(record, 19)).toBe(false);
    expect(isExpired(record, 20)).toBe(true);
  });
});
