import { afterEach, describe, expect, it } from 'vitest';
import { NodeConnection, StoreClient } from '../../store/index.js';
import { StoreCluster } from '../helpers/store-cluster.js';

const MiB = 1024 * 1024;
/** The nodes' default byte bound of one scan message (DEFAULT_SCAN_BATCH_MAX_BYTES). */
const BOUND = 4 * MiB;
const ENTRY_OVERHEAD = 32;

let cluster: StoreCluster | undefined;
let client: StoreClient | undefined;
let conn: NodeConnection | undefined;

afterEach(async () => {
  client?.close();
  conn?.close();
  await cluster?.close();
  cluster = undefined;
});

function bytesOf(entries: ReadonlyArray<{ key: Buffer; value: Buffer }>): number {
  return entries.reduce((sum, e) => sum + e.key.length + e.value.length + ENTRY_OVERHEAD, 0);
}

describe('scan batches are bounded by bytes as well as entries', () => {
  it('a scan of 3 MiB values comes in several messages, each within the byte bound; ScanPage pages by bytes; small entries still come 1000 to a message', async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 1 });
    client = new StoreClient({ seeds: cluster.seeds });
    const map = await client.map();
    const large = Array.from({ length: 10 }, (_, i) => ({ key: Buffer.from([0x10, i]), value: Buffer.alloc(3 * MiB, i + 1) }));
    const small = Array.from({ length: 2500 }, (_, i) => ({ key: Buffer.from([0x20, i >> 8, i & 0xff]), value: Buffer.alloc(100, i & 0xff) }));
    await client.bulkPutAll([large, small], { batchMaxBytes: 7 * MiB });
    conn = new NodeConnection(cluster.seeds[0]!);

    // Scan stream over the large values, asking for up to 10,000 entries per message.
    const messages: Array<Array<{ key: Buffer; value: Buffer }>> = [];
    for await (const batch of conn.scan({ mapVersion: map.version, start: Buffer.from([0x10]), end: Buffer.from([0x11]), limit: 0, batchSize: 10_000, snapshotId: '' }, { deadline: Date.now() + 30_000 })) {
      if (batch.entries.length > 0) messages.push(batch.entries);
    }
    expect(messages.length).toBeGreaterThan(1);
    for (const m of messages) expect(bytesOf(m)).toBeLessThanOrEqual(BOUND);
    const streamed = messages.flat();
    expect(streamed.map((e) => e.key.toString('hex'))).toEqual(large.map((e) => e.key.toString('hex')));
    for (const [i, e] of streamed.entries()) expect(e.value.equals(large[i]!.value)).toBe(true);

    // ScanPage: one page holds at most the byte bound; `next` continues exactly where it stopped.
    const paged: Array<{ key: Buffer; value: Buffer }> = [];
    let start: Buffer = Buffer.from([0x10]);
    let pages = 0;
    while (start.length > 0 && Buffer.compare(start, Buffer.from([0x11])) < 0) {
      const page = await conn.unary('scanPage', { mapVersion: map.version, start, end: Buffer.from([0x11]), limit: 0, batchSize: 10_000, snapshotId: '' }, { deadline: Date.now() + 30_000 });
      expect(bytesOf(page.entries)).toBeLessThanOrEqual(BOUND);
      paged.push(...page.entries);
      pages++;
      start = page.next;
      expect(pages).toBeLessThanOrEqual(large.length + 1);
    }
    expect(pages).toBeGreaterThan(1);
    expect(paged.map((e) => e.key.toString('hex'))).toEqual(large.map((e) => e.key.toString('hex')));

    // Small entries are still batched by count.
    const counts: number[] = [];
    for await (const batch of conn.scan({ mapVersion: map.version, start: Buffer.from([0x20]), end: Buffer.from([0x21]), limit: 0, batchSize: 1000, snapshotId: '' }, { deadline: Date.now() + 30_000 })) {
      if (batch.entries.length > 0) counts.push(batch.entries.length);
    }
    expect(counts).toEqual([1000, 1000, 500]);
  });
});
