import { describe, expect, it } from 'vitest';
import { PackedRowsBuilder, type BulkRowInput } from '../../store/index.js';
import { BatchBufferPool } from '../../common/index.js';
import { decodePackedBulkInsert, encodeBulkInsert, encodeBulkInsertPooled, releaseEncodedBulkInsert } from '../../store/bulk-insert-codec.js';
import { BulkInsertRequest } from '../../store/proto/gen/shardpipe/store/v1/store.js';

/** The client's hand encoder of BulkInsertRequest writes exactly the generated encoder's bytes. */

function generated(request: BulkInsertRequest): Buffer {
  return Buffer.from(BulkInsertRequest.encode(request).finish());
}

/** Deterministic pseudo-random bytes. */
function bytesOf(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out[i] = x & 0xff;
  }
  return out;
}

function packed(count: number, seed: number, withMeta: boolean, valueBytes = 100) {
  const builder = new PackedRowsBuilder();
  for (let i = 0; i < count; i++) {
    const row: BulkRowInput = { key: Buffer.concat([Buffer.from([i >> 8, i & 0xff]), bytesOf(14, seed + i)]), value: bytesOf((valueBytes + i) % 300, seed - i) };
    if (withMeta) Object.assign(row, { etag: i % 2 === 0 ? 0 : 2 ** 40 + i, updatedAtMs: 1_700_000_000_000 + i, expiresAtMs: i % 3 === 0 ? 0 : 1_800_000_000_000 });
    builder.add(row.key, row.value, row);
  }
  return builder.finish();
}

describe('encodeBulkInsert', () => {
  const cases: Array<[string, BulkInsertRequest]> = [
    ['packed, map version 0 (left out)', { mapVersion: 0, rows: [], packed: packed(10, 1, false).toMessage() }],
    ['packed, small map version', { mapVersion: 7, rows: [], packed: packed(1000, 2, false).toMessage() }],
    ['packed with metadata, map version past 2^32', { mapVersion: 2 ** 45 + 3, rows: [], packed: packed(333, 3, true).toMessage() }],
    ['packed, largest safe map version', { mapVersion: Number.MAX_SAFE_INTEGER, rows: [], packed: packed(2, 4, true).toMessage() }],
    ['packed, one row with an empty value', { mapVersion: 1, rows: [], packed: packed(1, 5, false, 0).toMessage() }],
    ['packed, no rows (every part empty)', { mapVersion: 3, rows: [], packed: { format: 1, count: 0, lengths: Buffer.alloc(0), data: Buffer.alloc(0), meta: Buffer.alloc(0) } }],
    ['packed, all defaults (an empty message)', { mapVersion: 0, rows: [], packed: { format: 0, count: 0, lengths: Buffer.alloc(0), data: Buffer.alloc(0), meta: Buffer.alloc(0) } }],
    ['packed, a slice (views into a larger batch)', { mapVersion: 9, rows: [], packed: packed(5000, 6, true).slice(1234, 4321).toMessage() }],
    ['packed, data of 200k+ bytes (3-byte length varints)', { mapVersion: 11, rows: [], packed: packed(2000, 7, false, 250).toMessage() }],
    ['per-row rows', { mapVersion: 5, rows: [{ key: Buffer.from('a'), value: Buffer.from('b'), etag: 3, updatedAtMs: 4, expiresAtMs: 0 }], packed: undefined }],
    ['neither rows nor packed', { mapVersion: 5, rows: [], packed: undefined }],
  ];
  for (const [name, request] of cases) {
    it(`writes the generated encoder's bytes: ${name}`, () => {
      const mine = encodeBulkInsert(request);
      expect(Buffer.isBuffer(mine)).toBe(true);
      expect(mine.equals(generated(request))).toBe(true);
      // And the node's view decoder reads it back to the same message (for packed requests).
      if (request.packed !== undefined && request.rows.length === 0) {
        const back = decodePackedBulkInsert(mine);
        expect(back).toBeDefined();
        expect(back!.mapVersion).toBe(request.mapVersion);
        expect(back!.packed!.count).toBe(request.packed.count);
        expect(Buffer.from(back!.packed!.data).equals(Buffer.from(request.packed.data))).toBe(true);
        expect(Buffer.from(back!.packed!.lengths).equals(Buffer.from(request.packed.lengths))).toBe(true);
        expect(Buffer.from(back!.packed!.meta).equals(Buffer.from(request.packed.meta))).toBe(true);
      }
    });
  }

  it('the packed parts are copied once into one buffer of the exact size (no slack, not a view of them)', () => {
    const rows = packed(1000, 8, true).toMessage();
    const out = encodeBulkInsert({ mapVersion: 2, rows: [], packed: rows });
    expect(out.buffer.byteLength).toBeGreaterThanOrEqual(out.length);
    expect(out.length).toBe(generated({ mapVersion: 2, rows: [], packed: rows }).length);
    expect(out.buffer).not.toBe(rows.data.buffer);
  });

  it('refuses values the wire cannot carry instead of writing other bytes', () => {
    const rows = packed(2, 9, false).toMessage();
    expect(() => encodeBulkInsert({ mapVersion: -1, rows: [], packed: rows })).toThrow(RangeError);
    expect(() => encodeBulkInsert({ mapVersion: 1.5, rows: [], packed: rows })).toThrow(RangeError);
    expect(() => encodeBulkInsert({ mapVersion: 1, rows: [], packed: { ...rows, count: 2 ** 32 } })).toThrow(RangeError);
  });
});

describe('encodeBulkInsert into a pool', () => {
  it('writes the same bytes into a pooled buffer, reused only after the request is released', () => {
    const pool = new BatchBufferPool();
    const first = encodeBulkInsertPooled({ mapVersion: 7, rows: [], packed: packed(1000, 2, false).toMessage() }, pool);
    const a = encodeBulkInsert(first);
    expect(a.equals(generated(first))).toBe(true);
    // Not released: a second request gets memory of its own.
    const second = encodeBulkInsertPooled({ mapVersion: 8, rows: [], packed: packed(1000, 3, false).toMessage() }, pool);
    const b = encodeBulkInsert(second);
    expect(b.buffer).not.toBe(a.buffer);
    expect(b.equals(generated(second))).toBe(true);
    releaseEncodedBulkInsert(first);
    releaseEncodedBulkInsert(first);
    expect(pool.freeCount).toBe(1);
    const third = encodeBulkInsertPooled({ mapVersion: 9, rows: [], packed: packed(1000, 4, false).toMessage() }, pool);
    const c = encodeBulkInsert(third);
    expect(c.buffer).toBe(a.buffer);
    expect(c.equals(generated(third))).toBe(true);
    // Per-row requests go through the generated encoder, nothing taken from the pool.
    const perRow = encodeBulkInsertPooled({ mapVersion: 5, rows: [{ key: Buffer.from('a'), value: Buffer.from('b'), etag: 0, updatedAtMs: 0, expiresAtMs: 0 }], packed: undefined }, pool);
    expect(encodeBulkInsert(perRow).equals(generated(perRow))).toBe(true);
    releaseEncodedBulkInsert(perRow);
    expect(pool.freeCount).toBe(0);
  });
});
