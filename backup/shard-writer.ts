import { RangeDigest, StoreError, type SnapshotLease, type StoreClient, type StoredEntry } from '../store/index.js';
import { BackupError } from './backup-errors.js';
import { shardFileName } from './backup-layout.js';
import type { ManifestShard } from './backup-manifest.js';
import type { BackupTarget } from './backup-target.js';
import { parquetShardStream, type ShardStreamStats } from './parquet-shard-stream.js';

/** One shard to write: a key range of one backup, read from the backup's snapshots. */
export interface ShardTask {
  backupId: string;
  index: number;
  /** Range start; empty = start of the keyspace. */
  start: Buffer;
  /** Range end (exclusive); empty = end of the keyspace. */
  end: Buffer;
  /** Snapshot leases of (at least) every partition the range touches. */
  leases: readonly SnapshotLease[];
}

/** Options of `writeShard`. */
export interface WriteShardOptions {
  /** Rows per Parquet row group, 1–65,536. Default 65,536. */
  rowGroupRows?: number;
  /** Entries per streamed Scan batch. Default 1000. */
  scanBatchSize?: number;
  /** Called with the rows written so far, at most about once per `progressIntervalMs`. */
  onProgress?: (rows: number) => void | Promise<void>;
  /** Default 1000 ms. */
  progressIntervalMs?: number;
  signal?: AbortSignal;
}

/** A written shard: its manifest entry and how long it took. */
export interface ShardResult extends ManifestShard {
  durationMs: number;
}

/**
 * Streams the shard's range from the pinned snapshots (`scanAll`) into one Parquet file written
 * straight to the target while scanning — no local copy, memory bounded by about two row groups
 * and the target's upload buffers — and returns its rows, file bytes and checksum (RangeDigest
 * with etags, as FORMAT.md defines it). The file appears under its name only once complete, so a
 * retry simply writes it again from the same snapshots and replaces any earlier attempt.
 *
 * Throws BackupError BACKUP_SNAPSHOT_LOST when a snapshot is gone (lease expired, node restarted,
 * map changed), the target's errors, and the store client's (STORE_UNAVAILABLE is retryable).
 */
export async function writeShard(client: StoreClient, target: BackupTarget, task: ShardTask, options: WriteShardOptions = {}): Promise<ShardResult> {
  const started = performance.now();
  const { signal } = options;
  const file = shardFileName(task.index);
  const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
  const scan = client.scanAll(task.start, task.end, { snapshots: task.leases, batchSize: options.scanBatchSize ?? 1000, signal });
  const source = withProgress(scan, options);
  const bytes = parquetShardStream(
    source,
    { backupId: task.backupId, shard: task.index, rangeStart: task.start, rangeEnd: task.end },
    stats,
    { rowGroupRows: options.rowGroupRows, signal },
  );
  let written: { bytes: number };
  try {
    written = await target.writeFile(task.backupId, file, bytes, { signal });
  } catch (err) {
    if (err instanceof StoreError && err.code === 'STORE_SNAPSHOT_NOT_FOUND') {
      throw new BackupError('BACKUP_SNAPSHOT_LOST', `shard ${task.index} of backup ${task.backupId} cannot be read from its snapshot any more: ${err.message}. Run the backup again.`, {
        cause: err,
        context: { backupId: task.backupId, shard: task.index, file },
      });
    }
    throw err;
  }
  await options.onProgress?.(stats.rows);
  return {
    index: task.index,
    start: task.start.toString('hex'),
    end: task.end.toString('hex'),
    file,
    rows: stats.rows,
    bytes: written.bytes,
    checksum: stats.digest.toHex(),
    durationMs: Math.round(performance.now() - started),
  };
}

async function* withProgress(scan: AsyncIterable<StoredEntry[]>, options: WriteShardOptions): AsyncGenerator<StoredEntry[]> {
  const { onProgress } = options;
  if (!onProgress) return yield* scan;
  const interval = options.progressIntervalMs ?? 1000;
  let rows = 0;
  let last = performance.now();
  for await (const batch of scan) {
    rows += batch.length;
    yield batch;
    if (performance.now() - last >= interval) {
      last = performance.now();
      await onProgress(rows);
    }
  }
}
