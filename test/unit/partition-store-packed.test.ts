import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PackedRows, PackedRowsBuilder, PartitionStore, type StoredEntry } from '../../store/index.js';
import { encodedRecordLength } from '../../store/record.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const EMPTY = Buffer.alloc(0);
const NOW = 1_700_000_000_000;

let tmp: TempDir;
let opened: PartitionStore[];

beforeEach(async () => {
  tmp = await makeTempDir('shardpipe-partition-packed-');
  opened = [];
});

afterEach(async () => {
  for (const store of opened) await store.close();
  await tmp.remove();
});

async function openStore(): Promise<PartitionStore> {
  const store = await PartitionStore.open(tmp.sub('p0'), { sweepIntervalMs: 0, now: () => NOW });
  opened.push(store);
  return store;
}

async function scanAll(store: PartitionStore): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for await (const batch of store.scan(EMPTY, EMPTY)) out.push(...batch);
  return out;
}

/** What count and logicalBytes must be for the entries a scan sees. */
function expectedStats(entries: StoredEntry[]): { count: number; logicalBytes: number } {
  return { count: entries.length, logicalBytes: entries.reduce((n, e) => n + e.key.length + 1 + encodedRecordLength(e), 0) };
}

function packed(keys: number[], value: (k: number) => string, meta?: (k: number) => { expiresAtMs?: number; etag?: number }): PackedRows {
  const builder = new PackedRowsBuilder();
  for (const k of keys) builder.add(Buffer.from(`k${String(k).padStart(5, '0')}`), Buffer.from(value(k)), meta?.(k));
  return builder.finish();
}

const range = (from: number, to: number, step = 1): number[] => Array.from({ length: Math.ceil((to - from) / step) }, (_, i) => from + i * step);

describe('PartitionStore bulk inserts of packed rows', () => {
  it('keeps counts and logical bytes exact when a load overwrites keys below the largest one, also after a reopen', async () => {
    let store = await openStore();
    await store.bulkInsert(packed(range(0, 1000, 2), (k) => `first-${k}`));
    // Entirely above every stored key (nothing to overwrite), then overlapping and below.
    await store.bulkInsert(packed(range(2000, 2500), (k) => `above-${k}`));
    await store.bulkInsert(packed(range(500, 1500), (k) => `second-${k}-longer`));
    let entries = await scanAll(store);
    expect(entries.length).toBe(250 + 1000 + 500);
    let stats = await store.stats();
    expect({ count: stats.count, logicalBytes: stats.logicalBytes }).toEqual(expectedStats(entries));

    // A reopened partition knows its largest key again: an overwrite of existing keys is counted as one.
    await store.close();
    opened = [];
    store = await openStore();
    await store.bulkInsert(packed(range(2400, 2600), (k) => `third-${k}`));
    entries = await scanAll(store);
    expect(entries.length).toBe(250 + 1000 + 500 + 100);
    stats = await store.stats();
    expect({ count: stats.count, logicalBytes: stats.logicalBytes }).toEqual(expectedStats(entries));
    expect(entries.find((e) => e.key.toString() === 'k02450')?.value.toString()).toBe('third-2450');
  });

  it('unsorted rows with duplicates: the later row wins and is counted once; expired rows are skipped', async () => {
    const store = await openStore();
    await store.bulkInsert(packed([5, 3, 9], (k) => `old-${k}`));
    const rows = packed([9, 1, 3, 1, 7, 8], (k) => `new-${k}`, (k) => (k === 8 ? { expiresAtMs: NOW - 1 } : k === 7 ? { expiresAtMs: NOW + 60_000, etag: 77 } : {}));
    expect(rows.isStrictlySorted()).toBe(false);
    await store.bulkInsert(rows);
    const entries = await scanAll(store);
    expect(entries.map((e) => `${e.key.toString()}=${e.value.toString()}`)).toEqual(['k00001=new-1', 'k00003=new-3', 'k00005=old-5', 'k00007=new-7', 'k00009=new-9']);
    expect(entries.find((e) => e.key.toString() === 'k00007')).toMatchObject({ etag: 77, expiresAtMs: NOW + 60_000 });
    const stats = await store.stats();
    expect({ count: stats.count, logicalBytes: stats.logicalBytes }).toEqual(expectedStats(entries));
  });

  it('writes the same entries for row objects and for their packed form', async () => {
    const store = await openStore();
    const objects = range(0, 300).map((k) => ({ key: Buffer.from(`o${k}`), value: Buffer.alloc(k % 90, k), etag: k % 2 === 0 ? 0 : 500 + k }));
    await store.bulkInsert(objects);
    const viaObjects = await scanAll(store);
    await store.bulkInsert(PackedRows.fromRows(objects.map((r) => ({ ...r, key: Buffer.concat([Buffer.from('p'), r.key]) }))));
    const viaPacked = (await scanAll(store)).filter((e) => e.key[0] === 0x70);
    // Kept etags are the rows' own; assigned ones come from the sequence (later for the second load).
    const kept = new Map(objects.map((r) => [r.key.toString(), r.etag]));
    const view = (e: StoredEntry, key: string): unknown[] => [key, e.value.toString('hex'), kept.get(key)! > 0 ? e.etag : 'assigned'];
    expect(viaPacked.map((e) => view(e, e.key.subarray(1).toString()))).toEqual(viaObjects.map((e) => view(e, e.key.toString())));
    for (const e of viaPacked) if (kept.get(e.key.subarray(1).toString()) === 0) expect(e.etag).toBeGreaterThan(799);
  });

  it('keeps every row its own bytes while rows share scratch memory: key and record lengths inside and beyond the scratch slabs, expiry entries, two partitions at once', async () => {
    const store = await openStore();
    const other = await PartitionStore.open(tmp.sub('p1'), { sweepIntervalMs: 0, now: () => NOW });
    opened.push(other);
    // Lengths cross the 4 KiB key and 16 KiB record slabs both ways, and repeat (cached views are reused).
    const keyLengths = [1, 17, 4095, 4096, 30, 4087, 4088, 17, 2];
    const valueLengths = [0, 100, 16 * 1024 - 18, 16 * 1024 - 17, 20_000, 100, 16 * 1024 - 26, 3, 100];
    const rowsFor = (prefix: number): Array<{ key: Buffer; value: Buffer; expiresAtMs?: number }> =>
      keyLengths.map((length, i) => {
        const key = Buffer.alloc(length, 0x41 + i);
        key[0] = prefix;
        if (length > 1) key[1] = i;
        return { key, value: Buffer.alloc(valueLengths[i]!, (prefix * 16 + i) & 0xff), ...(i % 3 === 1 ? { expiresAtMs: NOW + 1000 + i } : {}) };
      });
    const a = rowsFor(0x10);
    const b = rowsFor(0x20);
    await Promise.all([store.bulkInsert(PackedRows.fromRows(a)), other.bulkInsert(PackedRows.fromRows(b))]);
    for (const [partition, rows] of [[store, a], [other, b]] as const) {
      for (const row of rows) {
        const got = await partition.get(row.key);
        expect(got?.value.equals(row.value), `key of ${row.key.length} bytes`).toBe(true);
        expect(got?.expiresAtMs).toBe(row.expiresAtMs ?? 0);
      }
      const entries = await scanAll(partition);
      expect(entries.length).toBe(new Set(rows.map((r) => r.key.toString('hex'))).size);
      const stats = await partition.stats();
      expect({ count: stats.count, logicalBytes: stats.logicalBytes }).toEqual(expectedStats(entries));
    }
    // The expiry index entries name the right keys: a sweep after they are due removes exactly those rows.
    const later = await PartitionStore.open(tmp.sub('p0-later'), { sweepIntervalMs: 0, now: () => NOW + 60_000 });
    opened.push(later);
    await later.bulkInsert(PackedRows.fromRows(a.map((r) => ({ ...r, expiresAtMs: r.expiresAtMs === undefined ? undefined : NOW + 60_000 + 5 }))));
    expect(await later.sweepExpired()).toBe(0);
    const sweeper = await reopenAt(later, tmp.sub('p0-later'), NOW + 60_010);
    expect(await sweeper.sweepExpired()).toBe(a.filter((r) => r.expiresAtMs !== undefined).length);
    expect((await scanAll(sweeper)).map((e) => e.key.toString('hex'))).toEqual(
      a.filter((r) => r.expiresAtMs === undefined).map((r) => r.key.toString('hex')).sort(),
    );
  });

  it('values over 32 bytes come back byte for byte: batches of growing size, one over 4 MiB, grouped queued batches, a slice, expiring rows', async () => {
    const store = await openStore();
    const written = new Map<string, { value: Buffer; expiresAtMs: number }>();
    // Every value distinct in every byte position, so a value taken from another row, another batch or a stale copy shows.
    let seed = 1;
    const valueOf = (length: number): Buffer => {
      const value = Buffer.allocUnsafe(length);
      for (let b = 0; b < length; b++) value[b] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
      return value;
    };
    const batch = (from: number, count: number, length: (i: number) => number, expiresAtMs?: (i: number) => number): PackedRows => {
      const builder = new PackedRowsBuilder();
      for (let i = 0; i < count; i++) {
        const key = Buffer.from(`r${String(from + i).padStart(8, '0')}`);
        const value = valueOf(length(i));
        const expires = expiresAtMs?.(i) ?? 0;
        builder.add(key, value, expires > 0 ? { expiresAtMs: expires } : undefined);
        written.set(key.toString('latin1'), { value, expiresAtMs: expires });
      }
      return builder.finish();
    };
    await store.bulkInsert(batch(0, 10, () => 100));
    // Far larger than the first batch (scratch views cached per length are reused across batches).
    await store.bulkInsert(batch(100, 5000, (i) => 33 + (i % 400)));
    // Over 4 MiB of rows in one batch.
    await store.bulkInsert(batch(10_000, 21_000, () => 200));
    // A slice of a batch (its offsets start past 0), and rows with an expiry (a longer record header).
    const whole = batch(40_000, 300, (i) => 40 + i, (i) => (i % 4 === 0 ? NOW + 10_000 + i : 0));
    await store.bulkInsert(whole.slice(17, 260));
    for (let i = 0; i < 300; i++) if (i < 17 || i >= 260) written.delete(`r${String(40_000 + i).padStart(8, '0')}`);
    // Queued together, so they share one group; lengths around the loop bound and past the record scratch.
    await Promise.all([
      store.bulkInsert(batch(50_000, 200, (i) => [32, 33, 64, 1000][i % 4]!)),
      store.bulkInsert(batch(51_000, 3, () => 17_000)),
      store.bulkInsert(batch(52_000, 400, (i) => 100 + (i % 7))),
    ]);
    const entries = await scanAll(store);
    expect(entries.length).toBe(written.size);
    let mismatches = 0;
    for (const e of entries) {
      const want = written.get(e.key.toString('latin1'));
      if (want === undefined || !want.value.equals(e.value) || want.expiresAtMs !== e.expiresAtMs) mismatches++;
    }
    expect(mismatches).toBe(0);
    const stats = await store.stats();
    expect({ count: stats.count, logicalBytes: stats.logicalBytes }).toEqual(expectedStats(entries));
  });
});

/** Closes `store` and opens its directory again with the clock at `nowMs`. */
async function reopenAt(store: PartitionStore, dir: string, nowMs: number): Promise<PartitionStore> {
  await store.close();
  opened = opened.filter((s) => s !== store);
  const reopened = await PartitionStore.open(dir, { sweepIntervalMs: 0, now: () => nowMs });
  opened.push(reopened);
  return reopened;
}
