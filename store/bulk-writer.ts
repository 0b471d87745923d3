import { setMaxListeners } from 'node:events';
import { BatchBufferPool, LatestWriter } from '../common/index.js';
import { encodeBulkInsertPooled, releaseEncodedBulkInsert } from './bulk-insert-codec.js';
import type { BulkRowInput } from './bulk-row.js';
import { PackedRows, PackedRowsBuilder } from './packed-rows.js';
import { partitionContains, type Partition } from './partition-map.js';
import type { WriteTiming } from './partition-store.js';
import { StoreError } from './store-errors.js';
import type { CallOptions, StoreRouter } from './store-router.js';

/** A chunk of sorted rows to write: row objects, or a packed batch (sent as views of its buffers). */
export type BulkChunk = readonly BulkRowInput[] | PackedRows;

/** A sorted stream of chunks for `bulkPutAll`. */
export type BulkSource = AsyncIterable<BulkChunk> | Iterable<BulkChunk>;

/** Default BulkInsert calls in flight. */
export const DEFAULT_BULK_MAX_IN_FLIGHT = 4;
/** Default rows per BulkInsert call. */
export const DEFAULT_BULK_BATCH_MAX_ROWS = 16_384;
/** Default key plus value bytes per BulkInsert call. */
export const DEFAULT_BULK_BATCH_MAX_BYTES = 1024 * 1024;

/** Options of `bulkPutAll`. */
export interface BulkPutOptions extends CallOptions {
  /** BulkInsert calls in flight at once, 1–64. Default 4. */
  maxInFlight?: number;
  /** Rows per call at most. Default 16,384. */
  batchMaxRows?: number;
  /** Key plus value bytes per call at most (a single larger row goes alone). Default 1 MiB (must not exceed the nodes' limit). */
  batchMaxBytes?: number;
  /**
   * Called whenever the acknowledged prefix of the input grows: `rows` and `bytes` count every
   * input row from the start that is durably written. The place to checkpoint.
   */
  onAck?: (rows: number, bytes: number) => void;
  /**
   * Send every batch as per-row `rows` (one BulkRow message per row), as clients did before packed
   * batches: slower on both ends; for comparisons. Default false (a node that does not know packed
   * batches is detected, and the per-row form used for it, either way).
   */
  perRowForm?: boolean;
}

/** What a bulkPutAll did. */
export interface BulkPutResult {
  rows: number;
  bytes: number;
  /** BulkInsert calls made, including the ones for remainders. */
  calls: number;
  /** Calls whose batch was only partly accepted (a partition boundary or map change inside it). */
  partialAccepts: number;
  /** Sum of the nodes' reported timing. */
  serverTiming: WriteTiming;
}

interface Pending {
  rows: number;
  bytes: number;
  done: boolean;
  controller: AbortController;
}

/**
 * Buffers the packed requests are encoded into (~1 MiB each), reused once a call succeeded: calls in
 * flight over all puts of the process rarely exceed 8 (2 files × 4 calls by default).
 */
const ENCODED_REQUESTS = new BatchBufferPool({ maxFree: 8, maxBytes: 4 * 1024 * 1024 });

/**
 * Writes a sorted stream of rows with BulkInsert, each call one packed batch (store.proto
 * `PackedRows`): cuts the stream at partition boundaries (of the router's map) and by rows and
 * bytes, keeps up to `maxInFlight` calls in flight, resends the unaccepted rest of a batch (to
 * wherever the map now routes it), and splits a batch a node finds too large. Row objects are
 * copied into packed batches once; PackedRows chunks are cut with `slice` (views, no copy) and
 * never merged, so size them near `batchMaxBytes`. Fails on the first final error, after letting
 * the calls in flight settle.
 */
export async function bulkPutAll(router: StoreRouter, source: BulkSource, options: BulkPutOptions = {}): Promise<BulkPutResult> {
  const maxInFlight = options.maxInFlight ?? DEFAULT_BULK_MAX_IN_FLIGHT;
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 64) throw new RangeError(`maxInFlight must be 1–64, got ${maxInFlight}`);
  const batchMaxRows = options.batchMaxRows ?? DEFAULT_BULK_BATCH_MAX_ROWS;
  const batchMaxBytes = options.batchMaxBytes ?? DEFAULT_BULK_BATCH_MAX_BYTES;
  if (!Number.isInteger(batchMaxRows) || batchMaxRows < 1) throw new RangeError(`batchMaxRows must be ≥ 1, got ${batchMaxRows}`);
  if (!Number.isInteger(batchMaxBytes) || batchMaxBytes < 1) throw new RangeError(`batchMaxBytes must be ≥ 1, got ${batchMaxBytes}`);

  options.signal?.throwIfAborted();
  // Each call has its own signal: a failed call cancels only the calls after it in the input (they
  // cannot be acknowledged any more), so calls before it still land and are counted; the caller's
  // signal cancels them all.
  const callOptionsOf = (pending: Pending): CallOptions => ({ signal: pending.controller.signal, timeoutMs: options.timeoutMs });
  const mapOptions: CallOptions = { signal: options.signal, timeoutMs: options.timeoutMs };
  const result: BulkPutResult = { rows: 0, bytes: 0, calls: 0, partialAccepts: 0, serverTiming: { queueMs: 0, writeMs: 0, fsyncMs: 0 } };
  const inFlight = new Set<Promise<void>>();
  const order: Pending[] = [];
  let firstError: unknown;
  const cancelAfter = (pending: Pending | undefined, reason: unknown): void => {
    const at = pending === undefined ? -1 : order.indexOf(pending);
    for (let i = at + 1; i < order.length; i++) order[i]!.controller.abort(reason);
  };
  const onOuterAbort = (): void => {
    // The caller's reason is what the put fails with, not the cancelled calls' errors.
    firstError ??= options.signal!.reason;
    cancelAfter(undefined, options.signal!.reason);
  };
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  // A node that does not know `packed` sees an empty batch and accepts nothing: from then on this
  // run sends per-row `rows`, which every node reads.
  let perRow = options.perRowForm ?? false;

  const acknowledge = (): void => {
    let advanced = false;
    while (order.length > 0 && order[0]!.done) {
      const p = order.shift()!;
      result.rows += p.rows;
      result.bytes += p.bytes;
      advanced = true;
    }
    if (advanced) options.onAck?.(result.rows, result.bytes);
  };

  const insert = (batch: PackedRows, callOptions: CallOptions) =>
    router.routed(batch.key(0), callOptions, async (conn, mapVersion, limits) => {
      if (perRow) return conn.unary('bulkInsert', { mapVersion, rows: toBulkRows(batch) }, limits);
      const request = encodeBulkInsertPooled({ mapVersion, rows: [], packed: batch.toMessage() }, ENCODED_REQUESTS);
      const response = await conn.unary('bulkInsert', request, limits);
      releaseEncodedBulkInsert(request);
      return response;
    });

  const send = async (rows: PackedRows, callOptions: CallOptions): Promise<void> => {
    let rest = rows;
    while (rest.count > 0) {
      callOptions.signal?.throwIfAborted();
      let response;
      try {
        result.calls++;
        const sentPerRow = perRow;
        response = await insert(rest, callOptions);
        if (response.accepted === 0 && !sentPerRow) {
          perRow = true;
          result.calls++;
          response = await insert(rest, callOptions);
        }
      } catch (err) {
        if (err instanceof StoreError && err.code === 'STORE_BATCH_TOO_LARGE' && rest.count > 1) {
          const half = rest.count >> 1;
          await send(rest.slice(0, half), callOptions);
          rest = rest.slice(half);
          continue;
        }
        throw err;
      }
      if (response.accepted === 0) {
        throw new StoreError('STORE_INTERNAL', `node accepted no row of a batch starting at its own key (${rest.count} rows)`);
      }
      if (response.timing) {
        result.serverTiming.queueMs += response.timing.queueMs;
        result.serverTiming.writeMs += response.timing.writeMs;
        result.serverTiming.fsyncMs += response.timing.fsyncMs;
      }
      if (response.accepted < rest.count) result.partialAccepts++;
      rest = rest.slice(response.accepted);
    }
  };

  const launch = async (rows: PackedRows): Promise<void> => {
    if (firstError !== undefined) throw firstError;
    const pending: Pending = { rows: rows.count, bytes: rows.bytes, done: false, controller: new AbortController() };
    // A call's retries' sleeps listen on its signal too.
    setMaxListeners(16, pending.controller.signal);
    order.push(pending);
    const fail = (failed: Pending | undefined, err: unknown): void => {
      firstError ??= err;
      cancelAfter(failed, err);
    };
    const task = send(rows, callOptionsOf(pending)).then(
      () => {
        pending.done = true;
        // onAck may throw (a checkpoint that cannot be kept): that fails the put like any call would,
        // instead of rejecting a promise nobody may be waiting on any more.
        try {
          acknowledge();
        } catch (err) {
          fail(undefined, err);
        }
      },
      (err: unknown) => fail(pending, err),
    );
    const tracked = task.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    if (inFlight.size >= maxInFlight) await Promise.race(inFlight);
    if (firstError !== undefined) throw firstError;
  };

  try {
    let partition: Partition | undefined;
    const builder = new PackedRowsBuilder({ rowsHint: Math.min(batchMaxRows, 4096), bytesHint: Math.min(batchMaxBytes, 1024 * 1024) });
    const flush = async (): Promise<void> => {
      if (builder.count > 0) await launch(builder.finish());
    };
    for await (const chunk of source) {
      if (chunk instanceof PackedRows) {
        // Rows already packed go out as views of the chunk: what the builder holds goes first.
        await flush();
        let from = 0;
        while (from < chunk.count) {
          if (partition === undefined || !partitionContains(partition, chunk.key(from))) partition = (await router.map(mapOptions)).lookup(chunk.key(from));
          const to = cutPoint(chunk, from, partition, batchMaxRows, batchMaxBytes);
          await launch(chunk.slice(from, to));
          from = to;
        }
        continue;
      }
      for (const row of chunk) {
        const size = row.key.length + row.value.length;
        if (partition === undefined || builder.count >= batchMaxRows || builder.bytes + size > batchMaxBytes || !partitionContains(partition, row.key)) {
          await flush();
          if (partition === undefined || !partitionContains(partition, row.key)) partition = (await router.map(mapOptions)).lookup(row.key);
        }
        builder.add(row.key, row.value, row);
      }
    }
    await flush();
    await Promise.all(inFlight);
    if (firstError !== undefined) throw firstError;
    return result;
  } catch (err) {
    // The first failure is the one reported. Calls in flight settle (each within its deadline), so
    // what they land is acknowledged; only the calls after a failed one were cancelled.
    firstError ??= err;
    await Promise.allSettled(inFlight);
    throw firstError;
  } finally {
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
}

/**
 * End of the batch starting at `from`: at most `maxRows` rows and `maxBytes` bytes (at least one
 * row), and before the first key at or past the end of `partition`. Both found by binary search
 * (bytes over the row offsets, keys as the rows are meant to be sorted), and the key search only
 * when the batch's last key is past the end: a batch inside its partition costs one comparison.
 * The node cuts at its partition's end anyway (longest prefix), so rows that are not sorted
 * still land right, in more calls.
 */
export function cutPoint(rows: PackedRows, from: number, partition: Partition, maxRows: number, maxBytes: number): number {
  let to = Math.min(rows.count, from + maxRows);
  if (rows.bytesBetween(from, to) > maxBytes) {
    // The largest end in [from + 1, to) whose rows fit; from + 1 when none does (a larger row goes alone).
    let lo = from + 1;
    let hi = to - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (rows.bytesBetween(from, mid) <= maxBytes) lo = mid;
      else hi = mid - 1;
    }
    to = lo;
  }
  if (partition.end.length === 0 || rows.compareKeyTo(to - 1, partition.end) < 0) return to;
  return rows.firstKeyAtLeast(partition.end, from + 1, to);
}

/** A packed batch as per-row BulkRow messages, for nodes that predate `packed`. */
function toBulkRows(rows: PackedRows): Array<{ key: Buffer; value: Buffer; etag: number; updatedAtMs: number; expiresAtMs: number }> {
  const out = new Array<{ key: Buffer; value: Buffer; etag: number; updatedAtMs: number; expiresAtMs: number }>(rows.count);
  for (let i = 0; i < rows.count; i++) out[i] = { key: rows.key(i), value: rows.value(i), etag: rows.metaField(i, 0), updatedAtMs: rows.metaField(i, 1), expiresAtMs: rows.metaField(i, 2) };
  return out;
}

/** What writes a sorted stream of row chunks with `bulkPutAll`: a StoreClient. */
export interface BulkPutter {
  bulkPutAll(source: BulkSource, options?: BulkPutOptions): Promise<BulkPutResult>;
}

/** Rows to write, and where the caller stands once they (and all before them) are acknowledged. */
export interface CheckpointedChunk<C> {
  rows: BulkChunk;
  checkpoint: C;
  /**
   * Called once every row of this chunk (and of all before it) is acknowledged, when nothing reads
   * `rows` any more: where a caller reuses the chunk's buffers. Not called for chunks a failure left
   * unacknowledged.
   */
  release?: () => void;
}

export interface CheckpointedPutOptions<C> {
  /** Where the caller stands before the first chunk (returned if no chunk is acknowledged). */
  start: C;
  /** Persists a checkpoint; called one at a time, only the newest waiting (see LatestWriter). */
  persist?: (checkpoint: C) => Promise<void>;
  /** BulkInsert calls in flight (see bulkPutAll). */
  maxInFlight?: number;
  /** Rows per BulkInsert call (see bulkPutAll). */
  batchMaxRows?: number;
  signal?: AbortSignal;
}

/**
 * `bulkPutAll` (of a StoreClient) over a stream of chunks that each carry a checkpoint: after every acknowledged
 * stretch, the checkpoint of the last chunk written whole is persisted. Counts in a checkpoint come
 * from its chunk, not from the acknowledgement, so rows acknowledged beyond the last whole chunk —
 * sent again on resume — are never counted twice. Resolves the last checkpoint, persisted.
 */
export async function bulkPutCheckpointed<C>(putter: BulkPutter, chunks: AsyncIterable<CheckpointedChunk<C>>, options: CheckpointedPutOptions<C>): Promise<C> {
  const writer = new LatestWriter<C>(options.persist);
  const positions: Array<{ sentAfter: number; checkpoint: C; release: (() => void) | undefined }> = [];
  let current = options.start;

  // A failure of the source (a file that cannot be decoded further) ends the rows instead of
  // cancelling the writes in flight: everything read before it is written and checkpointed, then
  // the source's error is thrown. Only the caller's signal cancels writes.
  let sourceFailure: { error: unknown } | undefined;
  async function* rows(): AsyncGenerator<BulkChunk> {
    let sent = 0;
    try {
      for await (const chunk of chunks) {
        sent += chunk.rows instanceof PackedRows ? chunk.rows.count : chunk.rows.length;
        positions.push({ sentAfter: sent, checkpoint: chunk.checkpoint, release: chunk.release });
        yield chunk.rows;
      }
    } catch (err) {
      if (options.signal?.aborted) throw err;
      sourceFailure = { error: err };
    }
  }

  const advance = (acked: number): void => {
    let reached: C | undefined;
    while (positions.length > 0 && positions[0]!.sentAfter <= acked) {
      const position = positions.shift()!;
      reached = position.checkpoint;
      position.release?.();
    }
    if (reached === undefined) return;
    current = reached;
    writer.offer(current);
  };

  // After a failure, what was acknowledged before it stays counted: persist it. A checkpoint that
  // cannot be persisted then only makes a retry resend more; the failure thrown is the first one.
  const persistBeforeThrowing = async (acked?: number): Promise<void> => {
    try {
      if (acked !== undefined) advance(acked);
      await writer.flush();
    } catch {
      // Secondary to the failure about to be thrown (see above).
    }
  };
  let result;
  try {
    result = await putter.bulkPutAll(rows(), { maxInFlight: options.maxInFlight, batchMaxRows: options.batchMaxRows, signal: options.signal, onAck: advance });
  } catch (err) {
    await persistBeforeThrowing();
    throw sourceFailure?.error ?? err;
  }
  if (sourceFailure !== undefined) {
    // Every chunk the source handed over before failing is written.
    await persistBeforeThrowing(result.rows);
    throw sourceFailure.error;
  }
  // Trailing chunks without rows (all rejected, expired or filtered) are acknowledged by nothing but the end.
  advance(result.rows);
  await writer.flush();
  return current;
}
