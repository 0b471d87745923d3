import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openBackupTarget } from '../../backup/index.js';
import { Queue } from 'bullmq';
import { PrivateRedis, RESTORE_SHARD_QUEUE, connectionFromUrl, type RestoreShardData } from '../../jobs/index.js';
import { openLocalShard, readShardRows, restoreShard, verifyRestore, type ShardCheckpoint, type ShardSpec } from '../../restore/index.js';
import { Key, StoreClient, type StoredEntry } from '../../store/index.js';
import { writeBackupFixture, type FixtureEntry } from '../helpers/backup-fixture.js';
import { CLI, StoreCluster, runCli } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const BACKUP_ID = '20261124T020000Z-3fa9c1';

/**
 * `count` sorted entries spread over the keyspace with etags in the millions (as a busy source
 * cluster hands out), update times in the past, and expiries: every 10th row already expired,
 * every 7th expiring in an hour, the rest never.
 */
function entries(count: number, now: number): FixtureEntry[] {
  const out: FixtureEntry[] = [];
  for (let i = 0; i < count; i++) {
    const key = Buffer.alloc(12);
    key.writeUIntBE(Math.floor((i * 2 ** 40) / count), 0, 5);
    key.writeUInt32BE(i, 8);
    const value = Buffer.from(`value ${i} `.padEnd(40 + (i % 60), 'v'));
    const expiresAtMs = i % 10 === 3 ? now - 60_000 : i % 7 === 1 ? now + 3_600_000 : 0;
    out.push({ key, value, etag: 5_000_000 + i * 3, updatedAtMs: now - 86_400_000 + i, expiresAtMs });
  }
  return out;
}

async function scanAll(client: StoreClient): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) out.push(...batch);
  return out;
}

const plain = (e: FixtureEntry | StoredEntry) => ({ key: e.key.toString('hex'), value: e.value.toString('hex'), etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs });

describe('shardpipe restore: a FORMAT.md backup into a differently partitioned cluster', () => {
  let tmp: TempDir;
  let redis: PrivateRedis;
  let backups: string;
  let data: FixtureEntry[];
  let now: number;
  const clusters: StoreCluster[] = [];
  const clients: StoreClient[] = [];

  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-restore-');
    redis = await PrivateRedis.start({ dataDir: tmp.sub('redis') });
    backups = tmp.sub('backups');
    now = Date.now();
    data = entries(20_000, now);
    // Backed up from 3 partitions into 4 shards whose ranges cut across the target's 5 partitions.
    await writeBackupFixture(backups, data, {
      backupId: BACKUP_ID,
      splits: ['2000', '6000', 'a000'],
      rowGroupRows: 3000,
      mapVersion: 7,
      partitions: [
        { id: 0, start: '', end: '5555', node: '127.0.0.1:7001', rows: 6700 },
        { id: 1, start: '5555', end: 'aaaa', node: '127.0.0.1:7002', rows: 6600 },
        { id: 2, start: 'aaaa', end: '', node: '127.0.0.1:7001', rows: 6700 },
      ],
    });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const c of clusters.splice(0)) await c.close();
  });

  afterAll(async () => {
    await redis?.stop();
    await tmp?.remove();
  });

  async function freshCluster(): Promise<{ cluster: StoreCluster; client: StoreClient }> {
    const cluster = await StoreCluster.start({ nodes: 3, partitions: 5 });
    clusters.push(cluster);
    const client = new StoreClient({ seeds: cluster.seeds });
    clients.push(client);
    return { cluster, client };
  }

  const restore = (cluster: StoreCluster, target: string, ...extra: string[]) =>
    runCli(['restore', BACKUP_ID, '--target', target, '--seeds', cluster.seeds.join(','), '--redis', redis.url, '--data-dir', tmp.sub('data'), '--json', '--log-level', 'warn', ...extra]);

  it('restores every live entry with its value, etag, update time and TTL; skips the expired; --verify passes; a later Put gets a higher etag', async () => {
    const { cluster, client } = await freshCluster();
    const r = await restore(cluster, pathToFileURL(backups).href, '--verify');
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    const live = data.filter((e) => e.expiresAtMs === 0 || e.expiresAtMs > Date.now());
    expect(report).toMatchObject({ backupId: BACKUP_ID, rowsRestored: live.length, rowsExpired: data.length - live.length, shards: 4, verified: true, mismatches: [] });
    expect(Object.keys(report)).toEqual(expect.arrayContaining(['backupId', 'rowsRestored', 'shards', 'verified', 'mismatches', 'durationMs', 'rowsPerSecond']));

    const stored = await scanAll(client);
    expect(stored.map(plain)).toEqual(live.map(plain));

    // The nodes' etag sequences moved past the restored etags: a write gets a higher one.
    const map = await client.map();
    for (const partition of map.partitions) {
      const inside = stored.filter((e) => map.lookup(e.key).id === partition.id);
      expect(inside.length).toBeGreaterThan(0);
      const written = await client.put(Key.fromBytes(inside[0]!.key), Buffer.from('after restore'));
      expect(written.etag).toBeGreaterThan(Math.max(...inside.map((e) => e.etag)));
    }
  });

  it('--dry-run prints how the shards fall on the current partitions and writes nothing', async () => {
    const { cluster, client } = await freshCluster();
    const r = await restore(cluster, pathToFileURL(backups).href, '--dry-run');
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout);
    expect(plan).toMatchObject({ backupId: BACKUP_ID, rows: data.length, sourceMapVersion: 7, sourcePartitions: 3, targetMapVersion: 1, targetPartitions: 5, samePartitioning: false });
    // Target boundaries are at 3333, 6666, 9999, cccc: shard [6000, a000) spans partitions 1–3.
    expect(plan.shards.map((s: { targetPartitions: number[] }) => s.targetPartitions)).toEqual([[0], [0, 1], [1, 2, 3], [3, 4]]);
    const text = await runCli(['restore', BACKUP_ID, '--target', pathToFileURL(backups).href, '--seeds', cluster.seeds.join(','), '--dry-run']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('different boundaries');
    expect(text.stdout).toMatch(/^2\s+\[.*\)\s+\d+\s+\d+\s+1,2,3$/m);
    expect((await scanAll(client)).length).toBe(0);
  });

  it('refuses an unknown id and an incomplete backup (exit 3), and an unknown format version (exit 1)', async () => {
    const { cluster } = await freshCluster();
    const missing = await runCli(['restore', '20990101T000000Z-000000', '--target', pathToFileURL(backups).href, '--seeds', cluster.seeds.join(','), '--redis', redis.url]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('RESTORE_BACKUP_NOT_FOUND');

    const incomplete = tmp.sub('incomplete');
    await cp(join(backups, BACKUP_ID), join(incomplete, BACKUP_ID), { recursive: true });
    await rm(join(incomplete, BACKUP_ID, 'manifest.json'));
    const r = await restore(cluster, pathToFileURL(incomplete).href);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('RESTORE_BACKUP_INCOMPLETE');

    const future = tmp.sub('future');
    await cp(join(backups, BACKUP_ID), join(future, BACKUP_ID), { recursive: true });
    const manifest = JSON.parse(await readFile(join(future, BACKUP_ID, 'manifest.json'), 'utf8'));
    await writeFile(join(future, BACKUP_ID, 'manifest.json'), JSON.stringify({ ...manifest, formatVersion: 3 }));
    const f = await restore(cluster, pathToFileURL(future).href);
    expect(f.code).toBe(1);
    expect(f.stderr).toContain('RESTORE_UNSUPPORTED_FORMAT');
  });

  it('a corrupted shard file: the restore names it (exit 2), the other shards are restored, and --verify reports its range', async () => {
    const { cluster, client } = await freshCluster();
    const damaged = tmp.sub('damaged');
    await cp(join(backups, BACKUP_ID), join(damaged, BACKUP_ID), { recursive: true });
    const file = join(damaged, BACKUP_ID, 'shard-00002.parquet');
    const handle = await open(file, 'r+');
    const { size } = await handle.stat();
    // Same size (the manifest's byte count still matches): garbage in the middle of the data pages.
    await handle.write(Buffer.alloc(64, 0x5a), 0, 64, Math.floor(size / 3));
    await handle.close();
    const r = await restore(cluster, pathToFileURL(damaged).href, '--verify');
    expect(r.code, r.stderr).toBe(2);
    const report = JSON.parse(r.stdout);
    expect(report.shardsFailed).toBe(1);
    expect(report.failures[0]).toMatchObject({ shard: 2, file: 'shard-00002.parquet' });
    expect(report.failures[0].reason).toMatch(/RESTORE_(CORRUPT_SHARD|SHARD_HASH_MISMATCH)/);
    expect(report.verified).toBe(false);
    expect(report.mismatches.map((m: { shard: number }) => m.shard)).toEqual([2]);
    expect(report.mismatches[0]).toMatchObject({ file: 'shard-00002.parquet', start: '6000', end: 'a000' });
    // The other shards are complete.
    const stored = await scanAll(client);
    const outside = (e: { key: Buffer }) => Buffer.compare(e.key, Buffer.from('6000', 'hex')) < 0 || Buffer.compare(e.key, Buffer.from('a000', 'hex')) >= 0;
    const live = data.filter((e) => e.expiresAtMs === 0 || e.expiresAtMs > Date.now());
    expect(stored.filter(outside).map(plain)).toEqual(live.filter(outside).map(plain));
  });

  it('restoreShard + verifyRestore in-process: entries that expire between restore and verify are not mismatches; a changed entry is', async () => {
    const { client } = await freshCluster();
    // Far enough out that a slow (loaded) machine still restores the rows before they expire.
    const soon = Date.now() + 10_000;
    const rows = entries(3000, Date.now()).map((e, i) => (i % 100 === 5 ? { ...e, expiresAtMs: soon } : e));
    const dir = tmp.sub('expiring');
    const manifest = await writeBackupFixture(dir, rows, { backupId: BACKUP_ID, splits: ['8000'] });
    const target = openBackupTarget(pathToFileURL(dir).href);
    const firstExpiresAtMs = new Map<number, number>();
    for (const shard of manifest.shards) {
      const local = await openLocalShard(target, BACKUP_ID, shard, { stagingDir: tmp.sub('staging') });
      const done = await restoreShard(client, { file: local.file, shard, fingerprint: local.fingerprint });
      expect(done.rowsDone).toBe(shard.rows);
      firstExpiresAtMs.set(shard.index, done.firstExpiresAtMs);
    }
    // Rows that had expired before the restore are behind the earliest expiry.
    expect([...firstExpiresAtMs.values()].every((t) => t > 0 && t < Date.now())).toBe(true);
    const expiring = rows.find((e) => e.expiresAtMs === soon)!;
    expect(await client.get(Key.fromBytes(expiring.key))).toBeDefined();
    // Wait on the condition, not a fixed time: the entry reads as absent once its expiry passed.
    while ((await client.get(Key.fromBytes(expiring.key))) !== undefined) await new Promise((res) => setTimeout(res, 100));

    const readShard = async function* (shard: ShardSpec) {
      const local = await openLocalShard(target, BACKUP_ID, shard, { stagingDir: tmp.sub('staging') });
      yield* readShardRows(local.file, shard);
    };
    const ok = await verifyRestore(client, manifest.shards, { firstExpiresAtMs, readShard });
    expect(ok.mismatches).toEqual([]);
    expect(ok.shardsReread).toBe(2);

    const changed = rows.find((e) => e.expiresAtMs === 0 && e.key[0]! >= 0x80)!;
    await client.put(Key.fromBytes(changed.key), Buffer.from('changed'));
    const bad = await verifyRestore(client, manifest.shards, { firstExpiresAtMs, readShard });
    expect(bad.mismatches).toHaveLength(1);
    expect(bad.mismatches[0]).toMatchObject({ shard: 1, start: '8000', end: '' });
    expect(bad.mismatches[0]!.actualRows).toBe(bad.mismatches[0]!.expectedRows);
    expect(bad.mismatches[0]!.actualDigest).not.toBe(bad.mismatches[0]!.expectedDigest);
    await target.close();
  });

  it.each([1, 2] as const)('restoreShard stopped inside a row group larger than one decoded batch (8192 rows) resumes from its checkpoint and restores every row (manifest format %i)', async (formatVersion) => {
    const { client } = await freshCluster();
    const rows = entries(20_000, Date.now()).map((e) => ({ ...e, expiresAtMs: 0 }));
    const dir = tmp.sub(`big-row-groups-${formatVersion}`);
    // One row group of 20,000 rows: the reader decodes it as batches of 8192, 8192 and 3616 rows.
    const manifest = await writeBackupFixture(dir, rows, { backupId: BACKUP_ID, splits: [], rowGroupRows: 20_000, formatVersion });
    const target = openBackupTarget(pathToFileURL(dir).href);
    const shard = manifest.shards[0]!;
    const local = await openLocalShard(target, BACKUP_ID, shard, { stagingDir: tmp.sub('staging') });
    const task = { file: local.file, shard, fingerprint: local.fingerprint };
    const stop = new AbortController();
    let saved: ShardCheckpoint | undefined;
    // Chunks of one decoded batch each: every checkpoint before the end falls on a batch boundary
    // inside the row group, which must not be taken for the row group's end.
    const first = restoreShard(client, task, {
      chunkRows: 8192,
      signal: stop.signal,
      onCheckpoint: async (checkpoint) => {
        saved ??= checkpoint;
        stop.abort(new Error('stopped for the test'));
      },
    });
    await expect(first).rejects.toThrow('stopped for the test');
    expect(saved!.rowsDone % 8192).toBe(0);
    expect(saved!.rowsDone).toBeLessThan(shard.rows);
    expect(saved).toMatchObject({ rowGroup: 0, rowOffset: saved!.rowsDone });
    const done = await restoreShard(client, task, { resumeFrom: saved, chunkRows: 8192 });
    expect(done.rowsDone).toBe(shard.rows);
    // Format 1 continues the checkpoint's digest; format 2 hashed the rows before the checkpoint again (else it would have thrown).
    if (formatVersion === 1) expect(done.fileDigest).toBe(shard.checksum);
    expect((await scanAll(client)).map(plain)).toEqual(rows.map(plain));
    await local.release();
    await target.close();
  });

  it('a restore killed with SIGKILL mid-way: running the same command again completes and verify passes', async () => {
    const { cluster, client } = await freshCluster();
    const args = ['restore', BACKUP_ID, '--target', pathToFileURL(backups).href, '--seeds', cluster.seeds.join(','), '--redis', redis.url, '--data-dir', tmp.sub('data'), '--json', '--lock-duration', '2s', '--log-level', 'warn'];
    const first = spawn(process.execPath, [CLI, ...args, '--max-rows-per-second', '1000'], { stdio: 'ignore' });
    for (;;) {
      const n = (await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count;
      if (n > 2500) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    const exited = once(first, 'exit');
    first.kill('SIGKILL');
    await exited;
    const partial = (await client.checksum(Buffer.alloc(0), Buffer.alloc(0))).count;
    const live = data.filter((e) => e.expiresAtMs === 0 || e.expiresAtMs > Date.now());
    expect(partial).toBeLessThan(live.length);
    // What the re-run resumes from: checkpoints the killed worker wrote into its shard jobs.
    const queue = new Queue<RestoreShardData>(RESTORE_SHARD_QUEUE, { connection: connectionFromUrl(redis.url) });
    const jobs = (await queue.getJobs()).filter((j) => j.data.spec.target === pathToFileURL(backups).href && !j.finishedOn);
    await queue.close();
    expect(jobs.some((j) => (j.data.checkpoint?.rowsDone ?? 0) > 0)).toBe(true);

    const second = await runCli([...args, '--verify']);
    expect(second.code, second.stderr).toBe(0);
    const report = JSON.parse(second.stdout);
    expect(report).toMatchObject({ rowsRestored: live.length, verified: true, mismatches: [] });
    expect((await scanAll(client)).map(plain)).toEqual(live.map(plain));
  }, 180_000);
});
