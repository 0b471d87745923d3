import type { Redis } from 'ioredis';

/** The Redis sorted set of last complete backups: member = target URL (redacted), score = Unix ms. */
export const BACKUP_SUCCESS_KEY = 'shardpipe:backup:last-success';

/**
 * When the last complete backup to each target wrote its manifest, kept in the shared Redis so
 * it outlives the workers: a worker records each backup it completes, and every worker reads the
 * set at start, so `shardpipe_backup_last_success_timestamp_seconds` is there again after all of
 * them restart (and ShardpipeBackupTooOld can fire) — not only after the next backup.
 */
export class BackupSuccessLog {
  constructor(private readonly redis: Redis) {}

  /** Records a backup to `target` complete at `finishedAtMs`; an older time never replaces a newer one. */
  async record(target: string, finishedAtMs: number): Promise<void> {
    await this.redis.zadd(BACKUP_SUCCESS_KEY, 'GT', finishedAtMs, target);
  }

  /** Every target's last complete backup, Unix ms. */
  async read(): Promise<Map<string, number>> {
    const flat = await this.redis.zrange(BACKUP_SUCCESS_KEY, 0, -1, 'WITHSCORES');
    const out = new Map<string, number>();
    for (let i = 0; i + 1 < flat.length; i += 2) out.set(flat[i]!, Number(flat[i + 1]));
    return out;
  }

  close(): void {
    this.redis.disconnect();
  }
}
