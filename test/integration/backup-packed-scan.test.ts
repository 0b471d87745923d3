import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalTarget, ShardEncoders, newBackupId, readShardFile, shardFileName, writeShard, type ShardTask } from '../../backup/index.js';
import { Key, PackedRows, PartitionMap, StoreClient, StoreError, StoreRouter, type StoredEntry } from '../../store/index.js';
import { StoreCluster, sortedRows } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// The encoder threads run the built worker script (dist/, as `backup run` does); the sources under test run here.
const WORKER_URL = new URL('../../dist/backup/shard-encoder-worker.js', import.meta.url);
const EMPTY = Buffer.alloc(0);

function entriesOf(rows: PackedRows): StoredEntry[] {
  return Array.from({ length: rows.count }, (_, i) => ({ key: Buffer.from(rows.key(i)), value: Buffer.from(rows.value(i)), etag: rows.metaField(i, 0), updatedAtMs: rows.metaField(i, 1), expiresAtMs: rows.metaField(i, 2) }));
}

describe('packed Scan responses and the backup shard writer over a real node', () => {
  let cluster: StoreCluster;
  let router: StoreRouter;
  let client: StoreClient;
  let dir: TempDir;
  let encoders: ShardEncoders;
  /** End of partition 0 (start of partition 1). */
  let split: Buffer;

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
    router = new StoreRouter({ seeds: cluster.seeds });
    client = new StoreClient(router);
    dir = await makeTempDir();
    encoders = new ShardEncoders({ threads: 2, workerUrl: WORKER_URL });
    split = PartitionMap.evenlySplit(1, cluster.seeds, 2).partitions[1]!.start;
    await client.bulkPutAll(sortedRows(6000, 0, 1000));
    // Entries with an expiry, a rewritten etag and an empty value among them.
    for (let i = 0; i < 20; i++) await client.put(Key.fromUtf8(`ttl-${i}`), Buffer.from(`expires-${i}`), { ttlMs: 3_600_000 + i });
    await client.put(Key.fromUtf8('ttl-3'), Buffer.from('again'));
    await client.put(Key.fromUtf8('empty-value'), EMPTY);
  });
  afterAll(async () => {
    await encoders?.close();
    client?.close();
    await cluster?.close();
    await dir?.remove();
  });

  it('a packed Scan and ScanPage answer the same entries as the per-row form; scanAllPacked equals scanAll', async () => {
    const conn = router.connection(cluster.seeds[0]!);
    const request = { mapVersion: 1, start: EMPTY, end: EMPTY, limit: 0, batchSize: 700, snapshotId: '' };
    const perRow: StoredEntry[] = [];
    const packed: StoredEntry[] = [];
    for await (const batch of conn.scan(request, { deadline: Date.now() + 10_000 })) {
      expect(batch.packed).toBeUndefined();
      perRow.push(...batch.entries.map((e) => ({ key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs })));
    }
    let batches = 0;
    for await (const batch of conn.scan({ ...request, packed: true }, { deadline: Date.now() + 10_000 })) {
      expect(batch.entries).toEqual([]);
      if (batch.packed === undefined) continue;
      batches++;
      expect(batch.packed.meta.length).toBe(batch.packed.count * 24);
      packed.push(...entriesOf(PackedRows.fromMessage(batch.packed)));
    }
    expect(perRow.length).toBeGreaterThan(3000);
    expect(batches).toBe(Math.ceil(perRow.length / 700));
    expect(packed).toEqual(perRow);
    expect(perRow.filter((e) => e.expiresAtMs > 0)).toHaveLength(19);

    const page = await conn.unary('scanPage', { ...request, batchSize: 500 }, { deadline: Date.now() + 10_000 });
    const packedPage = await conn.unary('scanPage', { ...request, batchSize: 500, packed: true }, { deadline: Date.now() + 10_000 });
    expect(packedPage.entries).toEqual([]);
    expect(packedPage.next).toEqual(page.next);
    expect(entriesOf(PackedRows.fromMessage(packedPage.packed!))).toEqual(page.entries.map((e) => ({ key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs })));

    // Across both partitions, with a limit, through the thick client.
    const all: StoredEntry[] = [];
    for await (const b of client.scanAll(EMPTY, EMPTY, { limit: 5000, batchSize: 333 })) all.push(...b);
    const allPacked: StoredEntry[] = [];
    for await (const b of client.scanAllPacked(EMPTY, EMPTY, { limit: 5000, batchSize: 333 })) allPacked.push(...entriesOf(b));
    expect(all).toHaveLength(5000);
    expect(allPacked).toEqual(all);
  });

  it('a shard encoded on encoder threads has the same pages, byte for byte, rows and checksum as one encoded on this thread', async () => {
    // The same backup written twice, to two folders: once on this thread, once on the encoder threads.
    const here = new LocalTarget(join(dir.path, 'here'));
    const there = new LocalTarget(join(dir.path, 'there'));
    const backupId = newBackupId();
    const snapshots = await client.openSnapshots({ leaseMs: 60_000 });
    try {
      const task = (index: number, start: Buffer, end: Buffer): ShardTask => ({ backupId, index, start, end, leases: snapshots.leases });
      // Small row groups and scan batches: groups cut across batches; two shards at once share the pool.
      const options = { rowGroupRows: 1000, scanBatchSize: 300 };
      const a = [await writeShard(client, here, task(0, EMPTY, split), options), await writeShard(client, here, task(1, split, EMPTY), options)];
      const b = await Promise.all([writeShard(client, there, task(0, EMPTY, split), { ...options, encoders }), writeShard(client, there, task(1, split, EMPTY), { ...options, encoders })]);
      for (const i of [0, 1]) {
        expect(b[i]!.rows).toBe(a[i]!.rows);
        expect(b[i]!.checksum).toBe(a[i]!.checksum);
        expect(b[i]!.bytes).toBe(a[i]!.bytes);
        const file = shardFileName(i);
        const x = await readFile(join(dir.path, 'there', backupId, file));
        const y = await readFile(join(dir.path, 'here', backupId, file));
        // Every page byte for byte; the footers only as long as each other, since parquet-wasm writes
        // the key-value metadata in hash order (it differs between two runs on one thread too).
        expect(x.length).toBe(y.length);
        const pages = x.length - 8 - x.readUInt32LE(x.length - 8);
        expect(pages).toBeGreaterThan(10_000);
        expect(x.subarray(0, pages).equals(y.subarray(0, pages))).toBe(true);
      }
      expect(a[0]!.rows + a[1]!.rows).toBe(6021);
      // The checksum is the store's own (with etags) over the same snapshots, and the file holds the scan's entries.
      expect(a[0]!.checksum).toBe((await client.checksum(EMPTY, split, { includeEtag: true, snapshots: snapshots.leases })).toHex());
      const restored: StoredEntry[] = [];
      for await (const batch of readShardFile(there, backupId, shardFileName(1))) restored.push(...batch);
      const scanned: StoredEntry[] = [];
      for await (const batch of client.scanAll(split, EMPTY, { snapshots: snapshots.leases })) scanned.push(...batch);
      expect(restored).toEqual(scanned);
    } finally {
      await client.releaseSnapshots(snapshots.leases);
    }
  });

  it('prestarted encoder threads write the same shard as threads started on demand; threads that fail to start fail each shard with their error, and the pool starts new ones', async () => {
    const backupId = newBackupId();
    const snapshots = await client.openSnapshots({ leaseMs: 60_000 });
    const prestarted = new ShardEncoders({ threads: 2, workerUrl: WORKER_URL });
    const broken = join(dir.path, 'broken-encoder.mjs');
    await writeFile(broken, "throw new Error('broken encoder script');\n");
    const failing = new ShardEncoders({ threads: 1, workerUrl: pathToFileURL(broken) });
    try {
      prestarted.prestart();
      prestarted.prestart();
      const task = (index: number, start: Buffer, end: Buffer): ShardTask => ({ backupId, index, start, end, leases: snapshots.leases });
      const target = new LocalTarget(join(dir.path, 'prestarted'));
      const [a, b] = await Promise.all([writeShard(client, target, task(0, EMPTY, split), { encoders: prestarted }), writeShard(client, target, task(1, split, EMPTY), { encoders: prestarted })]);
      expect(a.checksum).toBe((await client.checksum(EMPTY, split, { includeEtag: true, snapshots: snapshots.leases })).toHex());
      expect(b.checksum).toBe((await client.checksum(split, EMPTY, { includeEtag: true, snapshots: snapshots.leases })).toHex());
      expect(a.rows + b.rows).toBe(6021);

      failing.prestart();
      // The prestarted thread's failure reaches the first shard; each later shard gets a new thread (which fails the same way) instead of waiting for one.
      for (const index of [0, 1, 2]) {
        await expect(writeShard(client, new LocalTarget(join(dir.path, 'failing')), task(index, EMPTY, split), { encoders: failing })).rejects.toThrow(/broken encoder script/);
      }
    } finally {
      await Promise.all([prestarted.close(), failing.close()]);
      await client.releaseSnapshots(snapshots.leases);
    }
  });

  it('fault injection: an unreadable record planted in LevelDB fails the shard with STORE_INTERNAL naming the partition and key, not retryable, on this thread and on encoder threads', async () => {
    const node = cluster.nodes[0]!;
    await node.stop();
    const db = new ClassicLevel<Buffer, Buffer>(join(node.dataDir, 'partition-0'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    // In the first scan batch (parquet-wasm's "Dyn casting error" hid it there) and deep in a later one.
    const planted = [Buffer.from('0000000000000001', 'hex'), Buffer.concat([sortedRows(6000, 0, 1000)[2]![500]!.key.subarray(0, 15), Buffer.from([0xff])])];
    await db.put(Buffer.concat([Buffer.from('d'), planted[0]!]), Buffer.from([99, 0, 1, 2, 3]));
    await db.close();
    await node.start();

    const target = new LocalTarget(dir.path);
    const attempt = async (withEncoders: boolean): Promise<StoreError> => {
      const snapshots = await client.openSnapshots({ leaseMs: 60_000 });
      try {
        await writeShard(client, target, { backupId: newBackupId(), index: 0, start: EMPTY, end: split, leases: snapshots.leases }, { encoders: withEncoders ? encoders : undefined });
      } catch (err) {
        return err as StoreError;
      } finally {
        await client.releaseSnapshots(snapshots.leases);
      }
      throw new Error('the shard was written, but it should have failed');
    };
    for (const key of planted) {
      if (key !== planted[0]) {
        await node.stop();
        const again = new ClassicLevel<Buffer, Buffer>(join(node.dataDir, 'partition-0'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
        await again.open();
        await again.del(Buffer.concat([Buffer.from('d'), planted[0]!]));
        await again.put(Buffer.concat([Buffer.from('d'), key]), Buffer.from([99, 0, 1, 2, 3]));
        await again.close();
        await node.start();
      }
      for (const withEncoders of [false, true]) {
        const err = await attempt(withEncoders);
        expect(err, String(err)).toBeInstanceOf(StoreError);
        expect(err.code).toBe('STORE_INTERNAL');
        expect(err.retryable).toBe(false);
        expect(err.message).toContain(`partition 0: unreadable record`);
        expect(err.message).toContain(key.toString('hex'));
      }
    }
    // The pool is still good for the next shard.
    const snapshots = await client.openSnapshots({ leaseMs: 60_000 });
    try {
      const ok = await writeShard(client, target, { backupId: newBackupId(), index: 1, start: split, end: EMPTY, leases: snapshots.leases }, { encoders });
      expect(ok.rows).toBeGreaterThan(0);
    } finally {
      await client.releaseSnapshots(snapshots.leases);
    }
  });
});
