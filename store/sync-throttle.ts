import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A token bucket over the bytes a sync applies: `take(n)` returns once the copy may apply n more
 * bytes at the current rate. The bucket starts empty and holds at most `burstMs` worth of the rate,
 * so over any stretch the bytes applied stay at or under rate × time + one burst; a take larger
 * than the bucket goes into debt and waits it off. No rate (undefined) = unthrottled. The rate can
 * change at any time (an operation's `throttle/P/NODE` in etcd changed); a waiting take is woken
 * to wait by the new rate.
 */
export class SyncThrottle {
  private rate: number | undefined;
  private readonly burstMs: number;
  private tokens = 0;
  private refilledAt = performance.now();
  private wake: (() => void) | undefined;
  /** Time spent waiting in take, ms (for the report and the tests). */
  waitedMs = 0;

  /** `bytesPerSecond`: the starting rate (undefined = unthrottled). `burstMs`: how much of the rate the bucket holds. Default 100 ms. */
  constructor(bytesPerSecond?: number, burstMs = 100) {
    this.burstMs = burstMs;
    this.setRate(bytesPerSecond);
  }

  get bytesPerSecond(): number | undefined {
    return this.rate;
  }

  setRate(bytesPerSecond: number | undefined): void {
    if (bytesPerSecond !== undefined && !(Number.isFinite(bytesPerSecond) && bytesPerSecond > 0)) throw new RangeError(`maxBytesPerSecond must be > 0, got ${bytesPerSecond}`);
    this.refill();
    this.rate = bytesPerSecond;
    this.wake?.();
  }

  /** Waits until `bytes` more may be applied. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    this.refill();
    if (this.rate === undefined) return;
    this.tokens -= bytes;
    const started = performance.now();
    try {
      while (this.rate !== undefined && this.tokens < 0) {
        const waitMs = Math.ceil((-this.tokens / this.rate) * 1000);
        const woken = new Promise<void>((resolve) => (this.wake = resolve));
        const timer = new AbortController();
        await Promise.race([sleep(waitMs, undefined, { signal: signal === undefined ? timer.signal : AbortSignal.any([signal, timer.signal]) }), woken]).finally(() => timer.abort());
        signal?.throwIfAborted();
        this.refill();
      }
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if ((err as { name?: string }).name !== 'AbortError') throw err;
    } finally {
      this.wake = undefined;
      this.waitedMs += performance.now() - started;
    }
    if (this.rate === undefined) this.tokens = 0;
  }

  private refill(): void {
    const now = performance.now();
    if (this.rate !== undefined) this.tokens = Math.min((this.rate * this.burstMs) / 1000, this.tokens + ((now - this.refilledAt) * this.rate) / 1000);
    this.refilledAt = now;
  }
}
