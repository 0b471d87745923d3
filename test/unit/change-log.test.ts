import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { PartitionStore, parseChangeLogRetention, type ChangesSince, type PartitionStoreOptions } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// The change log of a partition (store/change-log.ts) on a real LevelDB: what it records for chain
// writes, what a fast sync reads from it, and how it is trimmed by keys and by age.
const b = (text: string): Buffer => Buffer.from(text, 'latin1');
const START_MS = 1_700_000_000_000;

let tmp: TempDir;
let fakeNow: number;
let opened: PartitionStore[];

beforeEach(async () => {
  tmp = await makeTempDir('shardpipe-change-log-');
  fakeNow = START_MS;
  opened = [];
});

afterEach(async () => {
  for (const store of opened) await store.close();
  await tmp.remove();
});

/** No background trimming or sweeping: the tests call trim themselves, on a clock they move. */
async function openStore(options: PartitionStoreOptions = {}, name = 'p0'): Promise<PartitionStore> {
  const store = await PartitionStore.open(tmp.sub(name), { sweepIntervalMs: 0, changeLogTrimIntervalMs: 0, now: () => fakeNow, ...options });
  opened.push(store);
  return store;
}

const head = (stream = 's1'): { stream: string; seq: number } => ({ stream, seq: 0 });
const sortedKeys = (c: ChangesSince): string[] => (c.covered ? c.keys.map((k) => k.toString('latin1')).sort() : []);

describe('change log', () => {
  it('records the keys of every chain write (puts, deletes, bulk batches as one entry each), not the untagged ones; a fast sync reads the keys changed after a position', async () => {
    const store = await openStore();
    await store.put(b('a'), b('1'), {}, head()); // seq 1
    await store.bulkInsert([{ key: b('b'), value: b('2') }, { key: b('c'), value: b('3') }, { key: b('d'), value: b('4') }], undefined, head()); // seq 2
    await store.delete(b('a'), undefined, head()); // seq 3
    await store.delete(b('zz'), undefined, head()); // seq 4: a delete of an absent key is still the stream's write
    await store.put(b('untagged'), b('x')); // no chain position: not logged
    await store.put(b('c'), b('33'), {}, head()); // seq 5
    expect(store.chainPosition).toEqual({ stream: 's1', seq: 5 });
    expect(store.changeLog.size).toMatchObject({ entries: 5, keys: 7 });

    // From seq 1 on (a position names a write the replica holds; the stream's first write follows another stream's, not covered).
    expect(sortedKeys(await store.changesSince({ stream: 's1', seq: 1 }))).toEqual(['a', 'b', 'c', 'd', 'zz']);
    expect(await store.changesSince({ stream: 's1', seq: 0 })).toMatchObject({ covered: false });
    expect(sortedKeys(await store.changesSince({ stream: 's1', seq: 2 }))).toEqual(['a', 'c', 'zz']);
    const four = await store.changesSince({ stream: 's1', seq: 4 });
    expect(four).toEqual({ covered: true, keys: [b('c')], ranges: [], entries: 1 });
    expect(await store.changesSince({ stream: 's1', seq: 5 })).toEqual({ covered: true, keys: [], ranges: [], entries: 0 });
    // Another stream, or ahead of the source: not covered.
    expect((await store.changesSince({ stream: 's0', seq: 1 })).covered).toBe(false);
    expect((await store.changesSince({ stream: 's1', seq: 6 })).covered).toBe(false);
    expect((await store.changesSince({ stream: '', seq: 0 })).covered).toBe(false);
  });

  it('logs a sorted bulk batch of 64 rows or more as its key range (two keys), a smaller or unsorted one key by key', async () => {
    const store = await openStore();
    const big = Array.from({ length: 100 }, (_, i) => ({ key: b(`r${String(i).padStart(3, '0')}`), value: b('v') }));
    await store.bulkInsert(big, undefined, head()); // seq 1
    await store.bulkInsert(big.slice(0, 10), undefined, head()); // seq 2: 10 rows
    await store.bulkInsert([...big.slice(0, 70)].reverse(), undefined, head()); // seq 3: unsorted
    await store.bulkInsert(big.slice(20, 90), undefined, head()); // seq 4: a range
    expect(store.changeLog.size).toMatchObject({ entries: 4, keys: 250 });
    const since2 = await store.changesSince({ stream: 's1', seq: 2 });
    expect(since2.covered).toBe(true);
    if (!since2.covered) return;
    expect(since2.ranges).toEqual([{ first: b('r020'), last: b('r089') }]);
    expect(since2.keys).toHaveLength(70);
    const since3 = await store.changesSince({ stream: 's1', seq: 3 });
    expect(since3).toEqual({ covered: true, keys: [], ranges: [{ first: b('r020'), last: b('r089') }], entries: 1 });
  });

  it('lives in its own key space: scans, counts, checksums, split keys and stats never see it', async () => {
    const plain = await openStore({ changeLogRetention: { maxKeys: 0, maxAgeMs: 3_600_000 } }, 'plain');
    const logged = await openStore({}, 'logged');
    for (const store of [plain, logged]) {
      await store.bulkInsert(Array.from({ length: 50 }, (_, i) => ({ key: b(`k${String(i).padStart(3, '0')}`), value: b(`v${i}`) })), undefined, head());
      await store.delete(b('k007'), undefined, head());
    }
    expect(plain.changeLog.size.entries).toBe(0);
    expect(logged.changeLog.size).toMatchObject({ entries: 2, keys: 51 });
    expect((await logged.stats()).count).toBe(49);
    expect((await logged.stats()).logicalBytes).toBe((await plain.stats()).logicalBytes);
    const rows: string[] = [];
    for await (const batch of logged.scan(Buffer.alloc(0), Buffer.alloc(0))) rows.push(...batch.map((e) => e.key.toString()));
    expect(rows).toHaveLength(49);
    expect(rows.every((k) => k.startsWith('k'))).toBe(true);
    const [x, y] = [await plain.checksum(Buffer.alloc(0), Buffer.alloc(0), { includeEtag: true }), await logged.checksum(Buffer.alloc(0), Buffer.alloc(0), { includeEtag: true })];
    expect(y.toHex()).toBe(x.toHex());
    expect((await logged.splitKeys(Buffer.alloc(0), Buffer.alloc(0), 2)).approxCount).toBe(49);
    // --change-log-retention 0: no log, so no fast sync.
    expect(await plain.changesSince({ stream: 's1', seq: 1 })).toMatchObject({ covered: false });
  });

  it('a snapshot sees the log exactly as far as its data; a jump in the stream (a sync\'s snapshot position) or a new stream ends what the log covers', async () => {
    const store = await openStore();
    await store.put(b('a'), b('1'), {}, head());
    await store.put(b('b'), b('2'), {}, head());
    const snapshot = await store.openSnapshot();
    await store.put(b('c'), b('3'), {}, head());
    try {
      expect(snapshot.chain).toEqual({ stream: 's1', seq: 2 });
      expect(sortedKeys(await store.changesSince({ stream: 's1', seq: 1 }, snapshot))).toEqual(['b']);
      expect(sortedKeys(await store.changesSince({ stream: 's1', seq: 1 }))).toEqual(['b', 'c']);
    } finally {
      await snapshot.close();
    }
    // A replica's position set by a sync (an empty write at the snapshot's seq 10): the keys 4–10 changed are not in the log.
    await store.bulkInsert([], undefined, { stream: 's1', seq: 10 });
    await store.put(b('d'), b('4'), {}, { stream: 's1', seq: 11 });
    expect(sortedKeys(await store.changesSince({ stream: 's1', seq: 10 }))).toEqual(['d']);
    expect(await store.changesSince({ stream: 's1', seq: 2 })).toMatchObject({ covered: false, reason: expect.stringContaining('jump') });
    await store.put(b('e'), b('5'), {}, head('s2'));
    expect(await store.changesSince({ stream: 's1', seq: 11 })).toMatchObject({ covered: false });
    expect(await store.changesSince({ stream: 's2', seq: 0 })).toMatchObject({ covered: false });
    await store.put(b('f'), b('6'), {}, head('s2'));
    expect(sortedKeys(await store.changesSince({ stream: 's2', seq: 1 }))).toEqual(['f']);
  });

  it('trims by keys: the oldest entries go until at most maxKeys keys are left; a position before them is no longer covered', async () => {
    const store = await openStore({ changeLogRetention: { maxKeys: 10, maxAgeMs: 3_600_000 } });
    for (let i = 0; i < 6; i++) await store.bulkInsert([0, 1, 2, 3].map((j) => ({ key: b(`k${i}-${j}`), value: b('v') })), undefined, head());
    expect(store.changeLog.size).toMatchObject({ entries: 6, keys: 24 });
    expect(await store.changeLog.trim()).toBe(4);
    expect(store.changeLog.size).toMatchObject({ entries: 2, keys: 8 });
    expect(await store.changeLog.trim()).toBe(0);
    expect(await store.changesSince({ stream: 's1', seq: 3 })).toMatchObject({ covered: false, reason: expect.stringContaining('reaches back to sequence 5') });
    const covered = await store.changesSince({ stream: 's1', seq: 4 });
    expect(sortedKeys(covered)).toEqual(['k4-0', 'k4-1', 'k4-2', 'k4-3', 'k5-0', 'k5-1', 'k5-2', 'k5-3']);
    // The data is untouched by trimming.
    expect((await store.stats()).count).toBe(24);
  });

  it('trims by age: entries older than maxAgeMs go, whatever their number; the bounds survive a reopen', async () => {
    let store = await openStore({ changeLogRetention: { maxKeys: 1000, maxAgeMs: 60_000 } });
    await store.put(b('old1'), b('v'), {}, head());
    await store.put(b('old2'), b('v'), {}, head());
    fakeNow += 45_000;
    await store.put(b('new1'), b('v'), {}, head());
    fakeNow += 20_000; // the first two are 65 s old, the third 20 s
    expect(await store.changeLog.trim()).toBe(2);
    expect(store.changeLog.size).toEqual({ entries: 1, keys: 1, oldestMs: START_MS + 45_000 });
    expect(sortedKeys(await store.changesSince({ stream: 's1', seq: 2 }))).toEqual(['new1']);
    expect((await store.changesSince({ stream: 's1', seq: 1 })).covered).toBe(false);

    await store.close();
    opened = [];
    store = await openStore({ changeLogRetention: { maxKeys: 1000, maxAgeMs: 60_000 } });
    expect(store.changeLog.size).toEqual({ entries: 1, keys: 1, oldestMs: START_MS + 45_000 });
    await store.put(b('new2'), b('v'), {}, head());
    expect(store.changeLog.size).toMatchObject({ entries: 2, keys: 2 });
    expect(sortedKeys(await store.changesSince({ stream: 's1', seq: 2 }))).toEqual(['new1', 'new2']);
    fakeNow += 61_000;
    expect(await store.changeLog.trim()).toBe(2);
    expect(store.changeLog.size.entries).toBe(0);
  });

  it('trims in the background on its own timer, and the entries are written in the same LevelDB batch as the write (on disk, under the n prefix: above every data key and the state key)', async () => {
    const store = await openStore({ changeLogRetention: { maxKeys: 2, maxAgeMs: 3_600_000 }, changeLogTrimIntervalMs: 20 });
    for (let i = 0; i < 5; i++) await store.put(b(`k${i}`), b('v'), {}, head());
    const deadline = Date.now() + 5000;
    while (store.changeLog.size.entries > 2 && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
    expect(store.changeLog.size).toMatchObject({ entries: 2, keys: 2 });
    await store.close();
    opened = [];
    const db = new ClassicLevel<Buffer, Buffer>(tmp.sub('p0'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    try {
      const logKeys = await db.keys({ gte: Buffer.from('n'), lt: Buffer.from('o') }).all();
      expect(logKeys).toHaveLength(2);
      expect(logKeys.every((k) => k.length === 9)).toBe(true);
      // A sorted load's level-0 files then start at its lowest new data key, not below all data
      // (so LevelDB compacts them into level 1 without rewriting it whole).
      const all = await db.keys().all();
      const lastNonLog = all.filter((k) => k[0] !== 0x6e && k[0] !== 0x78).pop()!;
      expect(Buffer.compare(lastNonLog, logKeys[0]!)).toBeLessThan(0);
      expect(all.filter((k) => k[0] === 0x63)).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('drops a log kept under the earlier c prefix when it opens: the log starts empty (a sync from it copies the partition whole once) and new entries go under n', async () => {
    const store = await openStore({}, 'legacy');
    await store.put(b('a'), b('1'), {}, head());
    await store.close();
    opened = [];
    const db = new ClassicLevel<Buffer, Buffer>(tmp.sub('legacy'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    // What an earlier version left: its entries (here: the entry just written, moved) under 'c'.
    const [entry] = await db.iterator({ gte: Buffer.from('n'), lt: Buffer.from('o') }).all();
    await db.batch([{ type: 'del', key: entry![0] }, { type: 'put', key: Buffer.concat([Buffer.from('c'), entry![0].subarray(1)]), value: entry![1] }]);
    await db.close();

    const reopened = await openStore({}, 'legacy');
    expect(reopened.changeLog.size.entries).toBe(0);
    expect((await reopened.changesSince({ stream: 's1', seq: 0 })).covered).toBe(false);
    await reopened.put(b('b'), b('2'), {}, head());
    expect(sortedKeys(await reopened.changesSince({ stream: 's1', seq: 1 }))).toEqual(['b']);
    expect(await reopened.get(b('a'))).toMatchObject({ value: b('1') });
    await reopened.close();
    opened = [];
    const raw = new ClassicLevel<Buffer, Buffer>(tmp.sub('legacy'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await raw.open();
    try {
      expect(await raw.keys({ gte: Buffer.from('c'), lt: Buffer.from('d') }).all()).toEqual([]);
      expect(await raw.keys({ gte: Buffer.from('n'), lt: Buffer.from('o') }).all()).toHaveLength(1);
    } finally {
      await raw.close();
    }
  });

  it('parses --change-log-retention KEYS,DURATION and names the allowed ranges', () => {
    expect(parseChangeLogRetention('1000000,1h')).toEqual({ maxKeys: 1_000_000, maxAgeMs: 3_600_000 });
    expect(parseChangeLogRetention('0,10s')).toEqual({ maxKeys: 0, maxAgeMs: 10_000 });
    expect(() => parseChangeLogRetention('1000')).toThrow(/KEYS,DURATION/);
    expect(() => parseChangeLogRetention('-1,1h')).toThrow(/0–100000000/);
    expect(() => parseChangeLogRetention('10,100ms')).toThrow(/out of range/);
  });
});
