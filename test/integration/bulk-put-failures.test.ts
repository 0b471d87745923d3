import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Key, PackedRowsBuilder, StoreClient, StoreError, type PackedRows } from '../../store/index.js';
import { rejectionOf } from '../helpers/rejection.js';
import { StoreCluster } from '../helpers/store-cluster.js';

/**
 * bulkPutAll with calls in flight when one fails or the caller aborts, against a real node
 * (fsync per batch, so calls stay in flight): the put fails with the first failure or the abort's
 * reason, and every row acknowledged through onAck is stored — none that landed is left uncounted.
 */

const MAX_KEY_BYTES = 64;

function sortedRows(count: number, from = 0): PackedRows {
  const builder = new PackedRowsBuilder();
  for (let i = from; i < from + count; i++) {
    const key = Buffer.alloc(8);
    key.writeUInt32BE(0x10000000 + i * 8, 0);
    builder.add(key, Buffer.alloc(100, i & 0xff));
  }
  return builder.finish();
}

async function storedCount(client: StoreClient): Promise<number> {
  let total = 0;
  for (const node of await client.stats()) {
    if (!node.result.ok) throw node.result.error;
    for (const p of node.result.partitions) total += p.approxCount;
  }
  return total;
}

describe('bulkPutAll failures with calls in flight (two real nodes, a partition each)', () => {
  let cluster: StoreCluster;
  let client: StoreClient;

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 2, partitions: 2, extraArgs: ['--max-key-bytes', String(MAX_KEY_BYTES)] });
    client = new StoreClient({ seeds: cluster.seeds });
  });

  afterAll(async () => {
    client?.close();
    await cluster?.close();
  });

  it('a call refused by the node does not cancel the calls before it: they land and are counted exactly', async () => {
    const good = 8000;
    // The good rows go to the first partition's node; this one, sorted after them and too long,
    // to the second node, whose queue is empty: its call fails while the first node still writes.
    const bad = new PackedRowsBuilder();
    bad.add(Buffer.alloc(MAX_KEY_BYTES + 1, 0xff), Buffer.from('x'));
    let acked = 0;
    const err = await rejectionOf(
      client.bulkPutAll([sortedRows(good), bad.finish()], { batchMaxRows: 200, maxInFlight: 8, onAck: (rows) => (acked = rows) }),
      StoreError,
    );
    expect(err.code).toMatch(/^STORE_INVALID/);
    expect(acked).toBe(good);
    expect(await storedCount(client)).toBe(good);
  });

  it('an abort while calls are in flight fails the put with the abort reason, and what was acknowledged is stored', async () => {
    const before = await storedCount(client);
    const controller = new AbortController();
    const reason = new Error('stopped by the caller');
    let acked = 0;
    const err = await rejectionOf(
      client.bulkPutAll([sortedRows(20_000, 100_000)], {
        batchMaxRows: 200,
        maxInFlight: 8,
        signal: controller.signal,
        onAck: (rows) => {
          acked = rows;
          // Abort at the first acknowledgement: the other calls are still in flight.
          controller.abort(reason);
        },
      }),
      Error,
    );
    expect(err).toBe(reason);
    expect(acked).toBeGreaterThan(0);
    expect(acked).toBeLessThan(20_000);
    // Cancelled calls may have landed too (resent on resume, upserts); acknowledged ones surely did.
    expect((await storedCount(client)) - before).toBeGreaterThanOrEqual(acked);
  });

  it('an abort once every call is sent fails the put with the abort reason, not a cancelled call', async () => {
    const controller = new AbortController();
    const reason = new Error('stopped after the last call went out');
    let acked = 0;
    // 16 calls of 200 rows, all in flight at once: the source is done when the first is acknowledged.
    const err = await rejectionOf(
      client.bulkPutAll([sortedRows(3200, 200_000)], {
        batchMaxRows: 200,
        maxInFlight: 16,
        signal: controller.signal,
        onAck: (rows) => {
          acked = rows;
          controller.abort(reason);
        },
      }),
      Error,
    );
    expect(err).toBe(reason);
    expect(acked).toBeGreaterThan(0);
  });

  it('a signal aborted before the put fails it with the reason and sends nothing', async () => {
    const reason = new Error('aborted before');
    const rows = sortedRows(100, 900_000);
    const err = await rejectionOf(client.bulkPutAll([rows], { signal: AbortSignal.abort(reason) }), Error);
    expect(err).toBe(reason);
    for (const i of [0, 50, 99]) expect(await client.get(Key.fromBytes(rows.key(i)))).toBeUndefined();
  });
});
