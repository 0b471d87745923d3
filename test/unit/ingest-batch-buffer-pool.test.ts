import { Table, Utf8, vectorFromArray } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { BatchBufferPool } from '../../common/index.js';
import { createRowMapper } from '../../ingest/index.js';

describe('BatchBufferPool', () => {
  it('hands a given-back buffer out again, as a view of the requested size', () => {
    const pool = new BatchBufferPool();
    const a = pool.take(1000);
    expect(a.byteLength).toBe(1000);
    pool.give(a);
    expect(pool.freeCount).toBe(1);
    const b = pool.take(900);
    expect(b.byteLength).toBe(900);
    expect(b.buffer).toBe(a.buffer);
    expect(pool.freeCount).toBe(0);
  });

  it('never hands one allocation out twice: a second give, or a buffer it did not hand out, is ignored', () => {
    const pool = new BatchBufferPool();
    const a = pool.take(1000);
    pool.give(a);
    pool.give(a);
    expect(pool.freeCount).toBe(1);
    pool.give(Buffer.alloc(1000));
    pool.give(Buffer.allocUnsafe(100)); // a slice of Node's shared pool: reusing its whole ArrayBuffer would be corruption
    expect(pool.freeCount).toBe(1);
    const b = pool.take(1000);
    const c = pool.take(1000);
    expect(b.buffer).toBe(a.buffer);
    expect(c.buffer).not.toBe(a.buffer);
  });

  it('does not pin a buffer more than twice the size asked for, keeps at most maxFree, and none over maxBytes', () => {
    const pool = new BatchBufferPool({ maxFree: 2, maxBytes: 10_000 });
    const big = pool.take(5000);
    pool.give(big);
    expect(pool.take(2000).buffer).not.toBe(big.buffer);
    expect(pool.take(2500).buffer).toBe(big.buffer);
    const three = [pool.take(100), pool.take(100), pool.take(100)];
    for (const b of three) pool.give(b);
    expect(pool.freeCount).toBe(2);
    const huge = pool.take(20_000);
    pool.give(huge);
    expect(pool.freeCount).toBe(2);
    expect(() => pool.take(-1)).toThrow(RangeError);
    expect(() => new BatchBufferPool({ maxFree: -1 })).toThrow(RangeError);
  });
});

describe('RowMapper.mapBatchPacked with a pool', () => {
  const batch = new Table({
    k: vectorFromArray(Array.from({ length: 300 }, (_, i) => `key-${String(i).padStart(4, '0')}`), new Utf8()),
    v: vectorFromArray(Array.from({ length: 300 }, (_, i) => (i === 7 ? null : `value-${i}`.repeat(1 + (i % 5)))), new Utf8()),
  }).batches[0]!;
  const where = { file: 'f.parquet', rowGroup: 0 };

  it('gives the same rows and rejects as without one, and release hands its buffer back once', () => {
    const mapper = createRowMapper({ keyColumn: 'k', valueColumn: 'v' });
    const pool = new BatchBufferPool();
    const plain = mapper.mapBatchPacked(batch, where);
    const pooled = mapper.mapBatchPacked(batch, where, undefined, pool);
    expect(pooled.rows.toRows()).toEqual(plain.rows.toRows());
    expect(pooled.rejects).toEqual(plain.rejects);
    expect(pooled.lastKey).toEqual(plain.lastKey);
    expect(pool.freeCount).toBe(0);
    pooled.release();
    pooled.release();
    expect(pool.freeCount).toBe(1);
    plain.release(); // unpooled: nothing to give back
    expect(pool.freeCount).toBe(1);
    // The next batch is built in the same memory, and is right.
    const again = mapper.mapBatchPacked(batch, where, undefined, pool);
    expect(pool.freeCount).toBe(0);
    expect(again.rows.toRows()).toEqual(plain.rows.toRows());
  });
});
