import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PartitionStore } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const b = (text: string): Buffer => Buffer.from(text, 'latin1');
let tmp: TempDir;
let store: PartitionStore;

beforeEach(async () => {
  tmp = await makeTempDir('shardpipe-partition-split-');
  store = await PartitionStore.open(tmp.sub('p'), { sweepIntervalMs: 0 });
});

afterEach(async () => {
  await store.close();
  await tmp.remove();
});

describe('PartitionStore for splits', () => {
  it('a tracked snapshot holds every write queued before it, and tracks the keys of its range written after it (queued in the same turn included)', async () => {
    await store.bulkInsert(['a', 'm', 'x'].map((k) => ({ key: b(k), value: b('1') })));
    // Queued before the snapshot in the same turn: in the snapshot, not tracked.
    const before = store.put(b('n'), b('before'));
    const tracked = store.openTrackedSnapshot(b('m'), Buffer.alloc(0));
    // Queued after it: tracked (in range), not tracked (below the range).
    const after = [store.put(b('p'), b('after')), store.delete(b('x')), store.put(b('c'), b('low')), store.bulkInsert([{ key: b('q'), value: b('bulk') }, { key: b('b'), value: b('bulk') }])];
    const { snapshot, tracker } = await tracked;
    await Promise.all([before, ...after]);
    const seen: string[] = [];
    for await (const batch of store.scan(b('m'), Buffer.alloc(0), { snapshot })) for (const e of batch) seen.push(`${e.key.toString()}=${e.value.toString()}`);
    await snapshot.close();
    expect(seen).toEqual(['m=1', 'n=before', 'x=1']);
    expect([...tracker.keys.values()].map((k) => k.toString()).sort()).toEqual(['p', 'q', 'x']);
    store.stopTracking(tracker);
    await store.put(b('r'), b('untracked'));
    expect(tracker.keys.has('r')).toBe(false);
  });

  it('clearRange deletes the range in bounded batches, counts exact, and stats leave the rows being cleared out', async () => {
    await store.bulkInsert(Array.from({ length: 2500 }, (_, i) => ({ key: b(`k${String(i).padStart(5, '0')}`), value: b('v'), expiresAtMs: i % 2 === 0 ? Date.now() + 3_600_000 : 0 })));
    const clearing = store.clearRange(b('k01000'), Buffer.alloc(0), { batchRows: 400 });
    expect(await clearing).toBe(1500);
    const stats = await store.stats();
    expect(stats.count).toBe(1000);
    expect((await store.checksum(Buffer.alloc(0), Buffer.alloc(0))).count).toBe(1000);
    // The expiry index of the deleted rows went too: a sweep finds nothing of theirs.
    expect(await store.sweepExpired()).toBe(0);
    expect(await store.clearRange(b('k01000'), Buffer.alloc(0))).toBe(0);
  });
  it('while a range is being cleared, stats never count its rows: before the count is taken they are all there, after it none of them is', async () => {
    const fast = await PartitionStore.open(tmp.sub('fast'), { sweepIntervalMs: 0, syncWrites: false });
    try {
      await fast.bulkInsert(Array.from({ length: 3000 }, (_, i) => ({ key: b(`k${String(i).padStart(5, '0')}`), value: b('v') })));
      let finished = false;
      const clearing = fast.clearRange(b('k01000'), Buffer.alloc(0), { batchRows: 10 }).finally(() => (finished = true));
      const seen = new Set<number>();
      while (!finished) {
        seen.add((await fast.stats()).count);
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(await clearing).toBe(2000);
      expect([...seen].every((n) => n === 3000 || n === 1000)).toBe(true);
      expect(seen.has(1000)).toBe(true);
      expect((await fast.stats()).count).toBe(1000);
    } finally {
      await fast.close();
    }
  });
  it('isIdle counts data writes only: false while a put is pending, true while only a range clean-up runs (a write pause must not wait for it)', async () => {
    await store.bulkInsert(Array.from({ length: 3000 }, (_, i) => ({ key: b(`k${String(i).padStart(5, '0')}`), value: b('v') })));
    expect(store.isIdle).toBe(true);
    const put = store.put(b('a'), b('1'));
    expect(store.isIdle).toBe(false);
    await put;
    expect(store.isIdle).toBe(true);
    let finished = false;
    const clearing = store.clearRange(b('k00000'), Buffer.alloc(0), { batchRows: 10 }).finally(() => (finished = true));
    let idleWhileClearing = 0;
    while (!finished) {
      if (store.isIdle) idleWhileClearing++;
      else throw new Error('isIdle was false while only a clean-up ran');
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await clearing).toBe(3000);
    expect(idleWhileClearing).toBeGreaterThan(0);
    await expect(store.put(b('x'), b('y'), { expectedEtag: 99 })).rejects.toThrow(/etag mismatch/);
    expect(store.isIdle).toBe(true);
  });
});
