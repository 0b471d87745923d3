import { RangeDigest, StoreError, type PackedRows, type SnapshotLease, type StoreClient } from '../store/index.js';
import { BackupError } from './backup-errors.js';
import { shardFileName } from './backup-layout.js';
import type { ManifestShard } from './backup-manifest.js';
import type { BackupTarget } from './backup-target.js';
import { packedParquetShardStream, type ShardStreamStats } from './parquet-shard-stream.js';
import type { ShardEncoders } from './shard-encoders.js';

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
  /** Threads to encode the file on (see ShardEncoders); absent = on this thread. */
  encoders?: ShardEncoders;
  signal?: AbortSignal;
}

/** A written shard: its manifest entry and how long it took. */
export interface ShardResult extends ManifestShard {
  durationMs: number;
}

/**
 * Streams the shard's range from the pinned snapshots (`scanAllPacked`: packed batches, no object
 * per entry) into one Parquet file — encoded on one of `encoders`' threads when given — written
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
  // Stops the scan too when the file fails on the target's side.
  const stop = new AbortController();
  const scanSignal = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
  const scan = client.scanAllPacked(task.start, task.end, { snapshots: task.leases, batchSize: options.scanBatchSize ?? 1000, signal: scanSignal });
  const source = withProgress(scan, options);
  const metadata = { backupId: task.backupId, shard: task.index, rangeStart: task.start, rangeEnd: task.end };
  const encode = { rowGroupRows: options.rowGroupRows, signal };
  const bytes = options.encoders ? options.encoders.encode(source, metadata, stats, encode) : packedParquetShardStream(source, metadata, stats, encode);
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
  } finally {
    stop.abort();
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
    contentHash: contentHashOf(stats, task),
    durationMs: Math.round(performance.now() - started),
  };
}

async function* withProgress(scan: AsyncIterable<PackedRows>, options: WriteShardOptions): AsyncGenerator<PackedRows> {
  const { onProgress } = options;
  if (!onProgress) return yield* scan;
  const interval = options.progressIntervalMs ?? 1000;
  let rows = 0;
  let last = performance.now();
  for await (const batch of scan) {
    rows += batch.count;
    yield batch;
    if (performance.now() - last >= interval) {
      last = performance.now();
      await onProgress(rows);
    }
  }
}

/** The content hash the stream set at its end; a stream that ended without one is a defect, never a manifest without it. */
function contentHashOf(stats: ShardStreamStats, task: ShardTask): string {
  if (stats.contentHash === undefined) throw new TypeError(`shard ${task.index} of backup ${task.backupId}: the shard stream ended without its content hash`);
  return stats.contentHash;
}
