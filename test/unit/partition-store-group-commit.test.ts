import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { PackedRowsBuilder, PartitionStore, type PackedRows, type StoredEntry } from '../../store/index.js';
import { encodedRecordLength } from '../../store/record.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const EMPTY = Buffer.alloc(0);
const NOW = 1_700_000_000_000;

let tmp: TempDir;
let opened: PartitionStore[];
let restoreWrite: (() => void) | undefined;

beforeEach(async () => {
  tmp = await makeTempDir('shardpipe-group-commit-');
  opened = [];
});

afterEach(async () => {
  restoreWrite?.();
  restoreWrite = undefined;
  for (const store of opened) await store.close();
  await tmp.remove();
});

/** The rows k<from>…k<to − 1>, sorted, with values naming them. */
function rowsOf(from: number, to: number, tag = 'value'): PackedRows {
  const builder = new PackedRowsBuilder();
  for (let k = from; k < to; k++) builder.add(Buffer.from(`k${String(k).padStart(5, '0')}`), Buffer.from(`${tag}-${k}`));
  return builder.finish();
}

/**
 * Fault injection: every classic-level batch write (the partition's commits) is counted and the
 * first one is held until `release` (or failed with `fail`), as a slow fsync would hold it.
 */
async function holdFirstWrite(): Promise<{ writes: () => number; release: () => void; fail: (err: Error) => void; started: Promise<void> }> {
  const probe = new ClassicLevel<Buffer, Buffer>(tmp.sub('probe'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await probe.open();
  const proto = Object.getPrototypeOf(probe.batch()) as { _write: (options: unknown) => Promise<void> };
  await probe.close();
  const original = proto._write;
  let writes = 0;
  let release!: () => void;
  let fail!: (err: Error) => void;
  const gate = new Promise<void>((resolve, reject) => {
    release = resolve;
    fail = reject;
  });
  gate.catch(() => undefined);
  let started!: () => void;
  const startedWrite = new Promise<void>((resolve) => (started = resolve));
  proto._write = async function (this: unknown, options: unknown): Promise<void> {
    writes++;
    if (writes === 1) {
      started();
      await gate;
    }
    return original.call(this, options);
  };
  restoreWrite = () => {
    proto._write = original;
  };
  return { writes: () => writes, release, fail, started: startedWrite };
}

/** One turn of the event loop: every microtask queued before it (a bulk insert's build) has run. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function scanAll(store: PartitionStore): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for await (const batch of store.scan(EMPTY, EMPTY)) out.push(...batch);
  return out;
}

describe('PartitionStore group commit across bulk calls', () => {
  it('fault injection (the first write held): appending calls that arrive while it is written share one write and fsync, each acked after it, with exact counts and etags', async () => {
    const store = await PartitionStore.open(tmp.sub('p0'), { sweepIntervalMs: 0, now: () => NOW });
    opened.push(store);
    const held = await holdFirstWrite();
    const settled: string[] = [];
    const first = store.bulkInsert(rowsOf(0, 10)).then((t) => (settled.push('first'), t));
    await held.started;
    // Each later call arrives on its own turn, as separate RPCs do, while the first write is held.
    const later: Array<Promise<{ fsyncMs: number; assigned: { firstEtag: number } }>> = [];
    for (let c = 1; c <= 3; c++) {
      later.push(store.bulkInsert(rowsOf(10 * c, 10 * c + 10)).then((t) => (settled.push(`call ${c}`), t)));
      await turn();
    }
    expect(settled).toEqual([]);
    expect(held.writes()).toBe(1);
    held.release();
    const [firstTiming, ...laterTimings] = await Promise.all([first, ...later]);
    expect(settled).toEqual(['first', 'call 1', 'call 2', 'call 3']);
    // The first call's write, then one for the three that waited behind it (the code before this wrote each on its own: 4).
    expect(held.writes()).toBe(2);
    expect(new Set(laterTimings.map((t) => t.fsyncMs)).size).toBe(1);
    expect([firstTiming, ...laterTimings].map((t) => t.assigned.firstEtag)).toEqual([1, 11, 21, 31]);
    const entries = await scanAll(store);
    expect(entries.map((e) => e.key.toString())).toEqual(Array.from({ length: 40 }, (_, k) => `k${String(k).padStart(5, '0')}`));
    expect(entries.map((e) => e.etag)).toEqual(Array.from({ length: 40 }, (_, k) => k + 1));
    expect(entries.every((e, k) => e.value.toString() === `value-${k}`)).toBe(true);
    const stats = await store.stats();
    expect({ count: stats.count, logicalBytes: stats.logicalBytes }).toEqual({ count: 40, logicalBytes: entries.reduce((n, e) => n + e.key.length + 1 + encodedRecordLength(e), 0) });

    // After a reopen the shared write's state (count, sequence) is what was acknowledged.
    await store.close();
    opened = [];
    const reopened = await PartitionStore.open(tmp.sub('p0'), { sweepIntervalMs: 0, now: () => NOW });
    opened.push(reopened);
    expect((await reopened.stats()).count).toBe(40);
    expect((await reopened.bulkInsert(rowsOf(40, 41))).assigned.firstEtag).toBe(41);
  });

  it('fault injection (the first write held): another stream below the largest key, clear of the keys in flight, is built and shares a write meanwhile; one that overlaps them waits; counts stay exact', async () => {
    const store = await PartitionStore.open(tmp.sub('p0'), { sweepIntervalMs: 0, now: () => NOW });
    opened.push(store);
    await store.bulkInsert(rowsOf(0, 100, 'stored'));
    const held = await holdFirstWrite();
    const calls = [store.bulkInsert(rowsOf(200, 210, 'a'))];
    await held.started;
    // A second stream, over keys stored before (below the largest key, clear of k200–k209 in flight).
    for (const [from, to] of [[50, 60], [60, 70]] as const) {
      calls.push(store.bulkInsert(rowsOf(from, to, 'b')));
      await turn();
    }
    // Overlaps the held write's keys: must wait for it, then read what it overwrites.
    calls.push(store.bulkInsert(rowsOf(205, 216, 'c')));
    await turn();
    expect(held.writes()).toBe(1);
    held.release();
    const timings = await Promise.all(calls);
    // The held write, the second stream's two calls in one (the code before this waited, writing each alone: 4), the overlapping call.
    expect(held.writes()).toBe(3);
    expect(timings[1]!.fsyncMs).toBe(timings[2]!.fsyncMs);
    const entries = await scanAll(store);
    const valueOf = (k: number): string | undefined => entries.find((e) => e.key.toString() === `k${String(k).padStart(5, '0')}`)?.value.toString();
    expect(entries.length).toBe(100 + 10 + 6);
    expect([valueOf(49), valueOf(50), valueOf(69), valueOf(70), valueOf(204), valueOf(205), valueOf(215)]).toEqual(['stored-49', 'b-50', 'b-69', 'stored-70', 'a-204', 'c-205', 'c-215']);
    const stats = await store.stats();
    expect({ count: stats.count, logicalBytes: stats.logicalBytes }).toEqual({ count: 116, logicalBytes: entries.reduce((n, e) => n + e.key.length + 1 + encodedRecordLength(e), 0) });
  });

  it('fault injection (the first write fails): the calls that joined the batch behind it fail too and none of their rows is written', async () => {
    const store = await PartitionStore.open(tmp.sub('p0'), { sweepIntervalMs: 0, now: () => NOW, faultRetryBaseMs: 10, faultRetryMaxMs: 20 });
    opened.push(store);
    const held = await holdFirstWrite();
    const first = store.bulkInsert(rowsOf(0, 10));
    await held.started;
    const later: Array<Promise<unknown>> = [];
    for (let c = 1; c <= 3; c++) {
      later.push(store.bulkInsert(rowsOf(10 * c, 10 * c + 10)));
      await turn();
    }
    held.fail(new Error('IO error: injected'));
    const outcomes = await Promise.allSettled([first, ...later]);
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
    expect(held.writes()).toBe(1);
    for (let k = 0; k < 40; k++) expect(store.getNow(Buffer.from(`k${String(k).padStart(5, '0')}`))).toBeUndefined();
  });
});
