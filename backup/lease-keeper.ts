import type { Logger } from '../common/index.js';
import { StoreError, type SnapshotLease, type StoreClient } from '../store/index.js';
import { BackupError } from './backup-errors.js';

/** Options of `LeaseKeeper.start`. */
export interface LeaseKeeperOptions {
  /** Lease length asked for on every renewal, in ms (1 s – 24 h). */
  leaseMs: number;
  /** Time between renewals, in ms. Default leaseMs / 4, at most 30000. */
  intervalMs?: number;
  /** What the leases belong to, for messages (`backup 2026…`). */
  what: string;
  logger?: Logger;
}

/**
 * The heartbeat of a backup's snapshots: renews every lease at once, now and then every
 * `intervalMs`. A node that no longer holds a snapshot (lease ran out, node restarted) makes the
 * keeper's `signal` abort with BackupError BACKUP_SNAPSHOT_LOST; so does a run of failed renewals
 * lasting longer than a lease. Other renewal failures (a node briefly unreachable) are logged and
 * tried again at the next beat.
 */
export class LeaseKeeper {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private lastRenewedMs = Date.now();
  private stopped = false;

  private constructor(
    private readonly client: StoreClient,
    private readonly leases: readonly SnapshotLease[],
    private readonly options: LeaseKeeperOptions & { intervalMs: number },
  ) {}

  /** Aborts (with BACKUP_SNAPSHOT_LOST) when the snapshots are lost. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /**
   * Renews once (so a caller learns at once that its snapshots are gone: BACKUP_SNAPSHOT_LOST, or
   * the store's error when it cannot be reached) and keeps renewing until `stop()`.
   */
  static async start(client: StoreClient, leases: readonly SnapshotLease[], options: LeaseKeeperOptions): Promise<LeaseKeeper> {
    const intervalMs = options.intervalMs ?? Math.min(30_000, Math.floor(options.leaseMs / 4));
    if (!Number.isFinite(intervalMs) || intervalMs < 1 || intervalMs >= options.leaseMs) throw new RangeError(`intervalMs must be 1–${options.leaseMs - 1} ms (below the lease), got ${intervalMs}`);
    const keeper = new LeaseKeeper(client, leases, { ...options, intervalMs });
    try {
      await client.renewSnapshots(leases, options.leaseMs);
    } catch (err) {
      throw keeper.lostError(err) ?? err;
    }
    keeper.schedule();
    return keeper;
  }

  /** Stops renewing (the leases then run out unless released or renewed elsewhere). Idempotent. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.beat(), this.options.intervalMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    try {
      await this.client.renewSnapshots(this.leases, this.options.leaseMs, { timeoutMs: this.options.intervalMs });
      this.lastRenewedMs = Date.now();
    } catch (err) {
      const lost = this.lostError(err);
      if (lost) {
        this.stop();
        this.controller.abort(lost);
        return;
      }
      if (Date.now() - this.lastRenewedMs >= this.options.leaseMs) {
        this.stop();
        this.controller.abort(
          new BackupError('BACKUP_SNAPSHOT_LOST', `the snapshots of ${this.options.what} could not be renewed for longer than their lease (${this.options.leaseMs} ms): ${(err as Error).message}`, { cause: err }),
        );
        return;
      }
      this.options.logger?.warn({ err }, `renewing the snapshots of ${this.options.what} failed; trying again`);
    }
    this.schedule();
  }

  private lostError(err: unknown): BackupError | undefined {
    if (err instanceof StoreError && err.code === 'STORE_SNAPSHOT_NOT_FOUND') {
      return new BackupError('BACKUP_SNAPSHOT_LOST', `a snapshot of ${this.options.what} is gone: ${err.message}. Run the backup again (a longer --lease helps when workers stall).`, { cause: err });
    }
    return undefined;
  }
}
