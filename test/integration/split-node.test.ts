import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PartitionMap, PartitionStore, StoreNode, type Partition } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// One in-process StoreNode on a static map (a chain of one), real LevelDB folders: the node's side
// of a split step by step — prepare, writes while prepared, install, restart without the tracker.
const NODE = '127.0.0.1:7001';
const AT = Buffer.from('m');
let tmp: TempDir;
let node: StoreNode | undefined;

beforeEach(async () => {
  tmp = await makeTempDir('shardpipe-split-node-');
});
afterEach(async () => {
  await node?.close();
  node = undefined;
  await tmp.remove();
});

const whole = (version: number): PartitionMap => PartitionMap.create(version, [{ id: 0, start: Buffer.alloc(0), end: Buffer.alloc(0), node: NODE }]);
const split = (version: number): PartitionMap =>
  PartitionMap.create(version, [
    { id: 0, start: Buffer.alloc(0), end: AT, node: NODE, epoch: 2 },
    { id: 1, start: AT, end: Buffer.alloc(0), node: NODE, epoch: 2 },
  ]);

async function load(n: StoreNode): Promise<void> {
  const rows = 'abcdefghijklmnopqrstuvwxyz'.split('').map((c) => ({ key: Buffer.from(c), value: Buffer.from(`v-${c}`) }));
  await n.bulkInsert(1, rows);
}

async function contents(dir: string, id: number): Promise<string[]> {
  const store = await PartitionStore.open(join(dir, `partition-${id}`), { sweepIntervalMs: 0 });
  try {
    const out: string[] = [];
    for await (const batch of store.scan(Buffer.alloc(0), Buffer.alloc(0))) for (const e of batch) out.push(`${e.key.toString()}=${e.value.toString()}`);
    return out;
  } finally {
    await store.close();
  }
}

const letters = (from: string, to: string, prefix = 'v-'): string[] => {
  const out: string[] = [];
  for (let c = from.charCodeAt(0); c <= to.charCodeAt(0); c++) out.push(`${String.fromCharCode(c)}=${prefix}${String.fromCharCode(c)}`);
  return out;
};

describe('a node\'s side of a split', () => {
  it('prepares from a snapshot, tracks writes made after it (puts and deletes), and at the install copies them: the new partition serves exactly P\'s rows of [K, end) in its own LevelDB; the leftovers go', async () => {
    const dir = tmp.sub('node');
    node = await StoreNode.open({ node: NODE, dataDir: dir, initialMap: whole(1), sweepIntervalMs: 0 });
    await load(node);
    expect(await node.prepareSplit({ operation: 'op-1', partition: 0, epoch: 1, newPartition: 1, at: AT })).toBe(14);
    await node.put(1, Buffer.from('q'), Buffer.from('after'), {});
    await node.delete(1, Buffer.from('z'));
    await node.put(1, Buffer.from('zz'), Buffer.from('new'), {});
    await node.put(1, Buffer.from('b'), Buffer.from('low'), {});
    expect(await node.setMap(split(2))).toBe(true);
    const q = node.map.byId(1)! as Partition;
    expect((await node.checksum({ partition: q, start: AT, end: Buffer.alloc(0), next: Buffer.alloc(0) }, {})).count).toBe(14);
    expect((await node.get(2, Buffer.from('q')))?.value.toString()).toBe('after');
    expect(await node.get(2, Buffer.from('z'))).toBeUndefined();
    expect((await node.get(2, Buffer.from('zz')))?.value.toString()).toBe('new');
    // Stats of P leave its leftovers out (being deleted, or gone).
    const stats = await node.stats([0]);
    expect(stats[0]!.stats.count).toBe(12);
    await node.close();
    node = undefined;
    const expectedQ = [...letters('m', 'p'), 'q=after', ...letters('r', 'y'), 'zz=new'];
    expect(await contents(dir, 1)).toEqual(expectedQ);
    const p = await contents(dir, 0);
    expect(p.filter((e) => e >= 'm')).toEqual([]);
    expect(p).toContain('b=low');
    expect(JSON.parse(await readFile(join(dir, 'split-1.json'), 'utf8')).state).toBe('complete');
  });

  it('a node restarted after it prepared (no tracker) copies the whole range from its own P at the install; a half-made copy left on disk is discarded by the next prepare', async () => {
    const dir = tmp.sub('node');
    node = await StoreNode.open({ node: NODE, dataDir: dir, initialMap: whole(1), sweepIntervalMs: 0 });
    await load(node);
    await node.prepareSplit({ operation: 'op-1', partition: 0, epoch: 1, newPartition: 1, at: AT });
    await node.close();
    // A half-made copy with a row P never had (a crash mid-prepare): the next prepare discards it.
    const junk = await PartitionStore.open(join(dir, 'partition-1'), { sweepIntervalMs: 0 });
    await junk.put(Buffer.from('mm-junk'), Buffer.from('junk'));
    await junk.close();
    node = await StoreNode.open({ node: NODE, dataDir: dir, sweepIntervalMs: 0 });
    await node.prepareSplit({ operation: 'op-1', partition: 0, epoch: 1, newPartition: 1, at: AT });
    await node.close();
    expect(await contents(dir, 1)).toEqual(letters('m', 'z'));

    // Restarted again (the tracker is gone), then written, then the split commits: the whole range is copied.
    node = await StoreNode.open({ node: NODE, dataDir: dir, sweepIntervalMs: 0 });
    await node.put(1, Buffer.from('n'), Buffer.from('after-restart'), {});
    await node.setMap(split(2));
    await node.close();
    node = undefined;
    expect(await contents(dir, 1)).toEqual([...letters('m', 'm'), 'n=after-restart', ...letters('o', 'z')]);
  });

  it('refuses a key at the bounds, a used id, another epoch', async () => {
    node = await StoreNode.open({ node: NODE, dataDir: tmp.sub('node'), initialMap: split(1), sweepIntervalMs: 0 });
    await expect(node.prepareSplit({ operation: 'op-1', partition: 0, epoch: 2, newPartition: 5, at: AT })).rejects.toThrow(/not strictly inside partition 0/);
    await expect(node.prepareSplit({ operation: 'op-1', partition: 1, epoch: 2, newPartition: 0, at: Buffer.from('x') })).rejects.toThrow(/partition 0 exists already/);
    await expect(node.prepareSplit({ operation: 'op-1', partition: 1, epoch: 1, newPartition: 5, at: Buffer.from('x') })).rejects.toThrow(/epoch 2 here/);
  });

  it('holds writes while paused and routes them by the map installed meanwhile (a held write of a moved key goes to the new partition)', async () => {
    node = await StoreNode.open({ node: NODE, dataDir: tmp.sub('node'), initialMap: whole(1), sweepIntervalMs: 0 });
    await load(node);
    await node.prepareSplit({ operation: 'op-1', partition: 0, epoch: 1, newPartition: 1, at: AT });
    expect(await node.holdWrites(0, 1000)).toBeDefined();
    let done = false;
    const held = node.put(1, Buffer.from('x'), Buffer.from('held'), {}).then((r) => {
      done = true;
      return r;
    });
    const heldLow = node.put(1, Buffer.from('a'), Buffer.from('held-low'), {});
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(done).toBe(false);
    await node.setMap(split(2));
    await held;
    await heldLow;
    expect((await node.get(2, Buffer.from('x')))?.value.toString()).toBe('held');
    expect((await node.get(2, Buffer.from('a')))?.value.toString()).toBe('held-low');
    const dir = tmp.sub('node');
    await node.close();
    node = undefined;
    expect((await contents(dir, 1)).find((e) => e.startsWith('x='))).toBe('x=held');
    // P never took the held write (its old copy of x was a leftover, deleted in the background).
    expect((await contents(dir, 0)).find((e) => e.startsWith('x='))).toBeUndefined();
  });
  it('merges the upper neighbour back: its rows and the writes it took after the prepare end up in the lower partition\'s LevelDB; the upper folder stays on disk', async () => {
    const dir = tmp.sub('node');
    node = await StoreNode.open({ node: NODE, dataDir: dir, initialMap: whole(1), sweepIntervalMs: 0 });
    await load(node);
    await node.prepareSplit({ operation: 'op-1', partition: 0, epoch: 1, newPartition: 1, at: AT });
    await node.setMap(split(2));
    await node.put(2, Buffer.from('n'), Buffer.from('in-q'), {});
    expect(await node.prepareMerge({ operation: 'op-2', partition: 0, epoch: 2, other: 1, otherEpoch: 2 })).toBe(14);
    await node.put(2, Buffer.from('o'), Buffer.from('after-prepare'), {});
    await node.delete(2, Buffer.from('p'));
    const merged = PartitionMap.create(3, [{ id: 0, start: Buffer.alloc(0), end: Buffer.alloc(0), node: NODE, epoch: 3 }]);
    await node.setMap(merged);
    expect((await node.get(3, Buffer.from('o')))?.value.toString()).toBe('after-prepare');
    expect(await node.get(3, Buffer.from('p'))).toBeUndefined();
    await node.close();
    node = undefined;
    const p = await contents(dir, 0);
    expect(p).toEqual([...letters('a', 'm'), 'n=in-q', 'o=after-prepare', ...letters('q', 'z')]);
    expect((await contents(dir, 1)).length).toBe(13);
  });
});
