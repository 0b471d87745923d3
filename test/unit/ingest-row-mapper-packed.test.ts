import { Binary, Dictionary, Int32, Int64, LargeUtf8, Table, Utf8, vectorFromArray, type DataType, type RecordBatch, type Vector } from 'apache-arrow';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createRowMapper, type MappedBatch, type PackedMappedBatch, type RowMapperOptions } from '../../ingest/index.js';

// mapBatchPacked must give exactly mapBatch's rows and rejects, on the direct path (Utf8/Binary
// columns copied straight from Arrow) and on the per-row path it falls back to for other types.

const where = { file: '/drop/part-0.parquet', rowGroup: 3, rowOffset: 500 };

function batchOf(columns: Record<string, Vector>): RecordBatch {
  const table = new Table(columns);
  expect(table.batches).toHaveLength(1);
  return table.batches[0]!;
}

/** The packed rows as plain key/value pairs, to compare with mapBatch's. */
function unpacked(packed: PackedMappedBatch): Array<{ key: string; value: string }> {
  return packed.rows.toRows().map((r) => ({ key: r.key.toString('hex'), value: r.value.toString('hex') }));
}

function plain(mapped: MappedBatch): Array<{ key: string; value: string }> {
  return mapped.rows.map((r) => ({ key: r.key.toString('hex'), value: r.value.toString('hex') }));
}

/** Keys below the accepted key before them, counted the obvious way. */
function outOfOrderOf(mapped: MappedBatch, previousKey?: Buffer): number {
  let prev = previousKey;
  let n = 0;
  for (const row of mapped.rows) {
    if (prev !== undefined && Buffer.compare(row.key, prev) < 0) n++;
    prev = row.key;
  }
  return n;
}

function expectSame(batch: RecordBatch, options: RowMapperOptions, previousKey?: Buffer): PackedMappedBatch {
  const mapper = createRowMapper(options);
  const expected = mapper.mapBatch(batch, where);
  const packed = mapper.mapBatchPacked(batch, where, previousKey);
  expect(unpacked(packed)).toEqual(plain(expected));
  expect(packed.rejects).toEqual(expected.rejects);
  expect(packed.rows.count).toBe(expected.rows.length);
  expect(packed.rows.bytes).toBe(expected.rows.reduce((s, r) => s + r.key.length + r.value.length, 0));
  expect(packed.outOfOrder).toBe(outOfOrderOf(expected, previousKey));
  expect(packed.lastKey?.toString('hex')).toBe((expected.rows.at(-1)?.key ?? previousKey)?.toString('hex'));
  return packed;
}

// Short strings over a small alphabet (so keys repeat and fall out of order), sometimes empty,
// sometimes over the limits below, sometimes null.
const cell = fc.option(fc.string({ unit: fc.constantFrom('a', 'b', 'z', 'é', '0'), maxLength: 12 }), { freq: 6 });
const MAX_KEY_BYTES = 8;
const MAX_VALUE_BYTES = 10;

describe('RowMapper.mapBatchPacked', () => {
  it('gives mapBatch rows and rejects (nulls, empty and over-long keys, over-large values) for Utf8 columns on the direct path', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(cell, cell), { minLength: 1, maxLength: 60 }), fc.option(fc.string({ maxLength: 4 })), (rows, prev) => {
        const batch = batchOf({ k: vectorFromArray(rows.map((r) => r[0]), new Utf8()), v: vectorFromArray(rows.map((r) => r[1]), new Utf8()) });
        expectSame(batch, { keyColumn: 'k', valueColumn: 'v', maxKeyBytes: MAX_KEY_BYTES, maxValueBytes: MAX_VALUE_BYTES }, prev === null ? undefined : Buffer.from(prev));
      }),
      { numRuns: 300 },
    );
  });

  it('gives mapBatch rows and rejects for Binary columns, and for a batch sliced at a resume offset', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.option(fc.uint8Array({ maxLength: 12 }), { freq: 6 }), fc.option(fc.uint8Array({ maxLength: 14 }), { freq: 6 })), { minLength: 2, maxLength: 40 }), fc.nat(), (rows, cut) => {
        const batch = batchOf({ k: vectorFromArray(rows.map((r) => r[0]), new Binary()), v: vectorFromArray(rows.map((r) => r[1]), new Binary()) });
        expectSame(batch, { keyColumn: 'k', valueColumn: 'v', maxKeyBytes: MAX_KEY_BYTES, maxValueBytes: MAX_VALUE_BYTES });
        expectSame(batch.slice(cut % rows.length), { keyColumn: 'k', valueColumn: 'v', maxKeyBytes: MAX_KEY_BYTES, maxValueBytes: MAX_VALUE_BYTES });
      }),
      { numRuns: 200 },
    );
  });

  it('copies values over 32 bytes (a native copy, not the byte loop) into their rows: same rows as mapBatch with rejects (nulls, over-large values) between them, also sliced', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.option(fc.uint8Array({ minLength: 1, maxLength: 12 }), { freq: 8 }), fc.option(fc.uint8Array({ maxLength: 120, size: 'max' }), { freq: 8 })), { minLength: 2, maxLength: 60 }),
        fc.nat(),
        (rows, cut) => {
          const batch = batchOf({ k: vectorFromArray(rows.map((r) => r[0]), new Binary()), v: vectorFromArray(rows.map((r) => r[1]), new Binary()) });
          const options = { keyColumn: 'k', valueColumn: 'v', maxKeyBytes: MAX_KEY_BYTES, maxValueBytes: 90 };
          expectSame(batch, options);
          expectSame(batch.slice(cut % rows.length), options);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('counts keys out of order the same for long keys sharing a long prefix (compared natively beyond 64 bytes)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 60, max: 70 }), fc.string({ unit: fc.constantFrom('a', 'b'), maxLength: 3 })), { minLength: 1, maxLength: 40 }), (keys) => {
        const ids = keys.map(([prefix, tail]) => 'p'.repeat(prefix) + tail);
        const batch = batchOf({ k: vectorFromArray(ids, new Utf8()), v: vectorFromArray(ids.map(() => 'v'), new Utf8()) });
        expectSame(batch, { keyColumn: 'k', valueColumn: 'v' }, Buffer.from('p'.repeat(65)));
      }),
      { numRuns: 200 },
    );
  });

  it('falls back to the per-row path with the same results for other key and value types (ints, LargeUtf8, dictionary, JSON documents)', () => {
    const ints = [5, 3, null, 9, 9, 1];
    const texts = ['b', 'a', 'toolongvalue!', null, '', 'c'];
    const cases: Array<{ columns: Record<string, Vector>; options: RowMapperOptions }> = [
      { columns: { k: vectorFromArray(ints, new Int32()), v: vectorFromArray(texts, new Utf8()) }, options: { keyColumn: 'k', valueColumn: 'v', maxValueBytes: MAX_VALUE_BYTES } },
      { columns: { k: vectorFromArray(ints.map((i) => (i === null ? null : BigInt(i))), new Int64()), v: vectorFromArray(texts, new Utf8()) }, options: { keyColumn: 'k' } },
      { columns: { k: vectorFromArray(texts, new LargeUtf8()), v: vectorFromArray(texts, new Utf8()) }, options: { keyColumn: 'k', valueColumn: 'v', maxKeyBytes: MAX_KEY_BYTES } },
      { columns: { k: vectorFromArray(texts, new Dictionary(new Utf8() as DataType, new Int32())), v: vectorFromArray(ints, new Int32()) }, options: { keyColumn: 'k', valueColumn: 'v' } },
    ];
    for (const { columns, options } of cases) {
      const packed = expectSame(batchOf(columns), options);
      expect(packed.rows.count + packed.rejects.length).toBe(6);
    }
  });

  it('names the first key below the key before it, and the one before, as copies', () => {
    const batch = batchOf({ k: vectorFromArray(['m', 'n', 'c', 'd', 'a'], new Utf8()), v: vectorFromArray(['1', '2', '3', '4', '5'], new Utf8()) });
    const packed = createRowMapper({ keyColumn: 'k', valueColumn: 'v' }).mapBatchPacked(batch, where, Buffer.from('p'));
    expect(packed.outOfOrder).toBe(3);
    expect(packed.firstOutOfOrder).toEqual({ key: Buffer.from('m'), previousKey: Buffer.from('p') });
    expect(packed.lastKey).toEqual(Buffer.from('a'));
  });

  it('a batch whose every row is rejected is an empty packed batch with all the rejects, rows named by their index in the row group', () => {
    const batch = batchOf({ k: vectorFromArray([null, '', 'x'.repeat(20)], new Utf8()), v: vectorFromArray(['a', 'b', 'c'], new Utf8()) });
    const packed = createRowMapper({ keyColumn: 'k', valueColumn: 'v', maxKeyBytes: 16 }).mapBatchPacked(batch, where);
    expect(packed.rows.count).toBe(0);
    expect(packed.lastKey).toBeUndefined();
    expect(packed.rejects.map((r) => ({ row: r.row, reason: r.reason, file: r.file, rowGroup: r.rowGroup }))).toEqual([
      { row: 500, reason: 'key column "k" is null', file: where.file, rowGroup: 3 },
      { row: 501, reason: 'key is empty: keys must be 1 or more bytes', file: where.file, rowGroup: 3 },
      { row: 502, reason: 'key is 20 bytes, over the limit of 16 bytes', file: where.file, rowGroup: 3 },
    ]);
  });
});
