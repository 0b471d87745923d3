import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchBufferPool } from '../../common/index.js';
import { PACKED_ROWS_FORMAT, PackedRows, StoreClient, bulkPutCheckpointed, type CheckpointedChunk } from '../../store/index.js';
import { StoreCluster } from '../helpers/store-cluster.js';

// Ingest builds packed batches in pooled buffers and reuses a buffer once its chunk is released.
// bulkPutCheckpointed must release a chunk only when every call that carries any of its rows has
// landed: here each release overwrites the chunk's memory at once (what reuse would do), so a
// release one call too early puts garbage in the store, or a batch the node refuses. Each call is
// serialized as it starts, so only rows sent again read the chunk's memory later: the nodes take at
// most 20,000 bytes per batch, so every 600-row call is refused (STORE_BATCH_TOO_LARGE) and sent
// again in halves, a round trip after its chunk was handed over.

const CHUNKS = 40;
const ROWS_PER_CHUNK = 1500;
const VALUE_BYTES = 48;

/** Keys spread over the whole key space, so chunks straddle the partitions' boundaries. */
function keyOf(i: number): Buffer {
  const key = Buffer.alloc(6);
  key.writeUInt32BE(Math.floor((i * 2 ** 32) / (CHUNKS * ROWS_PER_CHUNK)), 0);
  key.writeUInt16BE(i % 65536, 4);
  return key;
}

function valueOf(i: number): Buffer {
  return Buffer.from(`row ${i} `.padEnd(VALUE_BYTES, String.fromCharCode(97 + (i % 26))));
}

describe('bulkPutCheckpointed: chunk release (buffer reuse)', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 2, partitions: 5, extraArgs: ['--max-batch-bytes', '20000'] });
    client = new StoreClient({ seeds: cluster.seeds });
  });
  afterAll(async () => {
    client?.close();
    await cluster?.close();
  });

  it('releases every chunk, each only after all its rows are acknowledged; pooled memory overwritten on release never reaches the store', async () => {
    const pool = new BatchBufferPool();
    const allocations = new Set<ArrayBufferLike>();
    let released = 0;
    async function* chunks(): AsyncGenerator<CheckpointedChunk<number>> {
      for (let c = 0; c < CHUNKS; c++) {
        const n = ROWS_PER_CHUNK;
        const slab = pool.take(n * 8 + n * (6 + VALUE_BYTES));
        allocations.add(slab.buffer);
        const lengths = slab.subarray(0, n * 8);
        const data = slab.subarray(n * 8);
        let at = 0;
        for (let r = 0; r < n; r++) {
          const i = c * n + r;
          lengths.writeUInt32LE(6, r * 8);
          lengths.writeUInt32LE(VALUE_BYTES, r * 8 + 4);
          at += keyOf(i).copy(data, at);
          at += valueOf(i).copy(data, at);
        }
        const rows = PackedRows.fromMessage({ format: PACKED_ROWS_FORMAT, count: n, lengths, data, meta: Buffer.alloc(0) });
        yield {
          rows,
          checkpoint: c + 1,
          release: () => {
            released++;
            slab.fill(0xee);
            pool.give(slab);
          },
        };
      }
    }
    // 600 rows (32,400 bytes) per call, refused and split: a chunk goes out as six or more calls.
    const last = await bulkPutCheckpointed(client, chunks(), { start: 0, maxInFlight: 4, batchMaxRows: 600, persist: async () => {} });
    expect(last).toBe(CHUNKS);
    expect(released).toBe(CHUNKS);
    // The pool did its job: far fewer allocations than chunks.
    expect(allocations.size).toBeLessThan(CHUNKS / 2);

    let seen = 0;
    for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) {
      for (const e of batch) {
        const i = Number(e.value.toString('latin1').split(' ')[1]);
        expect(e.key.equals(keyOf(i)), `key of row ${i}`).toBe(true);
        expect(e.value.equals(valueOf(i)), `value of row ${i}`).toBe(true);
        seen++;
      }
    }
    expect(seen).toBe(CHUNKS * ROWS_PER_CHUNK);
  });
});
