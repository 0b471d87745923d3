import { describe, expect, it } from 'vitest';
import { isAffectedWriter } from '../../files/legacy-chunk-sizes.js';
import { CompactReader, encodeI64, fieldNumber } from '../../files/thrift-compact.js';

describe('thrift compact reader (footer repair)', () => {
  it('reads i64 fields and remembers where their bytes are, so they can be re-encoded', () => {
    for (const value of [0n, 1n, -1n, 63n, -64n, 64n, 300n, 2n ** 40n, -(2n ** 63n), 2n ** 63n - 1n]) {
      // struct { 7: i64 value } : field header (delta 7, type i64 = 6), value, stop
      const bytes = Uint8Array.from([0x76, ...encodeI64(value), 0x00]);
      const struct = new CompactReader(bytes).readStruct();
      const field = struct.fields.get(7)!;
      expect(field.value).toBe(value);
      expect([field.start, field.end]).toEqual([1, bytes.byteLength - 1]);
    }
  });

  it('refuses corrupt input with an error instead of allocating or looping', () => {
    // A list field claiming 2^31 elements in a 6-byte buffer.
    expect(() => new CompactReader(Uint8Array.from([0x19, 0xf5, 0xff, 0xff, 0xff, 0x07])).readStruct()).toThrow(/needs/);
    expect(() => new CompactReader(Uint8Array.from([0x15])).readStruct()).toThrow();
    expect(() => new CompactReader(Uint8Array.from([0x1d])).readStruct()).toThrow(/unknown thrift type/);
    expect(fieldNumber(new CompactReader(Uint8Array.from([0x15, 0x54, 0x00])).readStruct(), 1)).toBe(42);
  });

  it('repairs chunk sizes only for parquet-mr before 1.2.9 (PARQUET-816), as Arrow C++ decides', () => {
    expect(isAffectedWriter('parquet-mr')).toBe(true);
    expect(isAffectedWriter('parquet-mr version 1.2.8 (build abc)')).toBe(true);
    expect(isAffectedWriter('parquet-mr version 1.2.9 (build abc)')).toBe(false);
    expect(isAffectedWriter('parquet-mr version 1.13.0-SNAPSHOT (build abc)')).toBe(false);
    expect(isAffectedWriter('parquet-cpp-arrow version 14.0.0')).toBe(false);
  });
});
