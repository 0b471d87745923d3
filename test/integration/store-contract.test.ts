import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RangeDigest, StoreError, type BulkRowInput, type Partition, type StoredEntry } from '../../store/index.js';
import { rejectionOf } from '../helpers/rejection.js';
import { StoreCluster } from '../helpers/store-cluster.js';
import { clientTarget, nodeTarget, type StoreTarget } from '../helpers/store-targets.js';

const EMPTY = Buffer.alloc(0);
const failure = (promise: Promise<unknown>): Promise<StoreError> => rejectionOf(promise, StoreError);
const hex = (entries: readonly { key: Buffer }[]): string[] => entries.map((e) => e.key.toString('hex'));
const sortKeys = (keys: readonly Buffer[]): Buffer[] => [...keys].sort(Buffer.compare);

/** Key `i` inside partition `p` (evenly split maps cut at the first two bytes), under namespace `ns`. */
function keyIn(p: Partition, ns: number, i: number): Buffer {
  return Buffer.from([(p.start[0] ?? 0) + 1, ns, i >> 8, i & 0xff]);
}

function digestOf(entries: readonly StoredEntry[], includeEtag: boolean): RangeDigest {
  const digest = new RangeDigest();
  for (const e of entries) digest.add(e.key, e.value, e.expiresAtMs, includeEtag ? e.etag : undefined);
  return digest;
}

/**
 * The store's behaviours, written once and run against every kind of store: one node in-process,
 * a cluster over gRPC through StoreClient. Each test gets a fresh, empty store.
 */
function storeContract<S>(name: string, open: () => Promise<StoreTarget<S>>): void {
  describe(`${name}: the store contract`, () => {
    let store: StoreTarget<S>;
    let parts: readonly Partition[];
    beforeEach(async () => {
      store = await open();
      parts = store.map.partitions;
      expect(parts.length).toBeGreaterThanOrEqual(3);
    });
    afterEach(async () => {
      await store?.close();
    });

    /** Keys 0..n-1 of namespace `ns` in every partition, in key order. */
    const keysEverywhere = (ns: number, n: number): Buffer[] => parts.flatMap((p) => Array.from({ length: n }, (_, i) => keyIn(p, ns, i)));

    it('put, get, overwrite and delete; binary keys and an empty value stay intact', async () => {
      const key = Buffer.from([0x00, 0xff, 0x10]);
      expect(await store.get(key)).toBeUndefined();
      const before = Date.now();
      const first = await store.put(key, Buffer.from([0xde, 0xad, 0x00]));
      expect(first.etag).toBeGreaterThan(0);
      expect(first.updatedAtMs).toBeGreaterThanOrEqual(before);
      expect(first.updatedAtMs).toBeLessThanOrEqual(Date.now());
      expect(first.expiresAtMs).toBe(0);
      expect(await store.get(key)).toEqual(first);

      const second = await store.put(key, Buffer.from('two'));
      expect(second.etag).toBeGreaterThan(first.etag);
      expect((await store.get(key))?.value.toString()).toBe('two');
      expect(await store.get(Buffer.from([0x00, 0xff]))).toBeUndefined();

      const empty = keyIn(parts[1]!, 1, 0);
      await store.put(empty, EMPTY);
      expect((await store.get(empty))?.value.length).toBe(0);

      expect(await store.delete(key)).toBe(true);
      expect(await store.get(key)).toBeUndefined();
      expect(await store.delete(key)).toBe(false);
      expect(await store.delete(keyIn(parts[2]!, 1, 9))).toBe(false);
    });

    it('JSON documents: partial get by pointer, merge patch and JSON Patch on the node, CAS, a failed test and a non-JSON value write nothing', async () => {
      const key = keyIn(parts[2]!, 9, 1);
      const put = await store.put(key, Buffer.from(JSON.stringify({ a: 1, b: { c: 2, d: [1, 2, 3] } })));
      expect(JSON.parse((await store.get(key, ['/b/d/2', '/a', '/none']))!.value.toString())).toEqual({ a: 1, b: { d: [3] } });
      const merged = await store.patch(key, Buffer.from('{"a":null,"b":{"e":5}}'), { ifEtag: put.etag });
      expect(merged.etag).toBeGreaterThan(put.etag);
      expect(JSON.parse(merged.value.toString())).toEqual({ b: { c: 2, d: [1, 2, 3], e: 5 } });
      expect(await store.get(key)).toEqual(merged);
      const stale = await failure(store.patch(key, Buffer.from('{}'), { ifEtag: put.etag }));
      expect(stale.code).toBe('STORE_ETAG_MISMATCH');
      expect(stale.currentEtag).toBe(merged.etag);
      const test = await failure(store.patch(key, Buffer.from('[{"op":"remove","path":"/b/c"},{"op":"test","path":"/b/e","value":6}]'), { mode: 'json-patch' }));
      expect(test.code).toBe('STORE_PATCH_TEST_FAILED');
      const jp = await store.patch(key, Buffer.from('[{"op":"remove","path":"/b/c"},{"op":"test","path":"/b/e","value":5}]'), { mode: 'json-patch', ttlMs: 60_000 });
      expect(JSON.parse(jp.value.toString())).toEqual({ b: { d: [1, 2, 3], e: 5 } });
      expect(jp.expiresAtMs).toBeGreaterThan(Date.now());
      expect(await store.get(key)).toEqual(jp);
      const plain = keyIn(parts[2]!, 9, 2);
      const raw = await store.put(plain, Buffer.from([0xff, 0x00]));
      expect((await failure(store.patch(plain, Buffer.from('{}')))).code).toBe('STORE_NOT_JSON');
      expect((await failure(store.get(plain, ['/a']))).code).toBe('STORE_NOT_JSON');
      expect(await store.get(plain)).toEqual(raw);
      expect((await failure(store.patch(keyIn(parts[2]!, 9, 3), Buffer.from('{}')))).code).toBe('STORE_NOT_FOUND');
    });

    it('etag compare-and-set: the current etag wins, a stale one fails naming the current etag, 0 means absent', async () => {
      const key = keyIn(parts[0]!, 2, 1);
      const missing = await failure(store.put(key, Buffer.from('x'), { expectedEtag: 7 }));
      expect(missing.code).toBe('STORE_ETAG_MISMATCH');
      expect(missing.currentEtag).toBe(0);

      const created = await store.put(key, Buffer.from('v1'), { expectedEtag: 0 });
      const again = await failure(store.put(key, Buffer.from('v1b'), { expectedEtag: 0 }));
      expect(again.code).toBe('STORE_ETAG_MISMATCH');
      expect(again.currentEtag).toBe(created.etag);

      const updated = await store.put(key, Buffer.from('v2'), { expectedEtag: created.etag });
      expect(updated.etag).toBeGreaterThan(created.etag);
      const stale = await failure(store.put(key, Buffer.from('v3'), { expectedEtag: created.etag }));
      expect(stale.code).toBe('STORE_ETAG_MISMATCH');
      expect(stale.retryable).toBe(false);
      expect(stale.currentEtag).toBe(updated.etag);
      expect((await store.get(key))?.value.toString()).toBe('v2');

      const staleDelete = await failure(store.delete(key, { expectedEtag: created.etag }));
      expect(staleDelete.code).toBe('STORE_ETAG_MISMATCH');
      expect(staleDelete.currentEtag).toBe(updated.etag);
      expect(await store.delete(key, { expectedEtag: updated.etag })).toBe(true);
      expect(await store.get(key)).toBeUndefined();
    });

    it('an entry with a TTL reads as absent once it expires: get, scan, checksum, CAS and delete agree', async () => {
      const ttlMs = 1500;
      const short = keyIn(parts[1]!, 3, 1);
      const kept = keyIn(parts[1]!, 3, 2);
      const written = await store.put(short, Buffer.from('soon gone'), { ttlMs });
      await store.put(kept, Buffer.from('stays'));
      expect(written.expiresAtMs).toBe(written.updatedAtMs + ttlMs);
      expect((await store.get(short))?.expiresAtMs).toBe(written.expiresAtMs);

      // Expiry is a matter of the clock: wait until it has passed the entry's expiry.
      await sleep(Math.max(0, written.expiresAtMs - Date.now() + 20));
      expect(await store.get(short)).toBeUndefined();
      expect(hex(await store.scan(EMPTY, EMPTY))).toEqual(hex([{ key: kept }]));
      expect((await store.checksum(EMPTY, EMPTY)).count).toBe(1);
      const recreated = await store.put(short, Buffer.from('back'), { expectedEtag: 0 });
      expect(recreated.expiresAtMs).toBe(0);
      expect((await store.get(short))?.value.toString()).toBe('back');
      expect(await store.delete(short)).toBe(true);
      expect((await store.stats()).get(parts[1]!.id)?.count).toBe(1);
    });

    it('scan: bytewise key order across partitions, [start, end) bounds, limit and batch size', async () => {
      const keys = keysEverywhere(4, 20);
      // Written in an order unlike key order.
      for (const [i, key] of keys.entries()) if (i % 2 === 1) await store.put(key, Buffer.from(`v${i}`));
      for (const [i, key] of keys.entries()) if (i % 2 === 0) await store.put(key, Buffer.from(`v${i}`));
      const sorted = sortKeys(keys);

      const all = await store.scan(EMPTY, EMPTY);
      expect(hex(all)).toEqual(hex(sorted.map((key) => ({ key }))));
      expect(all.every((e) => e.value.toString() === `v${keys.findIndex((k) => k.equals(e.key))}`)).toBe(true);
      expect(hex(await store.scan(EMPTY, EMPTY, { batchSize: 1 }))).toEqual(hex(all));

      // A range from inside partition 0 to inside partition 2: start included, end excluded.
      const from = sorted[5]!;
      const to = sorted[sorted.length - 5]!;
      const inRange = sorted.filter((k) => Buffer.compare(k, from) >= 0 && Buffer.compare(k, to) < 0);
      expect(hex(await store.scan(from, to))).toEqual(hex(inRange.map((key) => ({ key }))));
      expect(hex(await store.scan(from, to, { limit: 25, batchSize: 7 }))).toEqual(hex(inRange.slice(0, 25).map((key) => ({ key }))));
      // A range that starts on a partition boundary and ends on the next one holds that partition only.
      const middle = await store.scan(parts[1]!.start, parts[2]!.start);
      expect(hex(middle)).toEqual(hex(sorted.filter((k) => k[0] === keyIn(parts[1]!, 0, 0)[0]).map((key) => ({ key }))));

      const empty = await failure(store.scan(to, from));
      expect(empty.code).toBe('STORE_INVALID_ARGUMENT');
    });

    it('bulk insert: one call writes the longest prefix inside its first partition; upserts keep counts exact; given etags are kept', async () => {
      const keys = keysEverywhere(5, 30);
      const rows: BulkRowInput[] = keys.map((key, i) => ({ key, value: Buffer.from(`row-${i}`) }));
      const perPartition = parts.map((p) => keys.filter((k) => store.map.lookup(k).id === p.id).length);
      let rest = rows;
      for (const expected of perPartition) {
        const { accepted } = await store.bulkInsert(rest);
        expect(accepted).toBe(expected);
        rest = rest.slice(accepted);
      }
      expect(rest).toHaveLength(0);
      const stats = await store.stats();
      for (const [i, p] of parts.entries()) expect(stats.get(p.id)?.count, `partition ${p.id}`).toBe(perPartition[i]);

      // Upsert partition 1's rows: new values, one row with a given etag and time, and a duplicate
      // key in the batch, whose last row wins.
      const p1 = rows.filter((r) => store.map.lookup(r.key).id === parts[1]!.id);
      const given = { etag: 4242, updatedAtMs: 1_700_000_000_000 };
      const upsert: BulkRowInput[] = [
        ...p1.map((r, i) => ({ key: r.key, value: Buffer.from(`new-${i}`), ...(i === 3 ? given : {}) })),
        { key: p1[0]!.key, value: Buffer.from('last wins') },
      ];
      expect((await store.bulkInsert(upsert)).accepted).toBe(upsert.length);
      expect((await store.get(p1[0]!.key))?.value.toString()).toBe('last wins');
      expect((await store.get(p1[1]!.key))?.value.toString()).toBe('new-1');
      expect(await store.get(p1[3]!.key)).toMatchObject(given);
      const after = await store.stats();
      for (const [i, p] of parts.entries()) expect(after.get(p.id)?.count, `partition ${p.id}`).toBe(perPartition[i]);
      expect((await store.scan(EMPTY, EMPTY)).length).toBe(keys.length);
    });

    it('checksum: equals the digest of the scanned entries, over all and over a range across partitions; etags count only when asked', async () => {
      const keys = keysEverywhere(6, 15);
      for (const [i, key] of keys.entries()) await store.put(key, Buffer.from(`c${i}`));
      const all = await store.scan(EMPTY, EMPTY);
      expect((await store.checksum(EMPTY, EMPTY)).toHex()).toBe(digestOf(all, false).toHex());
      expect((await store.checksum(EMPTY, EMPTY, { includeEtag: true })).toHex()).toBe(digestOf(all, true).toHex());
      expect((await store.checksum(EMPTY, EMPTY)).count).toBe(keys.length);

      const sorted = sortKeys(keys);
      const [from, to] = [sorted[3]!, sorted[sorted.length - 3]!];
      const range = await store.checksum(from, to);
      expect(range.toHex()).toBe(digestOf(await store.scan(from, to), false).toHex());
      expect(range.count).toBe(sorted.length - 6);

      // Rewriting the same values changes the etags only.
      const before = { plain: (await store.checksum(EMPTY, EMPTY)).toHex(), withEtag: (await store.checksum(EMPTY, EMPTY, { includeEtag: true })).toHex() };
      await store.put(keys[0]!, Buffer.from('c0'));
      expect((await store.checksum(EMPTY, EMPTY)).toHex()).toBe(before.plain);
      expect((await store.checksum(EMPTY, EMPTY, { includeEtag: true })).toHex()).not.toBe(before.withEtag);
    });

    it('snapshots: reads from them see the data as it was, with its counts, until released', async () => {
      const keys = keysEverywhere(7, 10);
      for (const [i, key] of keys.entries()) await store.put(key, Buffer.from(`s${i}`));
      const then = await store.scan(EMPTY, EMPTY);
      const thenDigest = (await store.checksum(EMPTY, EMPTY, { includeEtag: true })).toHex();
      const { snapshots, rows } = await store.openSnapshots(60_000);
      for (const p of parts) expect(rows.get(p.id), `partition ${p.id}`).toBe(keys.filter((k) => store.map.lookup(k).id === p.id).length);

      await store.put(keys[0]!, Buffer.from('changed'));
      await store.delete(keys[keys.length - 1]!);
      await store.put(keyIn(parts[1]!, 7, 500), Buffer.from('new'));

      const seen = await store.scan(EMPTY, EMPTY, { snapshots });
      expect(hex(seen)).toEqual(hex(then));
      expect(seen.map((e) => e.value.toString())).toEqual(then.map((e) => e.value.toString()));
      expect((await store.checksum(EMPTY, EMPTY, { includeEtag: true, snapshots })).toHex()).toBe(thenDigest);
      const now = await store.scan(EMPTY, EMPTY);
      expect(now.length).toBe(then.length);
      expect(now.find((e) => e.key.equals(keys[0]!))?.value.toString()).toBe('changed');

      await store.releaseSnapshots(snapshots);
      expect((await failure(store.scan(EMPTY, EMPTY, { snapshots }))).code).toBe('STORE_SNAPSHOT_NOT_FOUND');
    });

    it('stats: exact entry counts per partition and logical bytes that follow value sizes', async () => {
      const empty = await store.stats();
      for (const p of parts) expect(empty.get(p.id)).toEqual({ count: 0, logicalBytes: 0 });

      const keys = keysEverywhere(8, 12);
      for (const key of keys) await store.put(key, Buffer.alloc(10, 1));
      const written = await store.stats();
      for (const p of parts) expect(written.get(p.id)?.count).toBe(12);
      const bytesOf = (s: Map<number, { logicalBytes: number }>, p: Partition): number => s.get(p.id)!.logicalBytes;
      expect(bytesOf(written, parts[0]!)).toBeGreaterThan(12 * 10);

      // Growing every value of partition 0 by 100 bytes adds exactly 1200 logical bytes there.
      for (const key of keys.filter((k) => store.map.lookup(k).id === parts[0]!.id)) await store.put(key, Buffer.alloc(110, 2));
      const grown = await store.stats();
      expect(bytesOf(grown, parts[0]!)).toBe(bytesOf(written, parts[0]!) + 1200);
      expect(bytesOf(grown, parts[1]!)).toBe(bytesOf(written, parts[1]!));
      expect(grown.get(parts[0]!.id)?.count).toBe(12);

      for (const key of keys.slice(0, 5)) await store.delete(key);
      const after = await store.stats();
      expect([...after.values()].reduce((s, x) => s + x.count, 0)).toBe(keys.length - 5);
      for (const key of keys.slice(5)) await store.delete(key);
      for (const p of parts) expect((await store.stats()).get(p.id)).toEqual({ count: 0, logicalBytes: 0 });
    });
  });
}

// One line per kind of store.
storeContract('one StoreNode in-process', nodeTarget);
storeContract('a 2-node cluster over gRPC through StoreClient', () => clientTarget());
storeContract('chains of 3 replicas on 3 nodes over gRPC (writes at the heads, reads at the tails)', () =>
  clientTarget(StoreCluster.start({ nodes: 3, partitions: 3, replicas: 3, extraArgs: ['--no-sync'] })),
);
