import { GatewayError } from './gateway-errors.js';

/** Options of a RequestLimiter. */
export interface RequestLimiterOptions {
  /** Calls running at once (a stream counts as one for its whole life). Default 256. */
  maxInFlight?: number;
  /** Calls waiting for a slot beyond those; more are refused with GATEWAY_OVERLOADED. Default 1024. */
  maxWaiting?: number;
}

/**
 * Bounds the gateway's calls in flight, so a burst of callers queues (briefly) instead of fanning
 * out unbounded work to the store; past the queue, callers are told to back off.
 */
export class RequestLimiter {
  readonly maxInFlight: number;
  readonly maxWaiting: number;
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(options: RequestLimiterOptions = {}) {
    this.maxInFlight = options.maxInFlight ?? 256;
    this.maxWaiting = options.maxWaiting ?? 1024;
    if (!Number.isInteger(this.maxInFlight) || this.maxInFlight < 1 || this.maxInFlight > 100_000) throw new RangeError(`maxInFlight must be 1–100000, got ${this.maxInFlight}`);
    if (!Number.isInteger(this.maxWaiting) || this.maxWaiting < 0 || this.maxWaiting > 1_000_000) throw new RangeError(`maxWaiting must be 0–1000000, got ${this.maxWaiting}`);
  }

  /** Calls running now. */
  get inFlight(): number {
    return this.running;
  }

  /** Runs `fn` in a slot, waiting for one if needed. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    // A free slot runs `fn` at once, without the extra turns of an awaited acquire.
    if (this.running < this.maxInFlight) {
      this.running++;
      return this.guarded(fn);
    }
    return this.acquire().then(() => this.guarded(fn));
  }

  private guarded<T>(fn: () => Promise<T>): Promise<T> {
    let result: Promise<T>;
    try {
      result = fn();
    } catch (err) {
      this.release();
      return Promise.reject(err);
    }
    // Not `finally`: it makes two more promises per call (one for the callback's result, one to pass the outcome on).
    return result.then(
      (value) => {
        this.release();
        return value;
      },
      (err: unknown) => {
        this.release();
        throw err;
      },
    );
  }

  /** Calls waiting for a slot now. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Takes a slot; pair with release(). */
  acquire(): Promise<void> {
    if (this.running < this.maxInFlight) {
      this.running++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxWaiting) {
      return Promise.reject(new GatewayError('GATEWAY_OVERLOADED', `the gateway has ${this.running} calls in flight and ${this.waiting.length} waiting (--max-in-flight ${this.maxInFlight}); retry after a short pause`));
    }
    return new Promise((resolve) => this.waiting.push(() => resolve()));
  }

  release(): void {
    const next = this.waiting.shift();
    // The slot passes straight to the next waiter: `running` stays the same.
    if (next !== undefined) next();
    else this.running--;
  }
}
