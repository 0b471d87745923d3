import { setTimeout as sleep } from 'node:timers/promises';
import { ShardContentHash } from '../backup/index.js';
import type { DataFile } from '../files/index.js';
import { RangeDigest, bulkPutCheckpointed, type CheckpointedChunk, type StoreClient } from '../store/index.js';
import { RestoreError } from './restore-errors.js';
import { SortedRangeFilter, type KeyRange } from './restore-selection.js';
import { readShardColumns, type ShardSpec } from './shard-file.js';
import { packShardChunk, type PackBuffers } from './shard-packer.js';

/**
 * Where a shard's restore stands: the next row to read and what was done before it. Bound to the
 * shard file's fingerprint, so a checkpoint never applies to other bytes.
 */
export interface ShardCheckpoint {
  fingerprint: string;
  /** Next row group to read, and the row within it. */
  rowGroup: number;
  rowOffset: number;
  /** Rows read from the file (restored plus expired plus outside the selection). */
  rowsDone: number;
  /** Rows written to the store. */
  rowsRestored: number;
  /** Rows skipped because their expiry had passed when they were read. */
  rowsExpired: number;
  /** Rows skipped because their key is outside the task's ranges (a partial restore). */
  rowsOutsideRange: number;
  /** Key plus value bytes written. */
  bytesRestored: number;
  /**
   * RangeDigest (hex) of every row read, expired ones included: must end equal to the manifest
   * checksum. Format-1 manifests only; with a content hash (format 2) it stays the empty digest and
   * a resumed shard hashes the rows before its checkpoint again (the hash's state is not kept).
   */
  fileDigest: string;
  /** Earliest expiry among the rows read inside the task's ranges (Unix ms), 0 = none expires. Verification needs it. */
  firstExpiresAtMs: number;
}

const DEFAULT_CHUNK_ROWS = 8192;
const DEFAULT_CHECKPOINT_INTERVAL_MS = 500;

/** A shard to restore from a local copy of its file. */
export interface ShardTask {
  /** The local file (a staged copy for remote targets). */
  file: DataFile;
  shard: ShardSpec;
  /** Identifies the bytes of the shard file (size and modification time at the target). */
  fingerprint: string;
  /**
   * Restore only rows whose key lies in one of these ranges (sorted, disjoint, inside the shard's
   * range: see intersectRanges); absent = every row. The other rows are still read (the file's
   * checksum covers them) but not written.
   */
  ranges?: readonly KeyRange[];
}

export interface ShardRestoreOptions {
  /** Continue from here (ignored when its fingerprint is not the task's). */
  resumeFrom?: ShardCheckpoint;
  /** BulkInsert calls in flight. Default 4. */
  maxInFlight?: number;
  /** Rows per BulkInsert call at most. Default: bulkPutAll's. */
  batchMaxRows?: number;
  /**
   * Rows per chunk read from the file: the checkpoint granularity, and the largest packed batch
   * sent (bulkPutAll cuts a chunk at partition boundaries but never merges chunks). Default 8192
   * (about 1 MB of 16-byte keys and 100-byte values, near bulkPutAll's 1 MiB per call).
   */
  chunkRows?: number;
  /** Throttle (rows read per second); 0 or absent = unlimited. */
  maxRowsPerSecond?: number;
  /** Clock deciding which rows have expired. Default Date.now. */
  now?: () => number;
  /**
   * Called (one at a time, newest wins) whenever the durably written prefix of the shard grows,
   * at most once per `checkpointIntervalMs`: the place to persist the checkpoint.
   */
  onCheckpoint?: (checkpoint: ShardCheckpoint) => Promise<void>;
  /**
   * Least time between two `onCheckpoint` calls, in ms. A checkpoint reached sooner waits for the
   * next one to supersede it, and the newest is always written when the shard ends or fails; so a
   * resume re-sends at most about this much more than what was in flight. Default 500. Each call
   * costs the caller Redis round trips (job data and progress): one per 8192-row chunk was a tenth
   * of the restore process's CPU.
   */
  checkpointIntervalMs?: number;
  signal?: AbortSignal;
}

/**
 * Restores one shard file: rows → skip the expired → bulkPutAll (which cuts at the cluster's current
 * partition boundaries), keeping etags, update times and expiries. A checkpoint follows every
 * acknowledged stretch; resuming re-sends at most what was in flight. At the end the rows read must
 * match the manifest: with a content hash (format 2) its row count and hash, else
 * RESTORE_SHARD_HASH_MISMATCH; without one (format 1) its count and checksum (each row's digest),
 * else RESTORE_SHARD_CHECKSUM_MISMATCH. The rows are written by then: the report names the shard.
 */
export async function restoreShard(client: StoreClient, task: ShardTask, options: ShardRestoreOptions = {}): Promise<ShardCheckpoint> {
  const { shard } = task;
  const now = options.now ?? Date.now;
  const resumed = options.resumeFrom?.fingerprint === task.fingerprint ? options.resumeFrom : undefined;
  // Checkpoints written before partial restores existed have no rowsOutsideRange.
  const resume = resumed && { ...resumed, rowsOutsideRange: resumed.rowsOutsideRange ?? 0 };
  let current: ShardCheckpoint = resume ?? {
    fingerprint: task.fingerprint,
    rowGroup: 0,
    rowOffset: 0,
    rowsDone: 0,
    rowsRestored: 0,
    rowsExpired: 0,
    rowsOutsideRange: 0,
    bytesRestored: 0,
    fileDigest: new RangeDigest().toHex(),
    firstExpiresAtMs: 0,
  };
  // Format 2: the file is checked by its ordered content hash, which needs every row from the first.
  const contentHash = shard.contentHash === undefined ? undefined : new ShardContentHash();
  async function* chunks(): AsyncGenerator<CheckpointedChunk<ShardCheckpoint>> {
    const digest = contentHash === undefined ? RangeDigest.fromHex(current.fileDigest, current.rowsDone) : undefined;
    let counts = { ...current };
    let read = 0;
    const started = performance.now();
    const selected = task.ranges === undefined ? undefined : new SortedRangeFilter(task.ranges);
    // Buffers of acknowledged chunks, filled again by later ones: at most maxInFlight + 2 sets are ever made.
    const spare: PackBuffers[] = [];
    // Rows before `resumeAt` were written before: with a content hash they are read again, hashed and not sent.
    const resumeAt = contentHash !== undefined && current.rowsDone > 0 ? { rowGroup: current.rowGroup, rowOffset: current.rowOffset } : undefined;
    const readFrom = resumeAt === undefined ? { rowGroup: current.rowGroup, rowOffset: current.rowOffset } : { rowGroup: 0, rowOffset: 0 };
    for await (let chunk of readShardColumns(task.file, shard, { ...readFrom, chunkRows: options.chunkRows ?? DEFAULT_CHUNK_ROWS, signal: options.signal })) {
      if (resumeAt !== undefined) {
        const before = chunk.rowGroup < resumeAt.rowGroup ? chunk.to - chunk.from : chunk.rowGroup > resumeAt.rowGroup ? 0 : Math.min(chunk.to - chunk.from, Math.max(0, resumeAt.rowOffset - chunk.rowOffset));
        if (before > 0) {
          contentHash!.add(chunk.columns, chunk.from, chunk.from + before);
          if (before === chunk.to - chunk.from) continue;
          chunk = { ...chunk, from: chunk.from + before, rowOffset: chunk.rowOffset + before };
        }
      }
      const rows = chunk.to - chunk.from;
      contentHash?.add(chunk.columns, chunk.from, chunk.to);
      const { packed, expired, outside, firstExpiresAtMs, buffers } = packShardChunk(chunk, { digest, selected, now: now(), firstExpiresAtMs: counts.firstExpiresAtMs, reuse: spare.pop() });
      const end = chunk.rowOffset + rows;
      const groupDone = end >= chunk.groupRows;
      counts = {
        ...counts,
        rowGroup: groupDone ? chunk.rowGroup + 1 : chunk.rowGroup,
        rowOffset: groupDone ? 0 : end,
        rowsDone: counts.rowsDone + rows,
        rowsRestored: counts.rowsRestored + packed.count,
        rowsExpired: counts.rowsExpired + expired,
        rowsOutsideRange: counts.rowsOutsideRange + outside,
        bytesRestored: counts.bytesRestored + packed.bytes,
        fileDigest: digest === undefined ? counts.fileDigest : digest.toHex(),
        firstExpiresAtMs,
      };
      yield { rows: packed, checkpoint: counts, release: () => void spare.push(buffers) };
      read += rows;
      if (options.maxRowsPerSecond && options.maxRowsPerSecond > 0) {
        const aheadMs = (read / options.maxRowsPerSecond) * 1000 - (performance.now() - started);
        if (aheadMs > 0) await sleep(aheadMs, undefined, { signal: options.signal });
      }
    }
  }

  const { onCheckpoint } = options;
  const intervalMs = options.checkpointIntervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS;
  let lastWriteAt = Number.NEGATIVE_INFINITY;
  // The newest checkpoint not written because one was written less than intervalMs before.
  let held: ShardCheckpoint | undefined;
  const persist =
    onCheckpoint &&
    (async (checkpoint: ShardCheckpoint): Promise<void> => {
      if (performance.now() - lastWriteAt < intervalMs) {
        held = checkpoint;
        return;
      }
      held = undefined;
      lastWriteAt = performance.now();
      await onCheckpoint(checkpoint);
    });
  try {
    current = await bulkPutCheckpointed(client, chunks(), {
      start: current,
      persist,
      maxInFlight: options.maxInFlight,
      batchMaxRows: options.batchMaxRows,
      signal: options.signal,
    });
  } catch (err) {
    // What was acknowledged before the failure stays counted (as bulkPutCheckpointed does); a
    // checkpoint that cannot be written only makes the retry resend more, and the failure thrown is the first one.
    if (held !== undefined) await onCheckpoint!(held).catch((writeErr: unknown) => void writeErr);
    // Stopped by the caller: its reason, not whichever call in flight noticed first (a cancelled
    // RPC fails as CANCELLED, and may be first when the abort lands while calls are in flight).
    if (options.signal?.aborted) throw options.signal.reason;
    throw err;
  }
  if (held !== undefined) await onCheckpoint!(held);
  if (contentHash !== undefined) {
    const computedHash = contentHash.toHex();
    if (contentHash.rows !== shard.rows || current.rowsDone !== shard.rows || computedHash !== shard.contentHash) {
      throw new RestoreError(
        'RESTORE_SHARD_HASH_MISMATCH',
        `shard ${shard.index} (${shard.file}): the file's ${contentHash.rows} rows have content hash ${computedHash}, the manifest says ${shard.rows} rows with ${shard.contentHash}; ` +
          'the file was damaged or replaced after the backup — its rows were written, restore this range from another backup',
        { context: { shard: shard.index, file: shard.file, expectedHash: shard.contentHash, computedHash, expectedRows: shard.rows, rows: contentHash.rows } },
      );
    }
    return current;
  }
  if (current.rowsDone !== shard.rows || current.fileDigest !== shard.checksum) {
    throw new RestoreError(
      'RESTORE_SHARD_CHECKSUM_MISMATCH',
      `shard ${shard.index} (${shard.file}): the file's ${current.rowsDone} rows have checksum ${current.fileDigest}, the manifest says ${shard.rows} rows with ${shard.checksum}; ` +
        'the file was damaged or replaced after the backup — its rows were written, restore this range from another backup',
      { context: { shard: shard.index, file: shard.file } },
    );
  }
  return current;
}

