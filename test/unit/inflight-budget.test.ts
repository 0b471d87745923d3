import { describe, expect, it } from 'vitest';
import { InflightBudget } from '../../store/index.js';
import { requestBytes } from '../../store/budget-interceptor.js';

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
});
