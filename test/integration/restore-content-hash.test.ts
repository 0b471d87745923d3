import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ShardContentHash, openBackupTarget, readManifest, readShardColumns, readShardRows, serializeManifest, type BackupManifest } from '../../backup/index.js';
import { statDataFile } from '../../files/index.js';
import { RestoreError, openLocalShard, restoreShard, type ShardCheckpoint } from '../../restore/index.js';
import { StoreClient, type BulkRowInput, type StoredEntry } from '../../store/index.js';
import { shardParquet } from '../helpers/backup-fixture.js';
import { rejectionOf } from '../helpers/rejection.js';
import { StoreCluster, runCli, sortedRows } from '../helpers/store-cluster.js';
import { useStack } from '../helpers/stack.js';

// Manifest format 2: `backup run` gives every shard an ordered content hash; restore checks each
// shard file against it (instead of each row's digest) and still proves the store with --verify.

const ROWS = 30_000;

async function scanAll(client: StoreClient): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) out.push(...batch);
  return out;
}

const plain = (e: StoredEntry) => ({ key: e.key.toString('hex'), value: e.value.toString('hex'), etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs });

describe('restore against the per-shard content hash (manifest format 2)', () => {
  let targetUrl: string;
  let folder: string;
  let backupId: string;
  let manifest: BackupManifest;
  let source: StoredEntry[];
  const stack = useStack({
    prefix: 'shardpipe-content-hash-',
    nodes: 2,
    partitions: 4,
    seed: async ({ dir, client }) => {
      folder = join(dir, 'backups');
      targetUrl = pathToFileURL(folder).href;
      const far = Date.now() + 30 * 86_400_000;
      for (const chunk of sortedRows(ROWS, 3)) {
        const rows: BulkRowInput[] = chunk.map((r, i) => ({ ...r, etag: 7000 + i, updatedAtMs: 1_700_000_000_000 + i, expiresAtMs: i % 4 === 0 ? far + i : 0 }));
        await client.bulkPutAll([rows]);
      }
      source = await scanAll(client);
    },
  });

  const cli = (...args: string[]) => runCli([...args, '--log-level', 'warn']);

  /** A fresh 3-node, 5-partition cluster (partitions unlike the backup's), closed after `use`. */
  async function intoFreshCluster<T>(use: (cluster: StoreCluster, client: StoreClient) => Promise<T>): Promise<T> {
    const cluster = await StoreCluster.start({ nodes: 3, partitions: 5 });
    const client = new StoreClient({ seeds: cluster.seeds });
    try {
      return await use(cluster, client);
    } finally {
      client.close();
      await cluster.close();
    }
  }

  const restore = (cluster: StoreCluster, url: string, dataDir: string) =>
    cli('restore', backupId, '--target', url, '--seeds', cluster.seeds.join(','), '--redis', stack.redis.url, '--data-dir', stack.sub(dataDir), '--verify', '--json');

  /** A copy of the backup whose shard `index` holds `rows` instead (a rewritten, valid Parquet file), with the manifest edited by `edit`. */
  async function tampered(name: string, index: number, change: (rows: StoredEntry[]) => StoredEntry[], edit: (m: BackupManifest, bytes: number) => BackupManifest): Promise<string> {
    const dir = stack.sub(name);
    await cp(join(folder, backupId), join(dir, backupId), { recursive: true });
    const shard = manifest.shards[index]!;
    const rows: StoredEntry[] = [];
    for await (const chunk of readShardRows(await statDataFile(join(folder, backupId, shard.file), 'parquet'))) rows.push(...chunk.rows);
    const bytes = shardParquet(change(rows), { backupId, shard: index, start: shard.start, end: shard.end }, 1000);
    await writeFile(join(dir, backupId, shard.file), bytes);
    const edited = edit(structuredClone(manifest), bytes.byteLength);
    edited.totals = { rows: edited.shards.reduce((n, s) => n + s.rows, 0), bytes: edited.shards.reduce((n, s) => n + s.bytes, 0) };
    await writeFile(join(dir, backupId, 'manifest.json'), serializeManifest(edited));
    return dir;
  }

  it('backup run writes format 2 with each shard file\'s content hash; a restore of it passes --verify with every row as the source', async () => {
    const r = await cli('backup', 'run', '--target', targetUrl, '--shard-rows', '8000', ...stack.cliArgs, '--json', '--row-group-rows', '1000');
    expect(r.code, r.stderr).toBe(0);
    backupId = JSON.parse(r.stdout).backupId;
    manifest = await readManifest(openBackupTarget(targetUrl), backupId);
    expect(manifest.formatVersion).toBe(2);
    expect(manifest.shards.length).toBeGreaterThan(2);
    // Each hash is the file's: recomputed here from the decoded columns, in chunks of another size.
    for (const s of manifest.shards) {
      const hash = new ShardContentHash();
      for await (const c of readShardColumns(await statDataFile(join(folder, backupId, s.file), 'parquet'), { chunkRows: 777 })) hash.add(c.columns, c.from, c.to);
      expect({ shard: s.index, rows: hash.rows, hash: hash.toHex() }).toEqual({ shard: s.index, rows: s.rows, hash: s.contentHash });
    }
    expect(new Set(manifest.shards.map((s) => s.contentHash)).size).toBe(manifest.shards.length);

    await intoFreshCluster(async (cluster, client) => {
      const done = await restore(cluster, targetUrl, 'data-ok');
      expect(done.code, done.stderr).toBe(0);
      expect(JSON.parse(done.stdout)).toMatchObject({ rowsRestored: ROWS, shardsFailed: 0, verified: true, mismatches: [] });
      expect((await scanAll(client)).map(plain)).toEqual(source.map(plain));
    });
  });

  it('a shard file with one flipped byte in a value fails with RESTORE_SHARD_HASH_MISMATCH naming the file, both hashes and the row count; the other shards are restored', async () => {
    const index = 1;
    const dir = await tampered(
      'flipped',
      index,
      (rows) => rows.map((e, i) => (i === 123 ? { ...e, value: Buffer.from(e.value.map((b, j) => (j === 50 ? b ^ 0x01 : b))) } : e)),
      (m, bytes) => ({ ...m, shards: m.shards.map((s) => (s.index === index ? { ...s, bytes } : s)) }),
    );
    const shard = manifest.shards[index]!;
    await intoFreshCluster(async (cluster, client) => {
      const r = await restore(cluster, pathToFileURL(dir).href, 'data-flipped');
      expect(r.code, r.stderr).toBe(2);
      const report = JSON.parse(r.stdout);
      expect(report.shardsFailed).toBe(1);
      expect(report.failures[0]).toMatchObject({ shard: index, file: shard.file, code: 'RESTORE_SHARD_HASH_MISMATCH' });
      expect(report.failures[0].reason).toContain(shard.file);
      expect(report.failures[0].reason).toContain(shard.contentHash);
      expect(report.failures[0].reason).toContain(`${shard.rows} rows`);
      const outside = (e: StoredEntry) => e.key.toString('hex') < shard.start || (shard.end !== '' && e.key.toString('hex') >= shard.end);
      expect((await scanAll(client)).filter(outside).map(plain)).toEqual(source.filter(outside).map(plain));

      // The typed error in-process: expected and computed hash and row count in its context.
      const target = openBackupTarget(pathToFileURL(dir).href);
      const replaced = (await readManifest(target, backupId)).shards[index]!;
      const local = await openLocalShard(target, backupId, replaced, { stagingDir: stack.sub('staging') });
      const err = await rejectionOf(restoreShard(client, { file: local.file, shard: replaced, fingerprint: local.fingerprint }), RestoreError);
      expect(err.code).toBe('RESTORE_SHARD_HASH_MISMATCH');
      expect(err.context).toMatchObject({ shard: index, file: shard.file, expectedHash: shard.contentHash, expectedRows: shard.rows, rows: shard.rows });
      expect(err.context.computedHash).toMatch(/^[0-9a-f]{64}$/);
      expect(err.context.computedHash).not.toBe(shard.contentHash);
      await target.close();
    });
  });

  it('a dropped row is caught: by the footer\'s row count (RESTORE_CORRUPT_SHARD), and with the manifest\'s count edited to match, by the content hash', async () => {
    const index = 0;
    const shard = manifest.shards[index]!;
    const drop = (rows: StoredEntry[]) => rows.filter((_, i) => i !== 500);
    const countKept = await tampered('dropped', index, drop, (m, bytes) => ({ ...m, shards: m.shards.map((s) => (s.index === index ? { ...s, bytes } : s)) }));
    const countEdited = await tampered('dropped-edited', index, drop, (m, bytes) => ({ ...m, shards: m.shards.map((s) => (s.index === index ? { ...s, bytes, rows: s.rows - 1 } : s)) }));
    await intoFreshCluster(async (cluster) => {
      const kept = await restore(cluster, pathToFileURL(countKept).href, 'data-dropped');
      expect(kept.code, kept.stderr).toBe(2);
      expect(JSON.parse(kept.stdout).failures[0]).toMatchObject({ shard: index, file: shard.file, code: 'RESTORE_CORRUPT_SHARD' });

      const edited = await restore(cluster, pathToFileURL(countEdited).href, 'data-dropped-edited');
      expect(edited.code, edited.stderr).toBe(2);
      const failure = JSON.parse(edited.stdout).failures[0];
      expect(failure).toMatchObject({ shard: index, file: shard.file, code: 'RESTORE_SHARD_HASH_MISMATCH' });
      expect(failure.reason).toContain(shard.contentHash);
    });
  });

  it('an old-format manifest (format 1, no content hash) still restores with the per-row check, and a changed value still fails it', async () => {
    const old = stack.sub('format-1');
    await cp(join(folder, backupId), join(old, backupId), { recursive: true });
    const v1 = { ...manifest, formatVersion: 1 as const, shards: manifest.shards.map(({ contentHash: _dropped, ...s }) => s) };
    await writeFile(join(old, backupId, 'manifest.json'), serializeManifest(v1));
    const index = 2;
    const changed = await tampered(
      'format-1-changed',
      index,
      (rows) => rows.map((e, i) => (i === 7 ? { ...e, value: Buffer.from('changed') } : e)),
      (m, bytes) => ({ ...m, formatVersion: 1, shards: m.shards.map(({ contentHash: _dropped, ...s }) => (s.index === index ? { ...s, bytes } : s)) }),
    );
    await intoFreshCluster(async (cluster, client) => {
      const r = await restore(cluster, pathToFileURL(old).href, 'data-v1');
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ rowsRestored: ROWS, verified: true, mismatches: [] });
      expect((await scanAll(client)).map(plain)).toEqual(source.map(plain));

      const bad = await restore(cluster, pathToFileURL(changed).href, 'data-v1-changed');
      expect(bad.code, bad.stderr).toBe(2);
      expect(JSON.parse(bad.stdout).failures[0]).toMatchObject({ shard: index, code: 'RESTORE_SHARD_CHECKSUM_MISMATCH' });
    });
  });

  it('a shard stopped mid-chunk resumes with other chunk sizes: the rows before its checkpoint are hashed again, not re-sent, and the hash holds', async () => {
    const shard = manifest.shards.reduce((a, b) => (b.rows > a.rows ? b : a));
    const target = openBackupTarget(targetUrl);
    const local = await openLocalShard(target, backupId, shard, { stagingDir: stack.sub('staging') });
    const task = { file: local.file, shard, fingerprint: local.fingerprint };
    await intoFreshCluster(async (_cluster, client) => {
      const stop = new AbortController();
      let saved: ShardCheckpoint | undefined;
      const first = restoreShard(client, task, {
        chunkRows: 700,
        maxInFlight: 1,
        checkpointIntervalMs: 0,
        signal: stop.signal,
        onCheckpoint: async (checkpoint) => {
          if (checkpoint.rowsDone < 2000 || checkpoint.rowOffset === 0) return;
          saved ??= checkpoint;
          stop.abort(new Error('stopped for the test'));
        },
      });
      await expect(first).rejects.toThrow('stopped for the test');
      // Chunks of 700 in row groups of 1000: the checkpoint sits 700 rows into row group 2, and chunks of 450 straddle it.
      expect(saved).toMatchObject({ rowGroup: 2, rowOffset: 700, rowsDone: 2700 });
      const done = await restoreShard(client, task, { resumeFrom: saved, chunkRows: 450 });
      expect(done).toMatchObject({ rowsDone: shard.rows, rowsRestored: shard.rows });
      const inShard = source.filter((e) => e.key.toString('hex') >= shard.start && (shard.end === '' || e.key.toString('hex') < shard.end));
      expect((await scanAll(client)).map(plain)).toEqual(inShard.map(plain));
    });
    await local.release();
    await target.close();
  });

  it('checkpoints are written at most once per checkpointIntervalMs, and the newest always at the end', async () => {
    const shard = manifest.shards.reduce((a, b) => (b.rows > a.rows ? b : a));
    const target = openBackupTarget(targetUrl);
    const local = await openLocalShard(target, backupId, shard, { stagingDir: stack.sub('staging') });
    const task = { file: local.file, shard, fingerprint: local.fingerprint };
    await intoFreshCluster(async (_cluster, client) => {
      const every: ShardCheckpoint[] = [];
      await restoreShard(client, task, { chunkRows: 500, maxInFlight: 1, checkpointIntervalMs: 0, onCheckpoint: async (c) => void every.push(c) });
      expect(every.length).toBeGreaterThan(4);
      const spaced: ShardCheckpoint[] = [];
      const done = await restoreShard(client, task, { chunkRows: 500, maxInFlight: 1, checkpointIntervalMs: 3_600_000, onCheckpoint: async (c) => void spaced.push(c) });
      // The first one (nothing written before it), then nothing for an hour but the last, at the end.
      expect(spaced.map((c) => c.rowsDone)).toEqual([500, shard.rows]);
      expect(spaced.at(-1)).toEqual(done);
    });
    await local.release();
    await target.close();
  });
});
