import { LatestWriter } from '../common/index.js';
import type { BulkRowInput } from './partition-store.js';
import type { StoreClient } from './store-client.js';

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
 * `bulkPutAll` over a stream of chunks that each carry a checkpoint: after every acknowledged
 * stretch, the checkpoint of the last chunk written whole is persisted. Counts in a checkpoint come
 * from its chunk, not from the acknowledgement, so rows acknowledged beyond the last whole chunk —
 * sent again on resume — are never counted twice. Resolves the last checkpoint, persisted.
 */
export async function bulkPutCheckpointed<C>(client: StoreClient, chunks: AsyncIterable<CheckpointedChunk<C>>, options: CheckpointedPutOptions<C>): Promise<C> {
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
    result = await client.bulkPutAll(rows(), { maxInFlight: options.maxInFlight, batchMaxRows: options.batchMaxRows, signal: options.signal, onAck: advance });
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
