import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PartitionStore, RangeDigest, StoreError, type BulkRowInput, type PartitionStoreOptions, type StoredEntry } from '../../store/index.js';
import { encodedRecordLength } from '../../store/record.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';
import { rejectionOf } from '../helpers/rejection.js';

const EMPTY: Buffer = Buffer.alloc(0);
const b = (text: string) => Buffer.from(text, 'latin1');
const START_MS = 1_700_000_000_000;

let tmp: TempDir;
let fakeNow: number;
let opened: PartitionStore[];

beforeEach(async () => {
  tmp = await makeTempDir('shardpipe-partition-store-');
  fakeNow = START_MS;
  opened = [];
});

afterEach(async () => {
  for (const store of opened) await store.close();
  await tmp.remove();
});

/** Opens the partition in this test's temp dir: no background sweeper, the controllable clock. */
async function openStore(options: PartitionStoreOptions = {}, name = 'p0'): Promise<PartitionStore> {
  const store = await PartitionStore.open(tmp.sub(name), { sweepIntervalMs: 0, now: () => fakeNow, ...options });
  opened.push(store);
  return store;
}

async function scanAll(store: PartitionStore, start = EMPTY, end = EMPTY, options: { limit?: number; batchSize?: number } = {}): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for await (const batch of store.scan(start, end, options)) out.push(...batch);
  return out;
}

async function batchesOf(store: PartitionStore, start: Buffer, end: Buffer, options: { limit?: number; batchSize?: number }): Promise<StoredEntry[][]> {
  const out: StoredEntry[][] = [];
  for await (const batch of store.scan(start, end, options)) out.push(batch);
  return out;
}

const rejection = (promise: Promise<unknown>): Promise<StoreError> => rejectionOf(promise, StoreError);

/** 'settled' when `promise` settles within `ms`, otherwise 'pending'. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<'settled' | 'pending'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'pending'>((resolve) => {
    timer = setTimeout(() => resolve('pending'), ms);
  });
  const settled = promise.then(
    () => 'settled' as const,
    () => 'settled' as const,
  );
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('PartitionStore basics', () => {
  it('put, get, delete', async () => {
    const store = await openStore();
    expect(await store.get(b('a'))).toBeUndefined();

    const written = await store.put(b('a'), b('one'));
    expect(written).toEqual({ value: b('one'), etag: 1, updatedAtMs: START_MS, expiresAtMs: 0 });
    const read = await store.get(b('a'));
    expect(read?.value.toString()).toBe('one');
    expect(read?.etag).toBe(1);
    expect(read?.updatedAtMs).toBe(START_MS);
    expect(read?.expiresAtMs).toBe(0);

    fakeNow += 5;
    const second = await store.put(b('a'), b('two'));
    expect(second.etag).toBe(2);
    expect((await store.get(b('a')))?.value.toString()).toBe('two');
    expect((await store.get(b('a')))?.updatedAtMs).toBe(START_MS + 5);
    expect((await store.stats()).count).toBe(1);

    expect(await store.delete(b('a'))).toBe(true);
    expect(await store.get(b('a'))).toBeUndefined();
    expect(await store.delete(b('a'))).toBe(false);
    expect(await store.delete(b('never'))).toBe(false);
    const stats = await store.stats();
    expect(stats.count).toBe(0);
    expect(stats.logicalBytes).toBe(0);
    expect(stats.lastWriteMs).toBe(START_MS + 5);
  });

  it('keeps binary keys and values intact, including an empty value', async () => {
    const store = await openStore();
    const key = Buffer.from([0x00, 0xff, 0x10]);
    await store.put(key, Buffer.from([0xde, 0xad, 0x00]));
    await store.put(b('empty'), EMPTY);
    expect((await store.get(key))?.value).toEqual(Buffer.from([0xde, 0xad, 0x00]));
    expect((await store.get(b('empty')))?.value.length).toBe(0);
    expect(await store.get(Buffer.from([0x00, 0xff]))).toBeUndefined();
  });

  it('keeps separate partitions separate', async () => {
    const one = await openStore({}, 'one');
    const two = await openStore({}, 'two');
    await one.put(b('k'), b('1'));
    expect(await two.get(b('k'))).toBeUndefined();
    expect((await two.stats()).count).toBe(0);
  });

  it('rejects writes after close with STORE_CLOSED', async () => {
    const store = await openStore();
    await store.put(b('a'), b('1'));
    await store.close();
    await store.close(); // idempotent
    expect((await rejection(store.put(b('b'), b('2')))).code).toBe('STORE_CLOSED');
    expect((await rejection(store.delete(b('a')))).code).toBe('STORE_CLOSED');
    expect((await rejection(store.bulkInsert([{ key: b('c'), value: b('3') }]))).code).toBe('STORE_CLOSED');
    expect((await rejection(store.sweepExpired())).code).toBe('STORE_CLOSED');
  });
});

describe('PartitionStore compare-and-set', () => {
  it('succeeds with the current etag and fails with a stale one, reporting currentEtag', async () => {
    const store = await openStore();
    const first = await store.put(b('k'), b('v1'));
    const second = await store.put(b('k'), b('v2'), { expectedEtag: first.etag });
    expect(second.etag).toBeGreaterThan(first.etag);

    const err = await rejection(store.put(b('k'), b('v3'), { expectedEtag: first.etag }));
    expect(err.code).toBe('STORE_ETAG_MISMATCH');
    expect(err.currentEtag).toBe(second.etag);
    expect(err.message).toBe(`etag mismatch: expected ${first.etag}, current ${second.etag}`);
    expect(err.grpcStatus).toBe(10); // ABORTED
    expect((await store.get(b('k')))?.value.toString()).toBe('v2');
    // A failed CAS does not use up an etag.
    expect(store.lastEtag).toBe(second.etag);
  });

  it('expectedEtag 0 means the key must not exist', async () => {
    const store = await openStore();
    const created = await store.put(b('k'), b('v1'), { expectedEtag: 0 });
    expect(created.etag).toBe(1);

    const err = await rejection(store.put(b('k'), b('v2'), { expectedEtag: 0 }));
    expect(err.code).toBe('STORE_ETAG_MISMATCH');
    expect(err.currentEtag).toBe(created.etag);
    expect((await store.get(b('k')))?.value.toString()).toBe('v1');

    expect(await store.delete(b('k'))).toBe(true);
    expect((await store.put(b('k'), b('v3'), { expectedEtag: 0 })).value.toString()).toBe('v3');
  });

  it('a non-zero expectedEtag on an absent key fails with currentEtag 0', async () => {
    const store = await openStore();
    const err = await rejection(store.put(b('absent'), b('v'), { expectedEtag: 5 }));
    expect(err.code).toBe('STORE_ETAG_MISMATCH');
    expect(err.currentEtag).toBe(0);
    expect(err.message).toBe('etag mismatch: expected 5, current 0 (key absent)');
    expect(await store.get(b('absent'))).toBeUndefined();
    expect((await store.stats()).count).toBe(0);
  });

  it('an expired key counts as absent for expectedEtag', async () => {
    const store = await openStore();
    const temp = await store.put(b('k'), b('old'), { ttlMs: 100 });
    fakeNow += 100;
    expect((await rejection(store.put(b('k'), b('x'), { expectedEtag: temp.etag }))).currentEtag).toBe(0);
    const fresh = await store.put(b('k'), b('new'), { expectedEtag: 0 });
    expect(fresh.expiresAtMs).toBe(0);
    expect((await store.get(b('k')))?.value.toString()).toBe('new');
    expect((await store.stats()).count).toBe(1);
  });

  it('delete honours expectedEtag', async () => {
    const store = await openStore();
    const rec = await store.put(b('k'), b('v'));
    const err = await rejection(store.delete(b('k'), rec.etag + 1));
    expect(err.code).toBe('STORE_ETAG_MISMATCH');
    expect(err.currentEtag).toBe(rec.etag);
    expect(await store.get(b('k'))).toBeDefined();
    expect(await store.delete(b('k'), rec.etag)).toBe(true);
    expect(await store.get(b('k'))).toBeUndefined();
    expect(await store.delete(b('k'), 0)).toBe(false);
  });

  it('CAS inside one group commit sees the earlier writes of the group', async () => {
    const store = await openStore();
    // Issued together, these are committed as one group; each must see the ones before it.
    const results = await Promise.allSettled([
      store.put(b('k'), b('1'), { expectedEtag: 0 }),
      store.put(b('k'), b('2'), { expectedEtag: 0 }), // fails: created by the first
      store.put(b('k'), b('3'), { expectedEtag: 1 }), // succeeds: etag 1 is the first
      store.delete(b('k'), 1), // fails: now etag 2
      store.delete(b('k'), 2), // succeeds
      store.put(b('k'), b('4'), { expectedEtag: 0 }), // succeeds: deleted just before
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect((await store.get(b('k')))?.value.toString()).toBe('4');
    expect((await store.get(b('k')))?.etag).toBe(3);
    expect((await store.stats()).count).toBe(1);
  });
});

describe('PartitionStore etags', () => {
  it('strictly increase across keys, overwrites and concurrent writes', async () => {
    const store = await openStore();
    const seen: number[] = [];
    for (let i = 0; i < 20; i++) seen.push((await store.put(b(`k${i % 3}`), b(String(i)))).etag);
    await store.delete(b('k0'));
    seen.push((await store.put(b('k0'), b('again'))).etag);
    // Concurrent puts share a batch; their etags follow the order they were issued in.
    const concurrent = await Promise.all(Array.from({ length: 30 }, (_, i) => store.put(b(`c${i % 4}`), b(String(i)))));
    seen.push(...concurrent.map((r) => r.etag));
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]!);
    expect(store.lastEtag).toBe(seen[seen.length - 1]);
    expect(new Set(seen).size).toBe(seen.length);
  });

  it('200 concurrent CAS read-modify-write increments on one key end at exactly 200', async () => {
    const store = await openStore();
    const key = b('counter');
    let conflicts = 0;
    async function increment(): Promise<void> {
      for (;;) {
        const current = await store.get(key);
        const n = current === undefined ? 0 : Number(current.value.toString());
        try {
          await store.put(key, b(String(n + 1)), { expectedEtag: current?.etag ?? 0 });
          return;
        } catch (err) {
          if (!(err instanceof StoreError) || err.code !== 'STORE_ETAG_MISMATCH') throw err;
          conflicts++;
        }
      }
    }
    await Promise.all(Array.from({ length: 200 }, () => increment()));
    const final = await store.get(key);
    expect(final?.value.toString()).toBe('200');
    // One etag per successful write; failed CAS attempts use none.
    expect(final?.etag).toBe(200);
    expect(store.lastEtag).toBe(200);
    expect((await store.stats()).count).toBe(1);
    expect(conflicts).toBeGreaterThan(0); // the increments really did contend
  });
});

describe('PartitionStore TTL', () => {
  it('an expired entry reads as absent immediately, and is counted until swept', async () => {
    const store = await openStore();
    const rec = await store.put(b('t'), b('v'), { ttlMs: 1000 });
    await store.put(b('keep'), b('v'));
    expect(rec.expiresAtMs).toBe(START_MS + 1000);

    fakeNow = START_MS + 999;
    expect((await store.get(b('t')))?.value.toString()).toBe('v');
    expect((await scanAll(store)).map((e) => e.key.toString())).toEqual(['keep', 't']);

    fakeNow = START_MS + 1000;
    expect(await store.get(b('t'))).toBeUndefined();
    expect((await scanAll(store)).map((e) => e.key.toString())).toEqual(['keep']);
    expect((await store.stats()).count).toBe(2);

    expect(await store.sweepExpired()).toBe(1);
    expect((await store.stats()).count).toBe(1);
    expect(await store.sweepExpired()).toBe(0);
    expect((await store.stats()).count).toBe(1);
    expect(await store.get(b('t'))).toBeUndefined();
    expect(await store.get(b('keep'))).toBeDefined();
  });

  it('sweeping before the expiry deletes nothing', async () => {
    const store = await openStore();
    await store.put(b('t'), b('v'), { ttlMs: 1000 });
    fakeNow += 999;
    expect(await store.sweepExpired()).toBe(0);
    expect(await store.get(b('t'))).toBeDefined();
    expect((await store.stats()).count).toBe(1);
  });

  it('a sweep leaves alone a key rewritten since (with another or no expiry) or deleted', async () => {
    const store = await openStore();
    await store.put(b('rewritten-no-ttl'), b('v'), { ttlMs: 100 });
    await store.put(b('rewritten-longer'), b('v'), { ttlMs: 100 });
    await store.put(b('deleted'), b('v'), { ttlMs: 100 });
    await store.put(b('rewritten-no-ttl'), b('v2'));
    await store.put(b('rewritten-longer'), b('v2'), { ttlMs: 10_000 });
    expect(await store.delete(b('deleted'))).toBe(true);
    expect((await store.stats()).count).toBe(2);

    fakeNow += 200;
    expect(await store.sweepExpired()).toBe(0);
    expect((await store.get(b('rewritten-no-ttl')))?.value.toString()).toBe('v2');
    expect((await store.get(b('rewritten-longer')))?.value.toString()).toBe('v2');
    expect((await store.stats()).count).toBe(2);

    fakeNow += 10_000;
    expect(await store.sweepExpired()).toBe(1);
    expect(await store.get(b('rewritten-longer'))).toBeUndefined();
    expect((await store.stats()).count).toBe(1);
  });

  it('deleting or overwriting an expired, unswept entry keeps the count exact', async () => {
    const store = await openStore();
    await store.put(b('a'), b('v'), { ttlMs: 10 });
    await store.put(b('b'), b('v'), { ttlMs: 10 });
    fakeNow += 10;
    expect(await store.delete(b('a'))).toBe(false); // not live, but its stored entry goes
    await store.put(b('b'), b('v2'));
    expect((await store.stats()).count).toBe(1);
    expect(await store.sweepExpired()).toBe(0);
    expect((await store.stats()).count).toBe(1);
    expect((await scanAll(store)).map((e) => e.key.toString())).toEqual(['b']);
  });
});

describe('PartitionStore exact count', () => {
  it('stats().count matches the live keys after a mix of bulk inserts, overwrites, duplicates, deletes, TTL and sweep', async () => {
    const store = await openStore();
    // Model of what is stored: key -> expiry (0 = none). Expired entries stay until swept.
    const model = new Map<string, { value: string; expiresAtMs: number }>();
    const key = (i: number) => `k${String(i).padStart(4, '0')}`;
    const liveModel = () => [...model].filter(([, v]) => v.expiresAtMs === 0 || v.expiresAtMs > fakeNow).map(([k]) => k).sort();
    const check = async () => {
      const scanned = await scanAll(store);
      expect(scanned.map((e) => e.key.toString('latin1'))).toEqual(liveModel());
      for (const e of scanned) expect(e.value.toString()).toBe(model.get(e.key.toString('latin1'))!.value);
      expect((await store.stats()).count).toBe(model.size);
      return scanned;
    };

    // 1. Sorted bulk insert into an empty partition.
    const sortedRows: BulkRowInput[] = [];
    for (let i = 0; i < 300; i++) sortedRows.push({ key: b(key(i)), value: b(`v${i}`) });
    await store.bulkInsert(sortedRows);
    for (let i = 0; i < 300; i++) model.set(key(i), { value: `v${i}`, expiresAtMs: 0 });
    expect((await store.stats()).count).toBe(300);
    await check();

    // 2. Sorted bulk overwriting half of them (every even key), plus a few new keys at the end.
    const overwrite: BulkRowInput[] = [];
    for (let i = 0; i < 300; i += 2) overwrite.push({ key: b(key(i)), value: b(`w${i}`) });
    for (let i = 300; i < 310; i++) overwrite.push({ key: b(key(i)), value: b(`w${i}`) });
    await store.bulkInsert(overwrite);
    for (const r of overwrite) model.set(r.key.toString(), { value: r.value.toString(), expiresAtMs: 0 });
    expect((await store.stats()).count).toBe(310);
    await check();

    // 3. Unsorted bulk with duplicate keys (new and existing), and one already-expired row.
    const messy: BulkRowInput[] = [
      { key: b(key(500)), value: b('x1') },
      { key: b(key(7)), value: b('x2') },
      { key: b(key(500)), value: b('x3') },
      { key: b(key(400)), value: b('x4') },
      { key: b(key(7)), value: b('x5') },
      { key: b(key(500)), value: b('x6') },
      { key: b(key(401)), value: b('x7'), expiresAtMs: fakeNow - 1 }, // skipped
      { key: b(key(8)), value: b('x8'), expiresAtMs: fakeNow }, // skipped: expires now
      { key: b(key(402)), value: b('x9'), expiresAtMs: fakeNow + 5000 },
    ];
    await store.bulkInsert(messy);
    for (const r of messy) {
      if (r.expiresAtMs !== undefined && r.expiresAtMs <= fakeNow) continue;
      model.set(r.key.toString(), { value: r.value.toString(), expiresAtMs: r.expiresAtMs ?? 0 });
    }
    expect((await store.stats()).count).toBe(313);
    await check();

    // 4. Deletes: existing, missing, twice.
    for (const i of [1, 3, 5, 7, 9, 999, 3]) {
      const existed = model.has(key(i));
      expect(await store.delete(b(key(i)))).toBe(existed);
      model.delete(key(i));
    }
    await check();

    // 5. TTLs: new keys, overwrites of existing keys with and without TTL, bulk rows with expiry.
    for (let i = 600; i < 620; i++) {
      const rec = await store.put(b(key(i)), b(`t${i}`), { ttlMs: 1000 });
      model.set(key(i), { value: `t${i}`, expiresAtMs: rec.expiresAtMs });
    }
    for (const i of [10, 11, 12]) {
      const rec = await store.put(b(key(i)), b(`t${i}`), { ttlMs: 1500 });
      model.set(key(i), { value: `t${i}`, expiresAtMs: rec.expiresAtMs });
    }
    // Overwrite a TTL key without a TTL: its index entry goes stale.
    await store.put(b(key(600)), b('forever'));
    model.set(key(600), { value: 'forever', expiresAtMs: 0 });
    // Delete a TTL key before it expires.
    expect(await store.delete(b(key(601)))).toBe(true);
    model.delete(key(601));
    const ttlRows: BulkRowInput[] = [];
    for (let i = 700; i < 710; i++) ttlRows.push({ key: b(key(i)), value: b(`e${i}`), expiresAtMs: fakeNow + 800 });
    await store.bulkInsert(ttlRows);
    for (const r of ttlRows) model.set(r.key.toString(), { value: r.value.toString(), expiresAtMs: r.expiresAtMs! });
    await check();

    // 6. Time passes: some expire. Before the sweep they are counted but not read.
    fakeNow += 1200;
    const beforeSweep = await check();
    expect((await store.stats()).count).toBeGreaterThan(beforeSweep.length);
    const expiredCount = model.size - liveModel().length;
    expect(await store.sweepExpired()).toBe(expiredCount);
    for (const [k, v] of [...model]) if (v.expiresAtMs !== 0 && v.expiresAtMs <= fakeNow) model.delete(k);
    const afterSweep = await check();
    const stats = await store.stats();
    expect(stats.count).toBe(afterSweep.length);
    // logicalBytes is exact too: stored key (with namespace byte) + encoded record, per entry.
    expect(stats.logicalBytes).toBe(afterSweep.reduce((sum, e) => sum + e.key.length + 1 + encodedRecordLength(e), 0));

    // 7. The rest expire; everything is swept.
    fakeNow += 10_000;
    expect(await store.sweepExpired()).toBe(3 + 1); // keys 10..12 and key 402
    const final = await scanAll(store);
    expect((await store.stats()).count).toBe(final.length);
  });
  it('stays exact when bulk inserts are queued together (disjoint, overlapping and unsorted batches)', async () => {
    const store = await openStore();
    const rows = (from: number, to: number, tag: string): BulkRowInput[] =>
      Array.from({ length: to - from }, (_, i) => ({ key: b(`k${String(from + i).padStart(4, '0')}`), value: b(`${tag}${from + i}`) }));
    await store.bulkInsert(rows(0, 50, 'seed'));
    // Issued without waiting, so they queue up behind each other and may be grouped.
    const unsorted = [...rows(400, 410, 'u'), ...rows(405, 415, 'u2')].reverse(); // duplicates 405..409
    const timings = await Promise.all([
      store.bulkInsert(rows(100, 200, 'a')), // new, sorted
      store.bulkInsert(rows(200, 300, 'b')), // new, disjoint from the one before
      store.bulkInsert(rows(25, 75, 'c')), // overwrites 25..49, adds 50..74
      store.bulkInsert(rows(150, 250, 'd')), // overlaps the first two
      store.bulkInsert(unsorted),
      store.bulkInsert(rows(300, 320, 'e')),
      store.bulkInsert([]),
    ]);
    expect(timings).toHaveLength(7);
    const scanned = await scanAll(store);
    const expected = new Map<string, string>();
    const apply = (list: BulkRowInput[]) => list.forEach((r) => expected.set(r.key.toString(), r.value.toString()));
    apply(rows(0, 50, 'seed'));
    apply(rows(100, 200, 'a'));
    apply(rows(200, 300, 'b'));
    apply(rows(25, 75, 'c'));
    apply(rows(150, 250, 'd'));
    apply(unsorted);
    apply(rows(300, 320, 'e'));
    expect(scanned.map((e) => [e.key.toString(), e.value.toString()])).toEqual([...expected].sort(([x], [y]) => (x < y ? -1 : 1)));
    const stats = await store.stats();
    expect(stats.count).toBe(expected.size);
    expect(stats.logicalBytes).toBe(scanned.reduce((sum, e) => sum + e.key.length + 1 + encodedRecordLength(e), 0));
    // Etags are still unique, and later batches got higher ones.
    expect(new Set(scanned.map((e) => e.etag)).size).toBe(scanned.length);
    const etagOf = (k: string) => scanned.find((e) => e.key.toString() === k)!.etag;
    expect(etagOf('k0160')).toBeGreaterThan(etagOf('k0120'));
    expect(etagOf('k0310')).toBeGreaterThan(etagOf('k0405'));
  });
});

describe('PartitionStore persistence', () => {
  it('count, logical bytes and the etag sequence survive close and reopen', async () => {
    const store = await openStore();
    for (let i = 0; i < 10; i++) await store.put(b(`k${i}`), b(`v${i}`));
    await store.delete(b('k3'));
    await store.bulkInsert([{ key: b('z'), value: b('bulk'), etag: 50 }]);
    const before = await store.stats();
    const lastEtag = store.lastEtag;
    expect(before.count).toBe(10);
    expect(lastEtag).toBe(50);
    await store.close();

    fakeNow += 1000;
    const reopened = await openStore();
    const after = await reopened.stats();
    expect(after.count).toBe(10);
    expect(after.logicalBytes).toBe(before.logicalBytes);
    expect(after.lastWriteMs).toBe(START_MS);
    expect(reopened.lastEtag).toBe(50);
    expect((await reopened.put(b('k0'), b('new'))).etag).toBe(51);
    expect((await reopened.get(b('z')))?.etag).toBe(50);
    expect((await scanAll(reopened)).length).toBe(10);
  });

  it('expiry index entries survive reopen and are swept afterwards', async () => {
    const store = await openStore();
    await store.put(b('t'), b('v'), { ttlMs: 100 });
    await store.put(b('k'), b('v'));
    await store.close();
    fakeNow += 100;
    const reopened = await openStore();
    expect(await reopened.get(b('t'))).toBeUndefined();
    expect(await reopened.sweepExpired()).toBe(1);
    expect((await reopened.stats()).count).toBe(1);
  });
});

describe('PartitionStore.bulkInsert', () => {
  it('keeps a given etag and updatedAt; the next put gets a higher etag', async () => {
    const store = await openStore();
    await store.put(b('a'), b('1')); // etag 1
    await store.bulkInsert([
      { key: b('b'), value: b('2'), etag: 1000, updatedAtMs: 12345 },
      { key: b('c'), value: b('3') }, // assigned
      { key: b('d'), value: b('4'), etag: 0 }, // 0 = assign
    ]);
    expect(await store.get(b('b'))).toEqual({ value: b('2'), etag: 1000, updatedAtMs: 12345, expiresAtMs: 0 });
    const c = await store.get(b('c'));
    const d = await store.get(b('d'));
    expect(c?.etag).toBeGreaterThan(1000);
    expect(d?.etag).toBeGreaterThan(c!.etag);
    expect(c?.updatedAtMs).toBe(START_MS);
    expect(store.lastEtag).toBe(d!.etag);
    const next = await store.put(b('e'), b('5'));
    expect(next.etag).toBe(d!.etag + 1);
  });

  it('a given etag below the sequence is kept and does not move the sequence back', async () => {
    const store = await openStore();
    for (let i = 0; i < 5; i++) await store.put(b(`k${i}`), b('v'));
    await store.bulkInsert([{ key: b('old'), value: b('v'), etag: 2 }]);
    expect((await store.get(b('old')))?.etag).toBe(2);
    expect(store.lastEtag).toBe(5);
    expect((await store.put(b('x'), b('v'))).etag).toBe(6);
  });

  it('skips rows that are already expired, leaving any stored entry alone', async () => {
    const store = await openStore();
    await store.put(b('existing'), b('keep'));
    await store.bulkInsert([
      { key: b('expired-before'), value: b('x'), expiresAtMs: fakeNow - 1 },
      { key: b('existing'), value: b('x'), expiresAtMs: fakeNow - 1000 },
      { key: b('expires-now'), value: b('x'), expiresAtMs: fakeNow },
      { key: b('later'), value: b('y'), expiresAtMs: fakeNow + 1 },
      { key: b('never'), value: b('z'), expiresAtMs: 0 },
    ]);
    expect((await scanAll(store)).map((e) => e.key.toString())).toEqual(['existing', 'later', 'never']);
    expect((await store.get(b('existing')))?.value.toString()).toBe('keep');
    expect((await store.get(b('later')))?.expiresAtMs).toBe(fakeNow + 1);
    expect((await store.stats()).count).toBe(3);
    fakeNow += 1;
    expect(await store.sweepExpired()).toBe(1);
    expect((await store.stats()).count).toBe(2);
  });

  it('within one unsorted batch the last row for a key wins', async () => {
    const store = await openStore();
    await store.bulkInsert([
      { key: b('b'), value: b('1') },
      { key: b('a'), value: b('2') },
      { key: b('b'), value: b('3') },
    ]);
    expect((await store.get(b('b')))?.value.toString()).toBe('3');
    expect((await store.stats()).count).toBe(2);
  });

  it('reports timings and handles an empty batch', async () => {
    const store = await openStore();
    const timing = await store.bulkInsert([]);
    expect(timing.queueMs).toBeGreaterThanOrEqual(0);
    expect(timing.writeMs).toBeGreaterThanOrEqual(0);
    expect(timing.fsyncMs).toBeGreaterThanOrEqual(0);
    expect((await store.stats()).count).toBe(0);

    // Real work takes time in every phase; a batch queued behind another waits at least for its commit.
    const rows = (tag: string): BulkRowInput[] => Array.from({ length: 2000 }, (_, i) => ({ key: b(`t${String(i).padStart(5, '0')}`), value: Buffer.alloc(200, tag) }));
    // Overlapping key ranges: never grouped into one write, so the second one queues.
    const [first, second] = await Promise.all([store.bulkInsert(rows('a')), store.bulkInsert(rows('b'))]);
    for (const t of [first, second]) {
      expect(t.writeMs).toBeGreaterThan(0);
      expect(t.fsyncMs).toBeGreaterThan(0);
    }
    expect(second.queueMs).toBeGreaterThan(0);
    expect(second.queueMs).toBeGreaterThanOrEqual(first.fsyncMs);
    expect(second.queueMs).toBeGreaterThan(first.queueMs);
    expect((await store.stats()).count).toBe(2000);
    expect((await store.get(b('t00000')))?.value.equals(Buffer.alloc(200, 'b'))).toBe(true);
  });
});

describe('PartitionStore.scan and checksum', () => {
  async function seeded(): Promise<{ store: PartitionStore; live: string[] }> {
    const store = await openStore();
    const keys: Buffer[] = [];
    for (let i = 0; i < 40; i++) keys.push(b(`s${String(i).padStart(2, '0')}`));
    keys.push(Buffer.from([0xff]), Buffer.from([0x00, 0x01]), Buffer.from([0x7a, 0xff]), b('A'));
    // Insert in a scrambled order, some with a short TTL.
    const order = keys.map((k, i) => ({ k, i })).sort((x, y) => ((x.i * 17) % 44) - ((y.i * 17) % 44));
    const expiring = new Set<string>();
    for (const { k, i } of order) {
      const ttl = i % 5 === 0 && i < 40 ? 50 : 0; // only text keys expire
      if (ttl > 0) expiring.add(k.toString('hex'));
      await store.put(k, Buffer.from(`value-${i}`), { ttlMs: ttl });
    }
    fakeNow += 50;
    const live = keys
      .filter((k) => !expiring.has(k.toString('hex')))
      .sort(Buffer.compare)
      .map((k) => k.toString('hex'));
    return { store, live };
  }

  it('returns live entries in bytewise key order, skipping expired ones', async () => {
    const { store, live } = await seeded();
    const all = await scanAll(store);
    expect(all.map((e) => e.key.toString('hex'))).toEqual(live);
    expect(all[0]!.key).toEqual(Buffer.from([0x00, 0x01]));
    expect(all[all.length - 1]!.key).toEqual(Buffer.from([0xff]));
    for (const e of all) expect(e.expiresAtMs).toBe(0);
  });

  it('respects batchSize', async () => {
    const { store, live } = await seeded();
    const batches = await batchesOf(store, EMPTY, EMPTY, { batchSize: 4 });
    expect(batches.length).toBeGreaterThan(1);
    for (const batch of batches) {
      expect(batch.length).toBeGreaterThan(0);
      expect(batch.length).toBeLessThanOrEqual(4);
    }
    expect(batches.flat().map((e) => e.key.toString('hex'))).toEqual(live);
  });

  it('respects limit, with and without batchSize, counting only live entries', async () => {
    const { store, live } = await seeded();
    expect((await scanAll(store, EMPTY, EMPTY, { limit: 10 })).map((e) => e.key.toString('hex'))).toEqual(live.slice(0, 10));
    const batches = await batchesOf(store, EMPTY, EMPTY, { limit: 10, batchSize: 3 });
    for (const batch of batches) expect(batch.length).toBeLessThanOrEqual(3);
    expect(batches.flat().map((e) => e.key.toString('hex'))).toEqual(live.slice(0, 10));
    expect((await scanAll(store, EMPTY, EMPTY, { limit: 1000 })).length).toBe(live.length);
    expect((await scanAll(store, EMPTY, EMPTY, { limit: 0 })).length).toBe(live.length); // 0 = no limit
  });

  it('scans [start, end) only', async () => {
    const { store, live } = await seeded();
    const start = b('s10');
    const end = b('s20');
    const expected = live.filter((h) => Buffer.compare(Buffer.from(h, 'hex'), start) >= 0 && Buffer.compare(Buffer.from(h, 'hex'), end) < 0);
    expect(expected.length).toBeGreaterThan(0);
    expect((await scanAll(store, start, end)).map((e) => e.key.toString('hex'))).toEqual(expected);
    // An empty end is unbounded, an empty start is the beginning.
    expect((await scanAll(store, b('t'))).map((e) => e.key.toString('hex'))).toEqual(['7aff', 'ff']);
    expect((await scanAll(store, EMPTY, b('B'))).map((e) => e.key.toString('hex'))).toEqual(['0001', '41']);
    expect(await scanAll(store, b('m'), b('m'))).toEqual([]);
  });

  it('scans one snapshot: writes during the scan are not seen', async () => {
    const { store, live } = await seeded();
    const seen: string[] = [];
    let wrote = false;
    for await (const batch of store.scan(EMPTY, EMPTY, { batchSize: 5 })) {
      seen.push(...batch.map((e) => e.key.toString('hex')));
      if (!wrote) {
        wrote = true;
        await store.put(b('s99'), b('late'));
        await store.delete(Buffer.from([0xff]));
      }
    }
    expect(seen).toEqual(live);
  });

  it('checksum equals a RangeDigest computed from the scan', async () => {
    const { store } = await seeded();
    await store.put(b('ttl-later'), b('v'), { ttlMs: 60_000 }); // a live entry with an expiry
    const entries = await scanAll(store);
    const expected = new RangeDigest();
    const expectedWithEtag = new RangeDigest();
    for (const e of entries) {
      expected.add(e.key, e.value, e.expiresAtMs);
      expectedWithEtag.add(e.key, e.value, e.expiresAtMs, e.etag);
    }
    const digest = await store.checksum(EMPTY, EMPTY);
    expect(digest.toHex()).toBe(expected.toHex());
    expect(digest.count).toBe(entries.length);
    const withEtag = await store.checksum(EMPTY, EMPTY, { includeEtag: true });
    expect(withEtag.toHex()).toBe(expectedWithEtag.toHex());
    expect(withEtag.toHex()).not.toBe(digest.toHex());

    // Sub-ranges merge to the whole.
    const left = await store.checksum(EMPTY, b('s20'));
    const right = await store.checksum(b('s20'), EMPTY);
    expect(left.count + right.count).toBe(entries.length);
    expect(left.merge(right).toHex()).toBe(digest.toHex());
  });

  it('checksum does not depend on write order or etags', async () => {
    const one = await openStore({}, 'one');
    const two = await openStore({}, 'two');
    const rows = Array.from({ length: 30 }, (_, i) => ({ key: b(`k${i}`), value: b(`v${i}`) }));
    for (const r of rows) await one.put(r.key, r.value);
    await two.put(b('k5'), b('something else'));
    await two.bulkInsert([...rows].reverse());
    expect((await one.checksum(EMPTY, EMPTY)).toHex()).toBe((await two.checksum(EMPTY, EMPTY)).toHex());
    expect((await one.checksum(EMPTY, EMPTY, { includeEtag: true })).toHex()).not.toBe(
      (await two.checksum(EMPTY, EMPTY, { includeEtag: true })).toHex(),
    );
  });
});

describe('PartitionStore write queue', () => {
  // Regression: the drain loop once cleared its "running" flag a few microtasks after its last
  // empty-queue check; a write enqueued in that window started no drain and never settled. A caller
  // awaiting a put through two async layers and then writing again hit the window every time.
  it('a write issued right after a write awaited through two async layers completes', async () => {
    const store = await openStore();
    const putRecord = async (key: string, value: string): Promise<void> => {
      await store.put(b(key), b(value));
    };
    const saveUser = async (key: string, value: string): Promise<void> => {
      await putRecord(key, value);
    };
    await saveUser('a', '1');
    const second = store.put(b('b'), b('2'));
    const outcome = await settlesWithin(second, 2000);
    if (outcome === 'pending') {
      // Un-stick it so the test can clean up: any later write starts a new drain.
      await store.put(b('unstick'), b('x'));
      await second;
    }
    expect(outcome).toBe('settled');
  });

  it('a write issued a few microtasks after a write completes is not stranded', async () => {
    const store = await openStore();
    const stranded: number[] = [];
    for (let hops = 0; hops < 8; hops++) {
      await store.put(b('a'), b(String(hops)));
      for (let i = 0; i < hops; i++) await null;
      const next = store.put(b('b'), b(String(hops)));
      if ((await settlesWithin(next, 500)) === 'pending') {
        stranded.push(hops);
        await store.put(b('unstick'), b('x'));
        await next;
      }
    }
    expect(stranded).toEqual([]);
  });
});

describe('PartitionStore snapshots', () => {
  it('a snapshot keeps reading what was there when it was taken, with its count, until closed', async () => {
    const store = await openStore();
    await store.bulkInsert([{ key: b('a'), value: b('1') }, { key: b('b'), value: b('2') }]);
    const snapshot = await store.openSnapshot();
    await store.put(b('a'), b('changed'));
    await store.delete(b('b'));
    await store.bulkInsert([{ key: b('c'), value: b('3') }]);
    expect(snapshot.count).toBe(2);
    const pinned = [];
    for await (const batch of store.scan(EMPTY, EMPTY, { snapshot })) pinned.push(...batch);
    expect(pinned.map((e) => `${e.key}=${e.value}`)).toEqual(['a=1', 'b=2']);
    const digest = await store.checksum(EMPTY, EMPTY, { snapshot });
    expect(digest.count).toBe(2);
    expect((await scanAll(store)).map((e) => `${e.key}=${e.value}`)).toEqual(['a=changed', 'c=3']);
    await snapshot.close();
    await expect(async () => {
      for await (const _ of store.scan(EMPTY, EMPTY, { snapshot })) void _;
    }).rejects.toThrow();
  });

  it('refuses a snapshot of another partition', async () => {
    const one = await openStore({}, 'one');
    const two = await openStore({}, 'two');
    const snapshot = await one.openSnapshot();
    await expect(async () => {
      for await (const _ of two.scan(EMPTY, EMPTY, { snapshot })) void _;
    }).rejects.toThrow(/another partition/);
    await snapshot.close();
  });
});

describe('PartitionStore.splitKeys', () => {
  function rows(count: number, valueBytes: number): BulkRowInput[] {
    return Array.from({ length: count }, (_, i) => {
      const key = Buffer.alloc(8);
      key.writeUInt32BE(i * 7919, 0);
      key.writeUInt32BE(i, 4);
      return { key, value: Buffer.alloc(valueBytes, i % 251) };
    });
  }

  async function piecesCounts(store: PartitionStore, keys: Buffer[]): Promise<number[]> {
    const bounds = [EMPTY, ...keys, EMPTY];
    const counts: number[] = [];
    for (let i = 0; i + 1 < bounds.length; i++) counts.push((await scanAll(store, bounds[i], bounds[i + 1])).length);
    return counts;
  }

  it('counts a small range exactly and cuts it into equal pieces', async () => {
    const store = await openStore();
    await store.bulkInsert(rows(10_000, 20));
    const split = await store.splitKeys(EMPTY, EMPTY, 4);
    expect(split.approxCount).toBe(10_000);
    expect(split.keys).toHaveLength(3);
    expect(await piecesCounts(store, split.keys)).toEqual([2500, 2500, 2500, 2500]);
  });

  it('cuts a large range by size without a scan: pieces within 10% of equal', async () => {
    const store = await openStore({ syncWrites: false });
    const all = rows(120_000, 200);
    for (let i = 0; i < all.length; i += 10_000) await store.bulkInsert(all.slice(i, i + 10_000));
    const split = await store.splitKeys(EMPTY, EMPTY, 8);
    expect(split.keys).toHaveLength(7);
    expect(Math.abs(split.approxCount - 120_000) / 120_000).toBeLessThan(0.1);
    for (const n of await piecesCounts(store, split.keys)) expect(Math.abs(n - 15_000) / 15_000).toBeLessThan(0.1);
  });

  it('a range with fewer entries than pieces gives fewer keys, all inside the range', async () => {
    const store = await openStore();
    await store.bulkInsert([{ key: b('k1'), value: b('x') }, { key: b('k2'), value: b('x') }]);
    const split = await store.splitKeys(b('k'), b('l'), 10);
    expect(split.keys.length).toBeLessThanOrEqual(2);
    for (const k of split.keys) expect(Buffer.compare(k, b('k')) > 0 && Buffer.compare(k, b('l')) < 0).toBe(true);
  });
});


describe('PartitionStore chain position', () => {
  it('numbers head writes in commit order and persists the position in the same batch: a snapshot and a reopened partition hold exactly it', async () => {
    const store = await openStore();
    expect(store.chainPosition).toEqual({ stream: '', seq: 0 });
    // Head: the partition numbers what it commits; failed writes (a CAS mismatch) take no number.
    const tags = [{ stream: 's1', seq: 0 }, { stream: 's1', seq: 0 }, { stream: 's1', seq: 0 }, { stream: 's1', seq: 0 }];
    const settled = store.writeMany([
      { kind: 'put', key: b('a'), value: b('1'), options: {}, chain: tags[0] },
      { kind: 'put', key: b('b'), value: b('2'), options: { expectedEtag: 99 }, chain: tags[1] },
      { kind: 'delete', key: b('a'), chain: tags[2] },
    ]);
    await Promise.allSettled(settled);
    await store.bulkInsert([{ key: b('c'), value: b('3') }], undefined, tags[3]);
    expect(tags.map((t) => t.seq)).toEqual([1, 0, 2, 3]);
    expect(store.chainPosition).toEqual({ stream: 's1', seq: 3 });
    const snapshot = await store.openSnapshot();
    // A replica's numbers: an older one (re-applied) leaves the position, a new stream replaces it.
    await store.put(b('d'), b('4'), {}, { stream: 's1', seq: 2 });
    expect(store.chainPosition).toEqual({ stream: 's1', seq: 3 });
    await store.delete(b('d'), undefined, { stream: 's2', seq: 1 });
    expect(store.chainPosition).toEqual({ stream: 's2', seq: 1 });
    expect(snapshot.chain).toEqual({ stream: 's1', seq: 3 });
    await snapshot.close();
    await store.close();
    opened.splice(opened.indexOf(store), 1);
    const reopened = await openStore();
    expect(reopened.chainPosition).toEqual({ stream: 's2', seq: 1 });
    expect((await reopened.get(b('c')))?.value.toString()).toBe('3');
  });
});
