import { describe, expect, it } from 'vitest';
import { InflightBudget } from '../../store/index.js';
import { BULK_PACKED_COPIES_HELD, BULK_ROWS_COPIES_HELD, REQUEST_COPIES_HELD, copiesHeld, requestBytes } from '../../store/budget-interceptor.js';

describe('InflightBudget', () => {
  it('grants while there is room, queues first come first served, and serves waiters as room is given back', async () => {
    const budget = new InflightBudget({ limitBytes: 100, maxWaitMs: 10_000 });
    const a = (await budget.acquire(60))!;
    expect(budget.usedBytes).toBe(60);
    const big = budget.acquire(80);
    const small = budget.acquire(10);
    // The small one would fit, but waits behind the big one so a large request is not starved.
    expect(budget.waitingBytes).toBe(90);
    a.shrink(20);
    const bigLease = (await big)!;
    expect(bigLease.bytes).toBe(80);
    expect(budget.usedBytes).toBe(100);
    expect(budget.waitingBytes).toBe(10);
    a.release();
    a.release();
    const smallLease = (await small)!;
    expect(smallLease.bytes).toBe(10);
    expect(budget.usedBytes).toBe(90);
    bigLease.release();
    smallLease.release();
    expect(budget.usedBytes).toBe(0);
  });

  it('refuses after the wait, on abort, and at once with waitMs 0; a request over the limit waits for all of it', async () => {
    const budget = new InflightBudget({ limitBytes: 100, maxWaitMs: 20 });
    const held = (await budget.acquire(100))!;
    expect(await budget.acquire(1)).toBeUndefined();
    expect(await budget.acquire(1, { waitMs: 0 })).toBeUndefined();
    const abort = new AbortController();
    const aborted = budget.acquire(1, { waitMs: 10_000, signal: abort.signal });
    abort.abort();
    expect(await aborted).toBeUndefined();
    expect(budget.waitingBytes).toBe(0);
    const huge = budget.acquire(1_000, { waitMs: 10_000 });
    held.release();
    const lease = (await huge)!;
    expect(lease.bytes).toBe(100);
    lease.release();
    expect(() => new InflightBudget({ limitBytes: 0 })).toThrow(RangeError);
  });
});

describe('requestBytes (what a decoded request holds against the budget)', () => {
  it('counts the values of the puts inside a Multi, not only its top-level fields', () => {
    const value = Buffer.alloc(100_000);
    const ops = Array.from({ length: 10 }, (_, i) => ({ put: { mapVersion: 1, key: Buffer.from(`k${i}`), value, ttlMs: 0 } }));
    expect(requestBytes({ ops })).toBeGreaterThanOrEqual(10 * value.length);
    expect(requestBytes({ mapVersion: 1, rows: [{ key: Buffer.from('k'), value }] })).toBeGreaterThanOrEqual(value.length);
  });

  it('a waiter holds what it buffers while it waits: counted in the limit, refused at once beyond the wait room, part of its lease once granted', async () => {
    const budget = new InflightBudget({ limitBytes: 100, maxWaitMs: 10_000, waitRoomBytes: 40 });
    const a = budget.tryAcquire(50)!;
    const first = budget.acquire(60, { holdBytes: 30 });
    expect(budget.waitHeldBytes).toBe(30);
    // 30 + 20 would pass the wait room (40): refused without waiting.
    expect(await budget.acquire(60, { holdBytes: 20 })).toBeUndefined();
    // A plain acquire that fits the limit still may not jump the queue; one with no room in the limit is refused.
    expect(budget.tryAcquire(10)).toBeUndefined();
    expect(budget.waitHeldBytes).toBe(30);
    // 50 used + 30 held: the head needs 60, of which its 30 are already held, so 50 + 60 > 100 waits …
    a.shrink(40);
    // … and 40 + 60 ≤ 100 is granted, its hold turned into lease.
    const lease = (await first)!;
    expect(lease.bytes).toBe(60);
    expect(budget.waitHeldBytes).toBe(0);
    expect(budget.usedBytes).toBe(100);
    lease.release();
    a.release();
    expect(budget.usedBytes).toBe(0);
  });

  it('a waiter that gives up returns what it held', async () => {
    const budget = new InflightBudget({ limitBytes: 100, maxWaitMs: 5 });
    const a = budget.tryAcquire(90)!;
    expect(await budget.acquire(50, { holdBytes: 10 })).toBeUndefined();
    expect(budget.waitHeldBytes).toBe(0);
    // Held bytes count against the limit: with 90 used, a waiter may not hold 20.
    expect(await budget.acquire(50, { holdBytes: 20, waitMs: 1000 })).toBeUndefined();
    a.release();
  });

  it('charges a packed BulkInsert fewer copies than the per-row form (its rows are views of the message); other methods REQUEST_COPIES_HELD', () => {
    const packed = { mapVersion: 1, rows: [], packed: { format: 1, count: 1, lengths: Buffer.alloc(8), data: Buffer.alloc(10), meta: Buffer.alloc(24) } };
    const rows = { mapVersion: 1, rows: [{ key: Buffer.alloc(1), value: Buffer.alloc(10) }] };
    expect(copiesHeld('BulkInsert', packed)).toBe(BULK_PACKED_COPIES_HELD);
    expect(copiesHeld('BulkInsert', rows)).toBe(BULK_ROWS_COPIES_HELD);
    expect(BULK_PACKED_COPIES_HELD).toBeLessThan(BULK_ROWS_COPIES_HELD);
    expect(copiesHeld('Multi', { ops: [] })).toBe(REQUEST_COPIES_HELD);
  });
});
