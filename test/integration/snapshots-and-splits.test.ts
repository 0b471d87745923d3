import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Key, RangeDigest, StoreClient, StoreError, type StoredEntry } from '../../store/index.js';
import { StoreCluster, sortedRows } from '../helpers/store-cluster.js';

const ALL = Buffer.alloc(0);

async function collect(scan: AsyncIterable<StoredEntry[]>): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for await (const batch of scan) out.push(...batch);
  return out;
}

describe('snapshots, split keys and shard plans through gRPC on a 3-node cluster', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  const ROWS = 20_000;

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 3, partitions: 6 });
    client = new StoreClient({ seeds: [cluster.seeds[0]!] });
    await client.bulkPutAll(sortedRows(ROWS));
  });

  afterAll(async () => {
    client?.close();
    await cluster?.close();
  });

  it('scans and checksums read the pinned snapshots: later writes, overwrites and deletes are invisible', async () => {
    const before = await client.checksum(ALL, ALL, { includeEtag: true });
    const set = await client.openSnapshots({ leaseMs: 60_000 });
    expect(set.leases).toHaveLength(6);
    expect(set.leases.reduce((s, l) => s + l.rows, 0)).toBe(ROWS);
    try {
      const rows = sortedRows(ROWS)[0]!;
      await client.put(Key.fromBytes(rows[0]!.key), Buffer.from('overwritten'));
      await client.delete(Key.fromBytes(rows[1]!.key));
      await client.put(Key.fromUtf8('zz-new-key'), Buffer.from('new'));

      const pinned = await collect(client.scanAll(ALL, ALL, { snapshots: set.leases, batchSize: 999 }));
      expect(pinned).toHaveLength(ROWS);
      const digest = new RangeDigest();
      for (const e of pinned) digest.add(e.key, e.value, e.expiresAtMs, e.etag);
      expect(digest.toHex()).toBe(before.toHex());
      expect((await client.checksum(ALL, ALL, { includeEtag: true, snapshots: set.leases })).toHex()).toBe(before.toHex());
      expect((await client.checksum(ALL, ALL, { includeEtag: true })).toHex()).not.toBe(before.toHex());
    } finally {
      await client.releaseSnapshots(set.leases);
    }
    const gone = await collect(client.scanAll(ALL, ALL, { snapshots: set.leases })).catch((err: unknown) => err);
    expect(gone).toBeInstanceOf(StoreError);
    expect((gone as StoreError).code).toBe('STORE_SNAPSHOT_NOT_FOUND');
  });

  it('a lease that is not renewed runs out and the node releases the snapshot; a renewed one stays', async () => {
    const kept = await client.openSnapshots({ leaseMs: 5000 });
    const lapsed = await client.openSnapshots({ leaseMs: 1000 });
    // Reading does not renew, so polling with a checksum shows when the node let the lease go.
    const deadline = Date.now() + 10_000;
    let error: unknown;
    while (Date.now() < deadline && error === undefined) {
      error = await client.checksum(ALL, ALL, { snapshots: lapsed.leases }).then(
        () => undefined,
        (err: unknown) => err,
      );
      if (error === undefined) await sleep(200);
    }
    expect(error).toBeInstanceOf(StoreError);
    expect((error as StoreError).code).toBe('STORE_SNAPSHOT_NOT_FOUND');
    await client.renewSnapshots(kept.leases, 5000);
    expect((await client.checksum(ALL, ALL, { snapshots: kept.leases })).count).toBe(ROWS);
    await client.releaseSnapshots(kept.leases);
  });

  it('refuses leases outside 1 s – 24 h with INVALID_ARGUMENT', async () => {
    const err = await client.openSnapshots({ leaseMs: 10 }).catch((e: unknown) => e);
    expect((err as StoreError).code).toBe('STORE_INVALID_ARGUMENT');
    expect((err as StoreError).message).toMatch(/lease/);
  });

  it('split keys of a partition fall inside it and cut it into about equal pieces', async () => {
    const map = await client.map();
    const partition = map.partitions[2]!;
    const keys = await client.splitKeys(partition.start, partition.end, 4);
    expect(keys).toHaveLength(3);
    const bounds = [partition.start, ...keys, partition.end];
    const counts: number[] = [];
    for (let i = 0; i + 1 < bounds.length; i++) counts.push((await collect(client.scanAll(bounds[i]!, bounds[i + 1]!))).length);
    const total = counts.reduce((s, n) => s + n, 0);
    for (const n of counts) expect(Math.abs(n - total / 4)).toBeLessThanOrEqual(1);
  });

  it('plans shards that cover the keyspace once and hold the rows the plan says', async () => {
    const shards = await client.planShards({ targetRows: 1500 });
    expect(shards[0]!.start.length).toBe(0);
    expect(shards[shards.length - 1]!.end.length).toBe(0);
    let total = 0;
    for (let i = 0; i < shards.length; i++) {
      if (i > 0) expect(shards[i]!.start.equals(shards[i - 1]!.end)).toBe(true);
      const actual = (await collect(client.scanAll(shards[i]!.start, shards[i]!.end))).length;
      total += actual;
      expect(Math.abs(actual - 1500) / 1500, `shard ${i} holds ${actual} rows`).toBeLessThanOrEqual(0.25);
    }
    // The first test deleted one row and added one.
    expect(total).toBe(ROWS);
  });
});
