import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../common/index.js';
import { PartitionGc, PartitionMap, StoreNode, partitionFolder } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// A real StoreNode on real LevelDB folders (static maps installed with setMap, as SetPartitionMap
// does): what its object GC records, keeps and deletes.
const A = '127.0.0.1:7101';
const B = '127.0.0.1:7102';
const SPLIT = Buffer.from('m');

let dir: TempDir | undefined;
const opened: StoreNode[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((n) => n.close()));
  await dir?.remove();
  dir = undefined;
});

/** Partition 0 = [, m), 1 = [m, ); `owner1` holds partition 1. */
function mapWith(version: number, owner1: string): PartitionMap {
  return PartitionMap.create(version, [
    { id: 0, start: Buffer.alloc(0), end: SPLIT, node: A },
    { id: 1, start: SPLIT, end: Buffer.alloc(0), node: owner1 },
  ]);
}

function logCapture(): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  return { logger: pino({ level: 'info' }, stream), lines: () => text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function openNode(dataDir: string, options: { map?: PartitionMap; gcGraceMs: number; logger?: Logger }): Promise<StoreNode> {
  const node = await StoreNode.open({ node: A, dataDir, initialMap: options.map, gcGraceMs: options.gcGraceMs, sweepIntervalMs: 0, logger: options.logger });
  opened.push(node);
  return node;
}

async function closeNode(node: StoreNode): Promise<void> {
  opened.splice(opened.indexOf(node), 1);
  await node.close();
}

/** Polls `test` every 20 ms until it holds or `timeoutMs` passed; the last value. */
async function until<T>(read: () => T | Promise<T>, test: (value: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (test(value) || Date.now() > deadline) return value;
    await sleep(20);
  }
}

async function fill(node: StoreNode, version: number, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await node.put(version, Buffer.from(`z-${i}`), Buffer.alloc(200, i), {});
}

describe('object GC on a store node', () => {
  it('a partition a newer map takes away is recorded with its bytes, kept untouched until the grace passed, then deleted, logged and counted; the partition the map still assigns is never touched', async () => {
    dir = await makeTempDir('shardpipe-gc-');
    const log = logCapture();
    const node = await openNode(dir.path, { map: mapWith(1, A), gcGraceMs: 1500, logger: log.logger });
    await fill(node, 1, 300);
    const folder = partitionFolder(dir.path, 1);
    expect(existsSync(folder)).toBe(true);

    const before = Date.now();
    expect(await node.setMap(mapWith(2, B))).toBe(true);
    const pending = node.gcPending();
    expect(pending.map((p) => p.partition)).toEqual([1]);
    expect(pending[0]!.leftAtMs).toBeGreaterThanOrEqual(before);
    expect(pending[0]!.deleteAtMs).toBe(pending[0]!.leftAtMs + 1500);
    expect(pending[0]!.bytes, 'bytes on disk of the folder').toBeGreaterThan(300 * 200 * 0.5);
    expect(node.gcFigures()).toMatchObject({ pendingPartitions: 1, pendingBytes: pending[0]!.bytes, deletedPartitions: 0, deletedBytes: 0, graceMs: 1500 });
    expect(existsSync(folder), 'kept during the grace').toBe(true);

    const after = await until(() => node.gcPending(), (p) => p.length === 0, 10_000);
    expect(after).toEqual([]);
    expect(Date.now(), 'not deleted before its deadline').toBeGreaterThanOrEqual(pending[0]!.deleteAtMs);
    expect(existsSync(folder)).toBe(false);
    expect(existsSync(partitionFolder(dir.path, 0)), 'the assigned partition stays').toBe(true);
    const figures = node.gcFigures();
    expect(figures.deletedPartitions).toBe(1);
    expect(figures.deletedBytes).toBeGreaterThan(0);
    expect(figures.pendingBytes).toBe(0);
    const deleted = log.lines().find((l) => l.msg === 'GC deleted the data of a partition that left this node');
    expect(deleted).toMatchObject({ partition: 1 });
    expect(deleted!.bytes).toBe(figures.deletedBytes);
    // Partition 0's data is still served.
    expect((await node.get(2, Buffer.from('a')))).toBeUndefined();
  });

  it('a partition that comes back before the grace keeps its folder and data (the entry is dropped), and nothing is deleted after the first deadline', async () => {
    dir = await makeTempDir('shardpipe-gc-');
    const node = await openNode(dir.path, { map: mapWith(1, A), gcGraceMs: 1000 });
    await fill(node, 1, 50);
    await node.setMap(mapWith(2, B));
    const left = node.gcPending()[0]!;
    await node.setMap(mapWith(3, A));
    expect(node.gcPending()).toEqual([]);
    // Past the deadline the first departure had: a sweep deletes nothing.
    await until(() => Date.now(), (now) => now > left.deleteAtMs + 50, 5000);
    await node.sweepGc();
    expect(existsSync(partitionFolder(dir.path, 1))).toBe(true);
    expect(node.gcFigures().deletedPartitions).toBe(0);
    const record = await node.get(3, Buffer.from('z-7'));
    expect(record?.value).toEqual(Buffer.alloc(200, 7));
  });

  it('a restart keeps the clock: the entry is reloaded from the data folder with its leftAtMs, and a node reopened after the deadline deletes at once', async () => {
    dir = await makeTempDir('shardpipe-gc-');
    const first = await openNode(dir.path, { map: mapWith(1, A), gcGraceMs: 1200 });
    await fill(first, 1, 20);
    await first.setMap(mapWith(2, B));
    const left = first.gcPending()[0]!;
    await closeNode(first);

    const second = await openNode(dir.path, { gcGraceMs: 1200 });
    expect(second.gcPending(), 'same entry, same clock').toEqual([left]);
    await closeNode(second);

    await until(() => Date.now(), (now) => now > left.deleteAtMs + 50, 5000);
    const third = await openNode(dir.path, { gcGraceMs: 1200 });
    const after = await until(() => third.gcPending(), (p) => p.length === 0, 3000);
    expect(after).toEqual([]);
    expect(existsSync(partitionFolder(dir.path, 1))).toBe(false);
  });

  it('a map lost by mistake deletes nothing: with its persisted map gone, a node started on a map without partition 1 logs the folder as unexplained and keeps it; so is a stray folder', async () => {
    dir = await makeTempDir('shardpipe-gc-');
    const first = await openNode(dir.path, { map: mapWith(1, A), gcGraceMs: 0 });
    await fill(first, 1, 20);
    await closeNode(first);
    await rm(join(dir.path, 'partition-map.json'));
    await mkdir(partitionFolder(dir.path, 42));
    await writeFile(join(partitionFolder(dir.path, 42), 'data'), 'x');

    const log = logCapture();
    const second = await openNode(dir.path, { map: mapWith(5, B), gcGraceMs: 0, logger: log.logger });
    expect(second.gcPending()).toEqual([]);
    await second.sweepGc();
    expect(existsSync(partitionFolder(dir.path, 1))).toBe(true);
    expect(existsSync(partitionFolder(dir.path, 42))).toBe(true);
    const unexplained = log.lines().filter((l) => String(l.msg).startsWith('a partition folder that no installed map of this node moved away'));
    expect(unexplained.map((l) => l.partition)).toEqual([1, 42]);
  });

  it('a ledger entry for a partition the map assigns (a crash between recording and persisting the map) is dropped, never deleted; a newer --map at start counts as an install', async () => {
    dir = await makeTempDir('shardpipe-gc-');
    const first = await openNode(dir.path, { map: mapWith(1, A), gcGraceMs: 0 });
    await fill(first, 1, 20);
    await closeNode(first);
    await writeFile(join(dir.path, 'gc-pending.json'), JSON.stringify({ version: 1, left: [{ partition: 1, leftAtMs: 1000, bytes: 5 }] }));
    const second = await openNode(dir.path, { gcGraceMs: 0 });
    expect(second.gcPending()).toEqual([]);
    await second.sweepGc();
    expect(existsSync(partitionFolder(dir.path, 1))).toBe(true);
    expect((await second.get(1, Buffer.from('z-3')))?.value).toEqual(Buffer.alloc(200, 3));
    await closeNode(second);

    // The persisted map (v1) assigned partition 1; a newer map given at start does not.
    const third = await openNode(dir.path, { map: mapWith(2, B), gcGraceMs: 0 });
    await until(() => third.gcPending(), (p) => p.length === 0, 3000);
    expect(existsSync(partitionFolder(dir.path, 1))).toBe(false);
    expect(third.gcFigures().deletedPartitions).toBe(1);
  });

  it('fault injection: a deletion that fails is logged, keeps its entry (persisted, still reported), and is tried again a second later (grace 0)', async () => {
    dir = await makeTempDir('shardpipe-gc-');
    await mkdir(partitionFolder(dir.path, 7));
    await writeFile(join(partitionFolder(dir.path, 7), 'data'), Buffer.alloc(4096));
    const log = logCapture();
    let attempts = 0;
    const gc = await PartitionGc.open({
      dataDir: dir.path,
      graceMs: 0,
      isAssigned: () => false,
      runExclusive: (fn) => fn(),
      faultInjectionRemoveFolder: async (path) => {
        attempts++;
        if (attempts === 1) throw Object.assign(new Error(`EBUSY: resource busy or locked, rmdir '${path}'`), { code: 'EBUSY' });
        await rm(path, { recursive: true, force: true });
      },
      logger: log.logger,
    });
    try {
      await gc.left([7]);
      expect(gc.pending()[0]).toMatchObject({ partition: 7, bytes: 4096 });
      await gc.sweep();
      expect(attempts).toBe(1);
      expect(gc.pending().map((p) => p.partition)).toEqual([7]);
      expect(existsSync(partitionFolder(dir.path, 7))).toBe(true);
      expect(JSON.parse(await readFile(join(dir.path, 'gc-pending.json'), 'utf8')).left).toEqual([expect.objectContaining({ partition: 7 })]);
      expect(log.lines().find((l) => l.msg === 'deleting a partition folder after its GC grace failed; trying again later')).toMatchObject({ partition: 7, err: expect.stringContaining('EBUSY') });
      // The timer tries again (retry after max(1 s, grace)).
      const after = await until(() => gc.pending(), (p) => p.length === 0, 5000);
      expect(after).toEqual([]);
      expect(attempts).toBe(2);
      expect(existsSync(partitionFolder(dir.path, 7))).toBe(false);
      expect(gc.figures()).toMatchObject({ deletedPartitions: 1, deletedBytes: 4096, pendingBytes: 0 });
    } finally {
      await gc.close();
    }
  });
});
