/** Options of an InflightBudget. */
export interface InflightBudgetOptions {
  /** Bytes that may be held at once. Required, ≥ 1. */
  limitBytes: number;
  /** Longest a caller waits for room before it is refused. Default 2000 ms. */
  maxWaitMs?: number;
}

/** Room granted by `InflightBudget.acquire`; release it exactly once (later calls are no-ops). */
export interface BudgetLease {
  /** Bytes held now. */
  readonly bytes: number;
  /** Gives back what is held above `bytes` (never grows the lease). */
  shrink(bytes: number): void;
  release(): void;
}

interface Waiter {
  bytes: number;
  grant: (lease: BudgetLease) => void;
}

/**
 * A counting semaphore over bytes: callers take room before reading a request and give it back
 * when the call ends. Waiters are served first come, first served, so a large request is not
 * starved by a stream of small ones. A request larger than the whole budget waits for all of it.
 */
export class InflightBudget {
  readonly limitBytes: number;
  readonly maxWaitMs: number;
  private used = 0;
  private readonly waiters: Waiter[] = [];

  constructor(options: InflightBudgetOptions) {
    if (!Number.isSafeInteger(options.limitBytes) || options.limitBytes < 1) throw new RangeError(`limitBytes must be a whole number ≥ 1, got ${options.limitBytes}`);
    const maxWaitMs = options.maxWaitMs ?? 2000;
    if (!Number.isSafeInteger(maxWaitMs) || maxWaitMs < 0) throw new RangeError(`maxWaitMs must be a whole number ≥ 0, got ${maxWaitMs}`);
    this.limitBytes = options.limitBytes;
    this.maxWaitMs = maxWaitMs;
  }

  /** Bytes held by admitted calls. */
  get usedBytes(): number {
    return this.used;
  }

  /** Bytes asked for by callers still waiting. */
  get waitingBytes(): number {
    return this.waiters.reduce((sum, w) => sum + w.bytes, 0);
  }

  /** A lease of `bytes` (capped at the limit) at once if there is room and nobody waits; else undefined. */
  tryAcquire(bytes: number): BudgetLease | undefined {
    const want = Math.max(0, Math.min(Math.ceil(bytes), this.limitBytes));
    return this.waiters.length === 0 && this.used + want <= this.limitBytes ? this.grant(want) : undefined;
  }

  /**
   * Resolves a lease of `bytes` (capped at the limit) once there is room, or undefined when none
   * was free within `waitMs` (default `maxWaitMs`) or `signal` fired.
   */
  acquire(bytes: number, options: { waitMs?: number; signal?: AbortSignal } = {}): Promise<BudgetLease | undefined> {
    const want = Math.max(0, Math.min(Math.ceil(bytes), this.limitBytes));
    if (this.waiters.length === 0 && this.used + want <= this.limitBytes) return Promise.resolve(this.grant(want));
    const waitMs = Math.max(0, options.waitMs ?? this.maxWaitMs);
    if (waitMs === 0 || options.signal?.aborted) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const give = (lease: BudgetLease | undefined): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        resolve(lease);
      };
      const waiter: Waiter = { bytes: want, grant: give };
      const drop = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        give(undefined);
        // The head may have been what held the others back.
        this.serveWaiters();
      };
      const onAbort = (): void => drop();
      const timer = setTimeout(drop, waitMs);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private grant(bytes: number): BudgetLease {
    this.used += bytes;
    let held = bytes;
    const giveBack = (n: number): void => {
      this.used -= n;
      this.serveWaiters();
    };
    return {
      get bytes() {
        return held;
      },
      shrink: (to: number) => {
        const target = Math.max(0, Math.ceil(to));
        if (target >= held) return;
        const freed = held - target;
        held = target;
        giveBack(freed);
      },
      release: () => {
        if (held === 0) return;
        const freed = held;
        held = 0;
        giveBack(freed);
      },
    };
  }

  private serveWaiters(): void {
    while (this.waiters.length > 0 && this.used + this.waiters[0]!.bytes <= this.limitBytes) {
      const next = this.waiters.shift()!;
      next.grant(this.grant(next.bytes));
    }
  }
}
