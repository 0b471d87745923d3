import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MANIFEST_FORMAT_VERSION, newBackupId, openBackupTarget, parquetShardStream, shardFileName, writeManifest, type BackupManifest, type BackupTarget, type ShardStreamStats } from '../../backup/index.js';
import { RangeDigest, StoreClient, type StoredEntry } from '../../store/index.js';
import { Azurite } from '../helpers/azurite.js';
import { StoreCluster, runCli, sortedRows } from '../helpers/store-cluster.js';
import { useStack } from '../helpers/stack.js';

async function scanAll(client: StoreClient): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) out.push(...batch);
  return out;
}

const plain = (e: StoredEntry) => ({ key: e.key.toString('hex'), value: e.value.toString('hex'), etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs });

/**
 * A backup of the whole cluster written by backup's own shard writer (parquetShardStream straight
 * into the target, manifest last), cut into shards at `splits`. Nothing writes meanwhile, so plain
 * scans stand in for the backup's snapshots.
 */
async function backUp(client: StoreClient, target: BackupTarget, splits: string[]): Promise<BackupManifest> {
  const backupId = newBackupId();
  const startedAt = new Date().toISOString();
  const bounds = ['', ...splits, ''];
  const shards: BackupManifest['shards'] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const start = Buffer.from(bounds[i]!, 'hex');
    const end = Buffer.from(bounds[i + 1]!, 'hex');
    const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
    const bytes = parquetShardStream(client.scanAll(start, end), { backupId, shard: i, rangeStart: start, rangeEnd: end }, stats, { rowGroupRows: 4000 });
    const written = await target.writeFile(backupId, shardFileName(i), bytes);
    shards.push({ index: i, start: bounds[i]!, end: bounds[i + 1]!, file: shardFileName(i), rows: stats.rows, bytes: written.bytes, checksum: stats.digest.toHex(), contentHash: stats.contentHash });
  }
  const map = await client.map();
  const manifest: BackupManifest = {
    formatVersion: MANIFEST_FORMAT_VERSION,
    backupId,
    startedAt,
    finishedAt: new Date().toISOString(),
    mapVersion: map.version,
    snapshotAt: startedAt,
    partitions: map.partitions.map((p) => ({ id: p.id, start: p.start.toString('hex'), end: p.end.toString('hex'), node: p.node, rows: 0 })),
    shards,
    totals: { rows: shards.reduce((n, s) => n + s.rows, 0), bytes: shards.reduce((n, s) => n + s.bytes, 0) },
  };
  await writeManifest(target, manifest);
  return manifest;
}

describe('backup (backup module writer) then shardpipe restore into other clusters', () => {
  let sourceEntries: StoredEntry[];
  let manifest: BackupManifest;
  let folder: string;

  const stack = useStack({
    prefix: 'shardpipe-restore-e2e-',
    nodes: 2,
    partitions: 3,
    seed: async ({ cluster: source, client: sourceClient, redis }) => {
      const now = Date.now();
      // Etags and update times come from the source nodes; a third of the rows have TTLs an hour out.
      await sourceClient.bulkPutAll(sortedRows(24_000, 1).map((chunk) => chunk.map((r, i) => ({ ...r, expiresAtMs: i % 3 === 0 ? now + 3_600_000 : 0 }))));
      sourceEntries = await scanAll(sourceClient);
      expect(sourceEntries).toHaveLength(24_000);
      folder = stack.sub('backups');
      const target = openBackupTarget(pathToFileURL(folder).href);
      manifest = await backUp(sourceClient, target, ['3000', '9000', 'c000']);
      await target.close();
    },
  });

  it('file:// target into a 3-node, 5-partition cluster: verify passes and every key, value, etag, update time and TTL matches the source', async () => {
    const target = await StoreCluster.start({ nodes: 3, partitions: 5 });
    const client = new StoreClient({ seeds: target.seeds });
    try {
      const r = await runCli(['restore', manifest.backupId, '--target', pathToFileURL(folder).href, '--seeds', target.seeds.join(','), '--redis', stack.redis.url, '--data-dir', stack.sub('data'), '--verify', '--json', '--log-level', 'warn']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ backupId: manifest.backupId, rowsRestored: 24_000, shards: 4, verified: true, mismatches: [] });
      expect((await scanAll(client)).map(plain)).toEqual(sourceEntries.map(plain));
    } finally {
      client.close();
      await target.close();
    }
  }, 120_000);

  it('az:// target (Azurite): restores through staged copies, verify passes, nothing is left in the staging folder', async () => {
    const azurite = await Azurite.start();
    const target = await StoreCluster.start({ nodes: 1, partitions: 2 });
    const client = new StoreClient({ seeds: target.seeds });
    try {
      const container = await azurite.createContainer();
      await azurite.uploadFolder(container, join(folder, manifest.backupId), `nightly/${manifest.backupId}`);
      const dataDir = stack.sub('data-az');
      const url = `az://${container.containerName}/nightly`;
      const args = ['restore', manifest.backupId, '--target', url, '--seeds', target.seeds.join(','), '--redis', stack.redis.url, '--data-dir', dataDir, '--json', '--log-level', 'warn'];
      const dry = await runCli([...args, '--dry-run'], { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString });
      expect(dry.code, dry.stderr).toBe(0);
      expect(JSON.parse(dry.stdout)).toMatchObject({ rows: 24_000, targetPartitions: 2, samePartitioning: false });

      const r = await runCli([...args, '--verify'], { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ rowsRestored: 24_000, verified: true, mismatches: [] });
      expect((await scanAll(client)).map(plain)).toEqual(sourceEntries.map(plain));
      const staged = await readdir(join(dataDir, 'restore-staging'), { recursive: true, withFileTypes: true });
      expect(staged.filter((e) => e.isFile())).toEqual([]);

      // Without credentials the target refuses, and says so.
      const denied = await runCli(args, { AZURE_STORAGE_CONNECTION_STRING: '' });
      expect(denied.code).toBe(1);
      expect(denied.stderr).toContain('BACKUP_ACCESS_DENIED');
    } finally {
      client.close();
      await target.close();
      await azurite.deleteContainers();
      await azurite.stop();
    }
  }, 180_000);
});
