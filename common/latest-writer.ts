/**
 * Persists values one at a time, where only the newest matters (checkpoints): while one write is
 * running, later offers replace each other and only the last is written next. A failed write is
 * thrown by the next `offer` or by `flush`.
 */
export class LatestWriter<T> {
  private pending: T | undefined;
  private running: Promise<void> | undefined;
  private failure: unknown;

  /** Without `persist`, offers are dropped (nothing to persist to). */
  constructor(private readonly persist: ((value: T) => Promise<void>) | undefined) {}

  offer(value: T): void {
    if (!this.persist) return;
    if (this.failure !== undefined) throw this.failure;
    this.pending = value;
    this.running ??= this.run();
  }

  /** Waits until the newest offered value is written. */
  async flush(): Promise<void> {
    await this.running;
    if (this.failure !== undefined) throw this.failure;
  }

  private async run(): Promise<void> {
    while (this.pending !== undefined) {
      const next = this.pending;
      this.pending = undefined;
      try {
        await this.persist!(next);
      } catch (err) {
        this.failure = err;
        break;
      }
    }
    this.running = undefined;
  }
}
