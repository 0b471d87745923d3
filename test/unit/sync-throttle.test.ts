import { describe, expect, it } from 'vitest';
import { SyncThrottle } from '../../store/index.js';

// The token bucket a throttled sync applies its batches through (store/sync-throttle.ts).
describe('SyncThrottle', () => {
  it('without a rate, never waits', async () => {
    const throttle = new SyncThrottle();
    const started = performance.now();
    for (let i = 0; i < 100; i++) await throttle.take(10 * 1024 * 1024);
    expect(performance.now() - started).toBeLessThan(200);
    expect(throttle.waitedMs).toBeLessThan(50);
  });

  it('keeps bytes taken at or under rate × time + one burst: it starts empty, so 300 kB at 1 MB/s take at least 200 ms', async () => {
    const throttle = new SyncThrottle(1_000_000);
    const started = performance.now();
    for (let i = 0; i < 6; i++) await throttle.take(50_000);
    const ms = performance.now() - started;
    // 300 kB − the 100 kB bucket at most: ≥ 200 ms.
    expect(ms).toBeGreaterThanOrEqual(195);
    expect(throttle.waitedMs).toBeGreaterThan(150);
  });

  it('a take larger than the bucket goes into debt and waits it off', async () => {
    const throttle = new SyncThrottle(2_000_000);
    const started = performance.now();
    await throttle.take(600_000);
    expect(performance.now() - started).toBeGreaterThanOrEqual(295);
  });

  it('a new rate applies at once: removing it wakes a waiting take', async () => {
    const throttle = new SyncThrottle(1000);
    const started = performance.now();
    const waiting = throttle.take(1_000_000); // 1000 s at this rate
    setTimeout(() => throttle.setRate(undefined), 50);
    await waiting;
    expect(performance.now() - started).toBeLessThan(2000);
    expect(throttle.bytesPerSecond).toBeUndefined();
  });

  it('an abort ends a waiting take with the signal\'s reason', async () => {
    const throttle = new SyncThrottle(1000);
    const abort = new AbortController();
    const waiting = throttle.take(1_000_000, abort.signal);
    abort.abort(new Error('sync stopped'));
    await expect(waiting).rejects.toThrow('sync stopped');
  });

  it('refuses a rate that is not a positive number', () => {
    expect(() => new SyncThrottle(0)).toThrow(RangeError);
    expect(() => new SyncThrottle(Number.NaN)).toThrow(RangeError);
  });
});
