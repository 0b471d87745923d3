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

  async function* rows(): AsyncGenerator<readonly BulkRowInput[]> {
    let sent = 0;
    for await (const chunk of chunks) {
      sent += chunk.rows.length;
      positions.push({ sentAfter: sent, checkpoint: chunk.checkpoint });
      yield chunk.rows;
    }
  }

  const advance = (acked: number): void => {
    let reached: C | undefined;
    while (positions.length > 0 && positions[0]!.sentAfter <= acked) reached = positions.shift()!.checkpoint;
    if (reached === undefined) return;
    current = reached;
    writer.offer(current);
  };

  const result = await client.bulkPutAll(rows(), { maxInFlight: options.maxInFlight, batchMaxRows: options.batchMaxRows, signal: options.signal, onAck: advance });
  // Trailing chunks without rows (all rejected, expired or filtered) are acknowledged by nothing but the end.
  advance(result.rows);
  await writer.flush();
  return current;
}
