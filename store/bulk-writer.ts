import { setMaxListeners } from 'node:events';
import { LatestWriter } from '../common/index.js';
import type { BulkRow } from './proto/gen/shardpipe/store/v1/store.js';
import { partitionContains, type Partition } from './partition-map.js';
import type { BulkRowInput, WriteTiming } from './partition-store.js';
import { StoreError } from './store-errors.js';
import type { CallOptions, StoreRouter } from './store-router.js';

/** Options of `bulkPutAll`. */
export interface BulkPutOptions extends CallOptions {
  /** BulkInsert calls in flight at once, 1–64. Default 4. */
  maxInFlight?: number;
  /** Rows per call at most. Default 1000. */
  batchMaxRows?: number;
  /** Key plus value bytes per call at most. Default 4 MiB (must not exceed the nodes' limit). */
  batchMaxBytes?: number;
  /**
   * Called whenever the acknowledged prefix of the input grows: `rows` and `bytes` count every
   * input row from the start that is durably written. The place to checkpoint.
   */
  onAck?: (rows: number, bytes: number) => void;
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
}

/**
 * Writes a sorted stream of rows with BulkInsert: cuts it at partition boundaries (of the router's
 * map), keeps up to `maxInFlight` calls in flight, resends the unaccepted rest of a batch (to wherever
 * the map now routes it), and splits a batch a node finds too large. Fails on the first final error,
 * after letting the calls in flight settle.
 */
export async function bulkPutAll(
  router: StoreRouter,
  source: AsyncIterable<readonly BulkRowInput[]> | Iterable<readonly BulkRowInput[]>,
  options: BulkPutOptions = {},
): Promise<BulkPutResult> {
  const maxInFlight = options.maxInFlight ?? 4;
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 64) throw new RangeError(`maxInFlight must be 1–64, got ${maxInFlight}`);
  const batchMaxRows = options.batchMaxRows ?? 1000;
  const batchMaxBytes = options.batchMaxBytes ?? 4 * 1024 * 1024;
  if (!Number.isInteger(batchMaxRows) || batchMaxRows < 1) throw new RangeError(`batchMaxRows must be ≥ 1, got ${batchMaxRows}`);
  if (!Number.isInteger(batchMaxBytes) || batchMaxBytes < 1) throw new RangeError(`batchMaxBytes must be ≥ 1, got ${batchMaxBytes}`);

  const abort = new AbortController();
  // Every call in flight (and its retries' sleeps) listens on this signal.
  setMaxListeners(maxInFlight * 4 + 16, abort.signal);
  const onOuterAbort = (): void => abort.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const callOptions: CallOptions = { signal: abort.signal, timeoutMs: options.timeoutMs };
  const result: BulkPutResult = { rows: 0, bytes: 0, calls: 0, partialAccepts: 0, serverTiming: { queueMs: 0, writeMs: 0, fsyncMs: 0 } };
  const inFlight = new Set<Promise<void>>();
  const order: Pending[] = [];
  let firstError: unknown;

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

  const send = async (rows: BulkRow[]): Promise<void> => {
    let rest = rows;
    while (rest.length > 0) {
      abort.signal.throwIfAborted();
      let response;
      try {
        result.calls++;
        const batch = rest;
        response = await router.routed(batch[0]!.key, callOptions, (conn, mapVersion, limits) => conn.unary('bulkInsert', { mapVersion, rows: batch }, limits));
      } catch (err) {
        if (err instanceof StoreError && err.code === 'STORE_BATCH_TOO_LARGE' && rest.length > 1) {
          const half = rest.length >> 1;
          await send(rest.slice(0, half));
          rest = rest.slice(half);
          continue;
        }
        throw err;
      }
      if (response.accepted === 0) {
        throw new StoreError('STORE_INTERNAL', `node accepted no row of a batch starting at its own key (${rest.length} rows)`);
      }
      if (response.timing) {
        result.serverTiming.queueMs += response.timing.queueMs;
        result.serverTiming.writeMs += response.timing.writeMs;
        result.serverTiming.fsyncMs += response.timing.fsyncMs;
      }
      if (response.accepted < rest.length) result.partialAccepts++;
      rest = rest.slice(response.accepted);
    }
  };

  const launch = async (rows: BulkRow[], bytes: number): Promise<void> => {
    const pending: Pending = { rows: rows.length, bytes, done: false };
    order.push(pending);
    const fail = (err: unknown): void => {
      firstError ??= err;
      abort.abort(err);
    };
    const task = send(rows).then(() => {
      pending.done = true;
      // onAck may throw (a checkpoint that cannot be kept): that fails the put like any call would,
      // instead of rejecting a promise nobody may be waiting on any more.
      try {
        acknowledge();
      } catch (err) {
        fail(err);
      }
    }, fail);
    const tracked = task.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    if (inFlight.size >= maxInFlight) await Promise.race(inFlight);
  };

  try {
    let partition: Partition | undefined;
    let batch: BulkRow[] = [];
    let batchBytes = 0;
    for await (const chunk of source) {
      for (const row of chunk) {
        const size = row.key.length + row.value.length;
        if (partition === undefined || batch.length >= batchMaxRows || batchBytes + size > batchMaxBytes || !partitionContains(partition, row.key)) {
          if (batch.length > 0) await launch(batch, batchBytes);
          if (firstError !== undefined) throw firstError;
          batch = [];
          batchBytes = 0;
          if (partition === undefined || !partitionContains(partition, row.key)) partition = (await router.map(callOptions)).lookup(row.key);
        }
        batch.push({ key: row.key, value: row.value, etag: row.etag ?? 0, updatedAtMs: row.updatedAtMs ?? 0, expiresAtMs: row.expiresAtMs ?? 0 });
        batchBytes += size;
      }
    }
    if (batch.length > 0) await launch(batch, batchBytes);
    await Promise.all(inFlight);
    if (firstError !== undefined) throw firstError;
    return result;
  } catch (err) {
    // The first failure is the one reported: the cancellations it causes below must not replace it.
    firstError ??= err;
    abort.abort(err);
    await Promise.allSettled(inFlight);
    throw firstError;
  } finally {
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
}

/** What writes a sorted stream of row chunks with `bulkPutAll`: a StoreClient. */
export interface BulkPutter {
  bulkPutAll(source: AsyncIterable<readonly BulkRowInput[]> | Iterable<readonly BulkRowInput[]>, options?: BulkPutOptions): Promise<BulkPutResult>;
}

/** Rows to write, and where the caller stands once they (and all before them) are acknowledged. */
export interface CheckpointedChunk<C> {
  rows: readonly BulkRowInput[];
  checkpoint: C;
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
  const positions: Array<{ sentAfter: number; checkpoint: C }> = [];
  let current = options.start;

  // A failure of the source (a file that cannot be decoded further) ends the rows instead of
  // cancelling the writes in flight: everything read before it is written and checkpointed, then
  // the source's error is thrown. Only the caller's signal cancels writes.
  let sourceFailure: { error: unknown } | undefined;
  async function* rows(): AsyncGenerator<readonly BulkRowInput[]> {
    let sent = 0;
    try {
      for await (const chunk of chunks) {
        sent += chunk.rows.length;
        positions.push({ sentAfter: sent, checkpoint: chunk.checkpoint });
        yield chunk.rows;
      }
    } catch (err) {
      if (options.signal?.aborted) throw err;
      sourceFailure = { error: err };
    }
  }

  const advance = (acked: number): void => {
    let reached: C | undefined;
    while (positions.length > 0 && positions[0]!.sentAfter <= acked) reached = positions.shift()!.checkpoint;
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
