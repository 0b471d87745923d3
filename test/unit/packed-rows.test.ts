import { describe, expect, it } from 'vitest';
import { BatchBufferPool } from '../../common/index.js';
import { MAX_KEPT_ETAG, MAX_TIME_MS, PACKED_ROWS_FORMAT, PackedRows, PackedRowsBuilder, StoreError, checkPackedRows, checkRequest, checkedPackedRows, requestDescOf, type BulkRowInput } from '../../store/index.js';
import { BulkInsertRequest } from '../../store/proto/gen/shardpipe/store/v1/store.js';
import { thrownBy } from '../helpers/rejection.js';

const ctx = { maxKeyBytes: 16, maxValueBytes: 100 };
const refusal = (fn: () => void): StoreError => thrownBy(fn, StoreError);

function rowsOf(n: number, withMeta = false): BulkRowInput[] {
  return Array.from({ length: n }, (_, i) => ({
    key: Buffer.from(`k${String(i).padStart(4, '0')}`),
    value: Buffer.alloc(i % 7, i),
    ...(withMeta ? { etag: i * 3, updatedAtMs: 1_700_000_000_000 + i, expiresAtMs: i % 2 === 0 ? 0 : MAX_TIME_MS } : {}),
  }));
}

function expectRows(packed: PackedRows, rows: readonly BulkRowInput[]): void {
  expect(packed.count).toBe(rows.length);
  expect(packed.bytes).toBe(rows.reduce((n, r) => n + r.key.length + r.value.length, 0));
  for (let i = 0; i < rows.length; i++) {
    expect(packed.key(i).equals(rows[i]!.key)).toBe(true);
    expect(packed.value(i).equals(rows[i]!.value)).toBe(true);
  }
}

describe('PackedRows', () => {
  it('round-trips rows without metadata through the builder, the wire message and back', () => {
    const rows = rowsOf(100);
    const builder = new PackedRowsBuilder({ rowsHint: 3, bytesHint: 5 });
    for (const r of rows) builder.add(r.key, r.value);
    expect(builder.count).toBe(100);
    const packed = builder.finish();
    expect(builder.count).toBe(0);
    expect(builder.bytes).toBe(0);
    expectRows(packed, rows);
    expect(packed.hasMeta).toBe(false);
    expect(packed.meta(5)).toBeUndefined();

    const wire = BulkInsertRequest.decode(BulkInsertRequest.encode({ mapVersion: 1, rows: [], packed: packed.toMessage() }).finish());
    expect(wire.packed!.format).toBe(PACKED_ROWS_FORMAT);
    expect(wire.packed!.meta.length).toBe(0);
    const back = PackedRows.fromMessage(wire.packed!);
    expectRows(back, rows);
    expect(back.toRows().map((r) => r.key.toString())).toEqual(rows.map((r) => r.key.toString()));
  });

  it('keeps metadata, filling zeros for rows added before the first row with some', () => {
    const builder = new PackedRowsBuilder();
    builder.add(Buffer.from('a'), Buffer.from('1'));
    builder.add(Buffer.from('b'), Buffer.from('2'), { etag: 2 ** 52, updatedAtMs: 5, expiresAtMs: MAX_TIME_MS });
    builder.add(Buffer.from('c'), Buffer.from('3'));
    const packed = builder.finish();
    expect(packed.meta(0)).toEqual({ etag: 0, updatedAtMs: 0, expiresAtMs: 0 });
    expect(packed.meta(1)).toEqual({ etag: 2 ** 52, updatedAtMs: 5, expiresAtMs: MAX_TIME_MS });
    expect(packed.meta(2)).toEqual({ etag: 0, updatedAtMs: 0, expiresAtMs: 0 });
    expect(packed.toMessage().meta.length).toBe(3 * 24);
    const back = PackedRows.fromMessage(BulkInsertRequest.decode(BulkInsertRequest.encode({ mapVersion: 1, rows: [], packed: packed.toMessage() }).finish()).packed!);
    expect(back.meta(1)).toEqual(packed.meta(1));
  });

  it('fromRows packs metadata only when a row has some', () => {
    expect(PackedRows.fromRows(rowsOf(10)).hasMeta).toBe(false);
    const rows = rowsOf(10, true);
    const packed = PackedRows.fromRows(rows);
    expectRows(packed, rows);
    for (let i = 0; i < rows.length; i++) expect(packed.meta(i)).toEqual({ etag: rows[i]!.etag, updatedAtMs: rows[i]!.updatedAtMs, expiresAtMs: rows[i]!.expiresAtMs });
    expect(PackedRows.fromRows([]).count).toBe(0);
  });

  it('slices are views of the same bytes, nest, and are prefixes of the wire buffers', () => {
    const rows = rowsOf(50, true);
    const packed = PackedRows.fromRows(rows);
    const whole = packed.toMessage();
    const head = packed.slice(0, 20);
    const mid = packed.slice(20, 45);
    const inner = mid.slice(5, 10);
    expectRows(head, rows.slice(0, 20));
    expectRows(mid, rows.slice(20, 45));
    expectRows(inner, rows.slice(25, 30));
    expect(inner.meta(0)).toEqual(packed.meta(25));
    // A prefix of rows is a prefix of every buffer.
    const h = head.toMessage();
    expect(whole.lengths.subarray(0, h.lengths.length).equals(h.lengths)).toBe(true);
    expect(whole.data.subarray(0, h.data.length).equals(h.data)).toBe(true);
    expect(whole.meta.subarray(0, h.meta.length).equals(h.meta)).toBe(true);
    // No copy: the slice's data shares memory with the batch.
    expect(mid.key(0).buffer).toBe(packed.key(0).buffer);
    expect(packed.slice(0, packed.count)).toBe(packed);
    expect(packed.slice(60, 70).count).toBe(0);
    expect(() => head.key(20)).toThrow(RangeError);
  });

  it('addSpan copies rows out of a shared buffer (short keys by loop, long values natively), interleaved with add and metadata rows', () => {
    const source = Buffer.concat([Buffer.from('xxkey-a'), Buffer.alloc(100, 5), Buffer.from('key-b'), Buffer.from('v')]);
    const builder = new PackedRowsBuilder({ rowsHint: 1, bytesHint: 8 });
    builder.addSpan(source, 2, 5, 7, 100);
    builder.add(Buffer.from('key-m'), Buffer.from('mv'), { etag: 9 });
    builder.addSpan(source, 107, 5, 112, 1);
    builder.addSpan(source, 107, 5, 0, 0);
    const rows = PackedRows.fromMessage(builder.finish().toMessage());
    expect(rows.count).toBe(4);
    expect([0, 1, 2, 3].map((i) => [rows.key(i).toString(), rows.value(i).toString('hex')])).toEqual([
      ['key-a', Buffer.alloc(100, 5).toString('hex')],
      ['key-m', Buffer.from('mv').toString('hex')],
      ['key-b', Buffer.from('v').toString('hex')],
      ['key-b', ''],
    ]);
    // A span row after the first row with metadata has zeros (unset), the metadata row keeps its own.
    expect([0, 1, 2, 3].map((i) => rows.metaField(i, 0))).toEqual([0, 9, 0, 0]);
  });

  it('with a pool, builds in pooled buffers: an outgrown one goes back, the finished batch keeps its rows until given back', () => {
    const pool = new BatchBufferPool();
    const builder = new PackedRowsBuilder({ rowsHint: 2, bytesHint: 16, pool });
    const want = rowsOf(40);
    for (const row of want) builder.add(row.key, row.value);
    // 16 bytes, then 32, 64, 128, 256: each outgrown buffer was given back (the pool keeps 8).
    expect(pool.freeCount).toBeGreaterThan(0);
    const rows = builder.finish();
    expect(rows.toRows().map((r) => [r.key.toString(), r.value.toString('hex')])).toEqual(want.map((r) => [r.key.toString(), r.value.toString('hex')]));
    const data = rows.toMessage().data;
    const before = pool.freeCount;
    pool.give(data);
    expect(pool.freeCount).toBe(before + 1);
    // Taken again by a later batch of the same size: the same memory.
    expect(pool.take(data.byteLength).buffer).toBe(data.buffer);
  });

  it('metaField reads the u64s of the wire bytes, in slices cut before and after the first read too, beyond 2^53 as a rounded number', () => {
    const rows = rowsOf(40, true);
    rows[7]!.etag = MAX_KEPT_ETAG;
    rows[9]!.updatedAtMs = 2 ** 40 + 12345;
    const message = PackedRows.fromRows(rows).toMessage();
    const meta = Buffer.from(message.meta);
    meta.writeBigUInt64LE(2n ** 64n - 3n, 11 * 24 + 16);
    const expected = (i: number, f: number): number => Number(meta.readBigUInt64LE(i * 24 + f * 8));
    const check = (packed: PackedRows, from: number): void => {
      for (let i = 0; i < packed.count; i++) for (const f of [0, 1, 2] as const) expect(packed.metaField(i, f)).toBe(expected(from + i, f));
    };
    const fresh = PackedRows.fromMessage({ ...message, meta });
    const before = fresh.slice(5, 30);
    check(before, 5);
    check(before.slice(2, 10), 7);
    check(fresh, 0);
    const after = fresh.slice(9, 20);
    check(after, 9);
    check(after.slice(1, 4), 10);
    expect(fresh.metaField(11, 2)).toBe(2 ** 64);
    const etags = rows.map((r) => r.etag!);
    expect(fresh.etagUpperBound()).toBe(Math.max(...etags));
    expect(after.etagUpperBound()).toBeGreaterThanOrEqual(Math.max(...etags.slice(9, 20)));
    expect(PackedRows.fromMessage({ ...message, meta }).slice(20, 30).etagUpperBound()).toBe(Math.max(...etags.slice(20, 30)));
    const none = PackedRows.fromRows(rowsOf(3));
    expect([none.metaField(0, 0), none.slice(1).metaField(1, 2), none.etagUpperBound()]).toEqual([0, 0, 0]);
  });

  it('isStrictlySorted agrees with Buffer.compare on neighbours of every length: shared prefixes, one key a prefix of the next, duplicates, a slice', () => {
    const sortedOf = (keys: Buffer[]): boolean => keys.every((k, i) => i === 0 || Buffer.compare(keys[i - 1]!, k) < 0);
    const packedOf = (keys: Buffer[]): PackedRows => PackedRows.fromRows(keys.map((key) => ({ key, value: Buffer.from('v') })));
    let seed = 7;
    const next = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    for (let trial = 0; trial < 400; trial++) {
      const prefix = Buffer.alloc(next(12), 0x6b);
      const keys = Array.from({ length: 2 + next(6) }, () => Buffer.concat([prefix, Buffer.from(Array.from({ length: next(7) }, () => 0x30 + next(3)))]));
      if (keys.some((k) => k.length === 0)) continue;
      if (trial % 2 === 0) keys.sort(Buffer.compare);
      expect(packedOf(keys).isStrictlySorted()).toBe(sortedOf(keys));
    }
    const shared = Array.from({ length: 9 }, (_, i) => Buffer.from(`k${String(i).padStart(15, '0')}`));
    expect(packedOf(shared).isStrictlySorted()).toBe(true);
    expect(packedOf([shared[0]!, shared[0]!.subarray(0, 12), shared[1]!]).isStrictlySorted()).toBe(false);
    expect(packedOf([shared[0]!.subarray(0, 12), shared[0]!, shared[1]!]).isStrictlySorted()).toBe(true);
    expect(packedOf([shared[3]!, shared[3]!]).isStrictlySorted()).toBe(false);
    expect(packedOf([shared[4]!, shared[2]!, shared[5]!]).slice(1).isStrictlySorted()).toBe(true);
  });

  it('refuses a message whose parts do not fit together, naming the field', () => {
    const good = PackedRows.fromRows(rowsOf(4)).toMessage();
    expect(refusal(() => PackedRows.fromMessage({ ...good, format: 2 }, 'BulkInsertRequest.packed')).message).toMatch(/^BulkInsertRequest\.packed\.format is 2, a packed batch format this node does not know/);
    expect(refusal(() => PackedRows.fromMessage({ ...good, format: 0 })).code).toBe('STORE_INVALID_ARGUMENT');
    expect(refusal(() => PackedRows.fromMessage({ ...good, count: 5 })).message).toMatch(/^PackedRows\.lengths is 32 bytes, but count 5 needs 40/);
    expect(refusal(() => PackedRows.fromMessage({ ...good, meta: Buffer.alloc(24) })).message).toMatch(/^PackedRows\.meta is 24 bytes, but must be empty or 96/);
    expect(refusal(() => PackedRows.fromMessage({ ...good, data: good.data.subarray(1) })).message).toMatch(/^PackedRows\.data is \d+ bytes, but the lengths of its 4 rows add up to \d+/);
  });
});

describe('checkPackedRows', () => {
  const one = (key: Buffer, value: Buffer, meta?: Parameters<PackedRowsBuilder['add']>[2]): PackedRows => {
    const b = new PackedRowsBuilder();
    b.add(Buffer.from('ok'), Buffer.from('v'));
    b.add(key, value, meta);
    return b.finish();
  };

  it('accepts rows at the edges of every range', () => {
    checkPackedRows(one(Buffer.alloc(16, 1), Buffer.alloc(100), { etag: MAX_KEPT_ETAG, updatedAtMs: MAX_TIME_MS, expiresAtMs: MAX_TIME_MS }), ctx);
  });

  it('names the row and field, with the per-row form codes', () => {
    let err = refusal(() => checkPackedRows(one(Buffer.alloc(0), Buffer.from('v')), ctx));
    expect(err.code).toBe('STORE_INVALID_KEY');
    expect(err.message).toBe('BulkInsertRequest.packed[1].key: key is empty: keys must be 1 or more bytes');
    err = refusal(() => checkPackedRows(one(Buffer.alloc(17), Buffer.from('v')), ctx));
    expect(err.message).toBe('BulkInsertRequest.packed[1].key: key is 17 bytes, over the limit of 16 bytes');
    err = refusal(() => checkPackedRows(one(Buffer.from('k'), Buffer.alloc(101)), ctx));
    expect(err.code).toBe('STORE_VALUE_TOO_LARGE');
    expect(err.message).toBe('BulkInsertRequest.packed[1].value: value is 101 bytes, over the limit of 100 bytes');
    err = refusal(() => checkPackedRows(one(Buffer.from('k'), Buffer.from('v'), { etag: MAX_KEPT_ETAG + 1 }), ctx));
    expect(err.code).toBe('STORE_INVALID_ARGUMENT');
    expect(err.message).toMatch(/^BulkInsertRequest\.packed\[1\]\.etag is 4503599627370497, out of range: allowed 0–4503599627370496/);
    err = refusal(() => checkPackedRows(one(Buffer.from('k'), Buffer.from('v'), { expiresAtMs: MAX_TIME_MS + 1 }), ctx));
    expect(err.message).toMatch(/^BulkInsertRequest\.packed\[1\]\.expires_at_ms is 253402300800000, out of range/);
  });

  it('marks a batch it passed as checked under its limits, which tighter limits do not trust; a batch it refused or never saw is not marked', () => {
    const fresh = one(Buffer.alloc(16, 1), Buffer.alloc(100), { etag: 5 });
    expect(fresh.checkedWithin(ctx.maxKeyBytes, ctx.maxValueBytes)).toBe(false);
    checkPackedRows(fresh, ctx);
    expect(fresh.checkedWithin(ctx.maxKeyBytes, ctx.maxValueBytes)).toBe(true);
    expect(fresh.checkedWithin(ctx.maxKeyBytes + 1, ctx.maxValueBytes * 2)).toBe(true);
    expect(fresh.checkedWithin(ctx.maxKeyBytes - 1, ctx.maxValueBytes)).toBe(false);
    expect(fresh.checkedWithin(ctx.maxKeyBytes, ctx.maxValueBytes - 1)).toBe(false);
    const plain = one(Buffer.from('k'), Buffer.from('v'));
    checkPackedRows(plain, ctx);
    expect(plain.checkedWithin(ctx.maxKeyBytes, ctx.maxValueBytes)).toBe(true);
    const refused = one(Buffer.from('k'), Buffer.from('v'), { expiresAtMs: MAX_TIME_MS + 1 });
    refusal(() => checkPackedRows(refused, ctx));
    expect(refused.checkedWithin(ctx.maxKeyBytes, ctx.maxValueBytes)).toBe(false);
  });

  it('reports a u64 beyond 2^53 exactly', () => {
    const packed = one(Buffer.from('k'), Buffer.from('v'), { etag: 1 });
    const message = packed.toMessage();
    const meta = Buffer.from(message.meta);
    meta.writeBigUInt64LE(2n ** 64n - 1n, 24 + 8);
    const err = refusal(() => checkPackedRows(PackedRows.fromMessage({ ...message, meta }), ctx));
    expect(err.message).toMatch(/^BulkInsertRequest\.packed\[1\]\.updated_at_ms is 18446744073709551615, out of range/);
  });

  it('checkRequest refuses rows and packed together, and checks packed batches', () => {
    const packed = PackedRows.fromRows(rowsOf(3)).toMessage();
    const both = refusal(() => checkRequest(requestDescOf('BulkInsert'), { mapVersion: 1, rows: [{ key: Buffer.from('a'), value: Buffer.alloc(0) }], packed }, ctx));
    expect(both.code).toBe('STORE_INVALID_ARGUMENT');
    expect(both.message).toMatch(/^BulkInsertRequest\.rows \(1 rows\) and BulkInsertRequest\.packed are both set/);
    checkRequest(requestDescOf('BulkInsert'), { mapVersion: 1, rows: [], packed }, ctx);
    const bad = refusal(() => checkRequest(requestDescOf('BulkInsert'), { mapVersion: 1, rows: [], packed: { ...packed, format: 9 } }, ctx));
    expect(bad.message).toMatch(/^BulkInsertRequest\.packed\.format is 9/);
    const badKey = PackedRows.fromRows([{ key: Buffer.alloc(20), value: Buffer.alloc(0) }]).toMessage();
    expect(refusal(() => checkRequest(requestDescOf('BulkInsert'), { mapVersion: 1, rows: [], packed: badKey }, ctx)).message).toMatch(/^BulkInsertRequest\.packed\[0\]\.key: key is 20 bytes/);
    expect(checkedPackedRows(badKey)).toBeUndefined();
  });

  it('checkRequest hands the batch it decoded and checked to the handler, for that very message only', () => {
    const rows = rowsOf(5, true);
    const packed = PackedRows.fromRows(rows).toMessage();
    expect(checkedPackedRows(packed)).toBeUndefined();
    checkRequest(requestDescOf('BulkInsert'), { mapVersion: 1, rows: [], packed }, ctx);
    const batch = checkedPackedRows(packed)!;
    expectRows(batch, rows);
    expect(batch.checkedWithin(ctx.maxKeyBytes, ctx.maxValueBytes)).toBe(true);
    expect(batch.metaField(3, 1)).toBe(rows[3]!.updatedAtMs);
    expect(checkedPackedRows({ ...packed })).toBeUndefined();
  });
});
