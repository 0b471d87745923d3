import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Key, NodeConnection, PartitionMap, RangeDigest, StoreClient } from '../../store/index.js';
import { StoreCluster } from '../helpers/store-cluster.js';

// A Checksum call digests at most `max_entries` entries and says where to go on, so the checksum
// of a partition of any size never runs into an RPC deadline. Real node, real LevelDB.
const ROWS = 5000;
const EMPTY = Buffer.alloc(0);
const keyOf = (i: number): Buffer => Buffer.from(`k${String(i).padStart(6, '0')}`);

let cluster: StoreCluster;
let client: StoreClient;
let conn: NodeConnection;

beforeAll(async () => {
  cluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
  client = new StoreClient({ seeds: cluster.seeds });
  conn = new NodeConnection(cluster.nodes[0]!.address);
  const rows = Array.from({ length: ROWS }, (_, i) => ({ key: keyOf(i), value: Buffer.from(`value ${i}`) }));
  expect((await client.bulkPutAll([rows])).rows).toBe(ROWS);
}, 60_000);

afterAll(async () => {
  conn?.close();
  client?.close();
  await cluster?.close();
});

describe('Checksum in pages (max_entries)', () => {
  it('a call stops after max_entries entries with next just past the last one digested; following next covers every entry once, equal to the whole range in one call', async () => {
    const map = PartitionMap.fromProto(await conn.unary('getPartitionMap', {}, { deadline: Date.now() + 5000 }));
    const first = map.partitions[0]!;
    const inFirst = Array.from({ length: ROWS }, (_, i) => keyOf(i)).filter((k) => first.end.length === 0 || Buffer.compare(k, first.end) < 0);
    expect(inFirst.length).toBeGreaterThan(1000);

    const whole = await conn.unary('checksum', { mapVersion: map.version, start: EMPTY, end: first.end, includeEtag: true, snapshotId: '', replica: false, maxEntries: 0 }, { deadline: Date.now() + 5000 });
    expect(Number(whole.count)).toBe(inFirst.length);

    const total = new RangeDigest();
    const pages: number[] = [];
    let start = EMPTY;
    for (;;) {
      const page = await conn.unary('checksum', { mapVersion: map.version, start, end: first.end, includeEtag: true, snapshotId: '', replica: false, maxEntries: 1000 }, { deadline: Date.now() + 5000 });
      pages.push(Number(page.count));
      total.merge(RangeDigest.fromHex(page.digest, Number(page.count)));
      if (Number(page.count) === 1000) expect(Buffer.from(page.next).equals(Buffer.concat([inFirst[pages.reduce((a, b) => a + b, 0) - 1]!, Buffer.from([0])]))).toBe(true);
      if (page.next.length === 0) break;
      start = Buffer.from(page.next);
    }
    expect(pages.slice(0, -1).every((n) => n === 1000)).toBe(true);
    expect(pages.reduce((a, b) => a + b, 0)).toBe(inFirst.length);
    expect(total.toHex()).toBe(whole.digest);
  });

  it('the client\'s checksum across partitions is the same in pages of 700 as in one call per partition, with and without etags', async () => {
    for (const includeEtag of [false, true]) {
      const paged = await client.checksum(EMPTY, EMPTY, { includeEtag, pageEntries: 700 });
      const whole = await client.checksum(EMPTY, EMPTY, { includeEtag, pageEntries: 0 });
      expect(paged.count).toBe(ROWS);
      expect(paged.toHex()).toBe(whole.toHex());
    }
    // A sub-range that starts and ends inside pages.
    const some = await client.checksum(keyOf(123), keyOf(4321), { pageEntries: 500 });
    expect(some.count).toBe(4321 - 123);
    expect(some.toHex()).toBe((await client.checksum(keyOf(123), keyOf(4321), { pageEntries: 0 })).toHex());
  });

  it('pages read from one snapshot: writes after it do not show in any page', async () => {
    const before = await client.checksum(EMPTY, EMPTY, { pageEntries: 0 });
    const snapshots = await client.openSnapshots({ leaseMs: 60_000 });
    try {
      await client.put(Key.fromBytes(keyOf(10)), Buffer.from('changed after the snapshot'));
      await client.put(Key.fromBytes(keyOf(ROWS + 1)), Buffer.from('new after the snapshot'));
      const paged = await client.checksum(EMPTY, EMPTY, { pageEntries: 300, snapshots: snapshots.leases });
      expect(paged.count).toBe(ROWS);
      expect(paged.toHex()).toBe(before.toHex());
      expect((await client.checksum(EMPTY, EMPTY, { pageEntries: 300 })).count).toBe(ROWS + 1);
    } finally {
      await client.releaseSnapshots(snapshots.leases);
    }
  });
});
