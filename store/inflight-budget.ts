/** Options of an InflightBudget. */
export interface InflightBudgetOptions {
  /** Bytes that may be held at once. Required, ≥ 1. */
  limitBytes: number;
  /** Longest a caller waits for room before it is refused. Default 2000 ms. */
  maxWaitMs?: number;
  /**
   * Most bytes waiting callers may hold together (what their unread requests buffer meanwhile, see
   * `acquire`'s `holdBytes`), inside `limitBytes`. Keep it ≤ limitBytes − the largest lease asked
   * for, so the first waiter always fits once admitted calls are done. Default limitBytes.
   */
  waitRoomBytes?: number;
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
  /** Bytes it holds while it waits, counted in the limit; part of `bytes` once granted. */
  hold: number;
  grant: (lease: BudgetLease) => void;
}

/**
 * A counting semaphore over bytes: callers take room before reading a request and give it back
 * when the call ends. Waiters are served first come, first served, so a large request is not
 * starved by a stream of small ones. A request larger than the whole budget waits for all of it.
 * A waiter may hold bytes while it waits (an unread HTTP/2 stream keeps receiving up to its window):
 * they count against the limit as leases do, and together stay inside `waitRoomBytes`.
 */
export class InflightBudget {
  readonly limitBytes: number;
  readonly maxWaitMs: number;
  readonly waitRoomBytes: number;
  private used = 0;
  private waitHeld = 0;
  private readonly waiters: Waiter[] = [];

  constructor(options: InflightBudgetOptions) {
    if (!Number.isSafeInteger(options.limitBytes) || options.limitBytes < 1) throw new RangeError(`limitBytes must be a whole number ≥ 1, got ${options.limitBytes}`);
    const maxWaitMs = options.maxWaitMs ?? 2000;
    if (!Number.isSafeInteger(maxWaitMs) || maxWaitMs < 0) throw new RangeError(`maxWaitMs must be a whole number ≥ 0, got ${maxWaitMs}`);
    const waitRoomBytes = options.waitRoomBytes ?? options.limitBytes;
    if (!Number.isSafeInteger(waitRoomBytes) || waitRoomBytes < 0 || waitRoomBytes > options.limitBytes) throw new RangeError(`waitRoomBytes must be a whole number 0–limitBytes (${options.limitBytes}), got ${waitRoomBytes}`);
    this.limitBytes = options.limitBytes;
    this.maxWaitMs = maxWaitMs;
    this.waitRoomBytes = waitRoomBytes;
  }

  /** Bytes held by admitted calls. */
  get usedBytes(): number {
    return this.used;
  }

  /** Bytes asked for by callers still waiting. */
  get waitingBytes(): number {
    return this.waiters.reduce((sum, w) => sum + w.bytes, 0);
  }

  /** Bytes waiting callers hold while they wait (their `holdBytes`), counted in the limit. */
  get waitHeldBytes(): number {
    return this.waitHeld;
  }

  /** A lease of `bytes` (capped at the limit) at once if there is room and nobody waits; else undefined. */
  tryAcquire(bytes: number): BudgetLease | undefined {
    const want = Math.max(0, Math.min(Math.ceil(bytes), this.limitBytes));
    return this.waiters.length === 0 && this.used + this.waitHeld + want <= this.limitBytes ? this.grant(want) : undefined;
  }

  /**
   * Resolves a lease of `bytes` (capped at the limit) once there is room, or undefined when none
   * was free within `waitMs` (default `maxWaitMs`) or `signal` fired. A caller that holds memory
   * while it waits says how much in `holdBytes` (capped at `bytes`): it is refused at once (undefined)
   * when that does not fit in the limit and the wait room.
   */
  acquire(bytes: number, options: { waitMs?: number; signal?: AbortSignal; holdBytes?: number } = {}): Promise<BudgetLease | undefined> {
    const want = Math.max(0, Math.min(Math.ceil(bytes), this.limitBytes));
    if (this.waiters.length === 0 && this.used + this.waitHeld + want <= this.limitBytes) return Promise.resolve(this.grant(want));
    const waitMs = Math.max(0, options.waitMs ?? this.maxWaitMs);
    if (waitMs === 0 || options.signal?.aborted) return Promise.resolve(undefined);
    const hold = Math.max(0, Math.min(Math.ceil(options.holdBytes ?? 0), want));
    if (hold > 0 && (this.waitHeld + hold > this.waitRoomBytes || this.used + this.waitHeld + hold > this.limitBytes)) return Promise.resolve(undefined);
    this.waitHeld += hold;
    return new Promise((resolve) => {
      const give = (lease: BudgetLease | undefined): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        resolve(lease);
      };
      const waiter: Waiter = { bytes: want, hold, grant: give };
      const drop = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          this.waitHeld -= waiter.hold;
        }
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
    // The head's own hold becomes part of its lease.
    while (this.waiters.length > 0 && this.used + this.waitHeld - this.waiters[0]!.hold + this.waiters[0]!.bytes <= this.limitBytes) {
      const next = this.waiters.shift()!;
      this.waitHeld -= next.hold;
      next.grant(this.grant(next.bytes));
    }
  }
}
