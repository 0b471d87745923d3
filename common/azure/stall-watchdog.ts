/**
 * A resettable deadline for Azure calls: `signal` aborts once `timeoutMs` pass after the last `arm()`
 * (or when `parent` aborts). Armed per request and re-armed per received chunk, it bounds how long a
 * silent connection can hold a call, without bounding how long a large download may take.
 */
export class StallWatchdog {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private firedFlag = false;

  constructor(
    readonly timeoutMs: number,
    parent?: AbortSignal,
  ) {
    this.signal = parent ? AbortSignal.any([parent, this.controller.signal]) : this.controller.signal;
  }

  /** True once the deadline passed (as opposed to the parent signal aborting). */
  get fired(): boolean {
    return this.firedFlag;
  }

  arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.firedFlag = true;
      this.controller.abort(new Error(`no answer from storage within ${this.timeoutMs} ms`));
    }, this.timeoutMs);
  }

  disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
