import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { openBackupTarget, readManifest, type BackupManifest } from '../../backup/index.js';
import { findFreePort } from '../../common/index.js';
import { openLocalShard, readShardRows, verifyRestore, type ShardSpec } from '../../restore/index.js';
import { Key, PartitionMap, StoreClient, partitionContains, type Partition, type StoredEntry } from '../../store/index.js';
import { NodeProcess, StoreCluster, runCli, sortedRows } from '../helpers/store-cluster.js';
import { useStack } from '../helpers/stack.js';

async function scanRange(client: StoreClient, start: Buffer = Buffer.alloc(0), end: Buffer = Buffer.alloc(0)): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for await (const batch of client.scanAll(start, end)) out.push(...batch);
  return out;
}

const plain = (e: StoredEntry) => ({ key: e.key.toString('hex'), value: e.value.toString('hex'), etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs });
const inPartition = (p: Pick<Partition, 'start' | 'end'>) => (e: { key: Buffer }) => partitionContains(p, e.key);

describe('shardpipe restore --partitions / --range: restoring part of a backup (replacing a failed store node)', () => {
  let backedUp: StoredEntry[];
  let backupId: string;
  let targetUrl: string;
  const cli = (...args: string[]) => runCli([...args, '--log-level', 'warn']);

  // Three nodes, one partition each.
  const stack = useStack({
    prefix: 'shardpipe-restore-partial-',
    nodes: 3,
    partitions: 3,
    timeoutMs: 120_000,
    seed: async ({ cluster: source, client: sourceClient, redis }) => {
      const now = Date.now();
      await sourceClient.bulkPutAll(sortedRows(6000, 3).map((chunk) => chunk.map((r, i) => ({ ...r, expiresAtMs: i % 5 === 0 ? now + 3_600_000 : 0 }))));
      targetUrl = pathToFileURL(stack.sub('backups')).href;
      const r = await cli('backup', 'run', '--target', targetUrl, '--seeds', source.seeds.join(','), '--redis', redis.url, '--data-dir', stack.sub('data'), '--shard-rows', '700', '--json');
      expect(r.code, r.stderr).toBe(0);
      backupId = JSON.parse(r.stdout).backupId;
      backedUp = await scanRange(sourceClient);
      expect(backedUp).toHaveLength(6000);
    },
  });

  it('runbook: a node and its disk are lost; a new empty node takes its partition (map v2) and `restore --partitions A --verify` brings back only that range', async () => {
    const map = stack.cluster.map;
    const a = map.partitions[0]!;
    const b = map.partitions[1]!;
    const deadIndex = stack.cluster.nodes.findIndex((n) => n.address === a.node);
    expect(map.partitionsOf(a.node).map((p) => p.id)).toEqual([a.id]);

    // After the backup, keys change in partitions A and B.
    const changedA = backedUp.filter(inPartition(a)).filter((_, i) => i % 50 === 0);
    const changedB = backedUp.filter(inPartition(b)).filter((_, i) => i % 50 === 0);
    for (const e of [...changedA, ...changedB]) await stack.client.put(Key.fromBytes(e.key), Buffer.from('newer than the backup'));
    const afterChanges = await scanRange(stack.client);

    // A's node dies with its disk.
    await stack.cluster.nodes[deadIndex]!.kill();
    const healthy = stack.cluster.nodes.filter((_, i) => i !== deadIndex).map((n) => n.address);

    // The runbook: map --json → move A's partitions to NEW, version + 1 → start NEW → install.
    const current = await cli('cluster', 'map', '--json', '--seeds', healthy.join(','));
    expect(current.code, current.stderr).toBe(0);
    const json = JSON.parse(current.stdout) as { version: number; partitions: Array<{ id: number; node: string }> };
    const newAddress = `127.0.0.1:${await findFreePort()}`;
    const edited = { ...json, version: json.version + 1, partitions: json.partitions.map((p) => (p.node === a.node ? { ...p, node: newAddress } : p)) };
    const mapFile = stack.sub('map-v2.json');
    await writeFile(mapFile, JSON.stringify(edited));
    const fresh = new NodeProcess(newAddress, stack.sub('new-node'), mapFile);
    await fresh.start();
    try {
      const installed = await cli('cluster', 'install', '--map', mapFile);
      expect(installed.code, installed.stderr + installed.stdout).toBe(0);
      const seeds = [newAddress, ...healthy].join(',');
      const args = ['restore', backupId, '--target', targetUrl, '--seeds', seeds, '--redis', stack.redis.url, '--data-dir', stack.sub('data')];

      // Unknown ids and malformed ranges are usage errors naming the value and the known ids.
      const badId = await cli(...args, '--partitions', `${a.id},9`);
      expect(badId.code).toBe(64);
      expect(badId.stderr).toContain('partition 9 is not in the target cluster');
      expect(badId.stderr).toContain(`partitions are ${map.partitions.map((p) => p.id).join(', ')}`);
      const badRange = await cli(...args, '--range', '12:zz');
      expect(badRange.code).toBe(64);
      expect(badRange.stderr).toContain('"12:zz"');

      // The dry run shows the selection and the shards read.
      const dry = await cli(...args, '--partitions', String(a.id), '--dry-run', '--json');
      expect(dry.code, dry.stderr).toBe(0);
      const plan = JSON.parse(dry.stdout);
      const manifest = await readBackupManifest(targetUrl, backupId);
      expect(plan.selection).toEqual([{ start: a.start.toString('hex'), end: a.end.toString('hex') }]);
      expect(plan.shardsSkipped).toBeGreaterThan(0);
      expect(plan.shards.length + plan.shardsSkipped).toBe(manifest.shards.length);
      for (const s of plan.shards) {
        expect(s.targetPartitions).toEqual([a.id]);
        for (const piece of s.pieces) expect(inPartition(a)({ key: Buffer.from(piece.start, 'hex') })).toBe(true);
      }
      const dryText = await cli(...args, '--partitions', String(a.id), '--dry-run');
      expect(dryText.code, dryText.stderr).toBe(0);
      expect(dryText.stdout).toContain(`partial restore of [-∞, `);
      expect(dryText.stdout).toContain(`reads ${plan.shards.length} of ${manifest.shards.length} shards`);
      expect(dryText.stdout).toContain('restored ranges');

      const r = await cli(...args, '--partitions', String(a.id), '--verify', '--json');
      expect(r.code, r.stderr).toBe(0);
      const report = JSON.parse(r.stdout);
      const backedUpA = backedUp.filter(inPartition(a));
      expect(report).toMatchObject({ rowsRestored: backedUpA.length, rowsExpired: 0, verified: true, mismatches: [], ranges: plan.selection });
      expect(report.rowsRestored + report.rowsOutsideRange).toBe(plan.rows);

      const client = new StoreClient({ seeds: seeds.split(',') });
      try {
        // A's range is the backup (its post-backup changes died with the disk); B and C keep their newer state.
        expect((await scanRange(client, a.start, a.end)).map(plain)).toEqual(backedUpA.map(plain));
        const untouched = (e: StoredEntry) => !inPartition(a)(e);
        expect((await scanRange(client)).filter(untouched).map(plain)).toEqual(afterChanges.filter(untouched).map(plain));
        for (const e of changedB) expect((await client.get(Key.fromBytes(e.key)))?.value.toString()).toBe('newer than the backup');
      } finally {
        client.close();
      }

      // Running the same command again finds the same (finished) restore; a full restore is another flow.
      const again = await cli(...args, '--partitions', String(a.id), '--json');
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout).restoreId).toBe(report.restoreId);
      const full = await cli(...args, '--dry-run', '--json');
      expect(JSON.parse(full.stdout).selection).toBeUndefined();

      const stats = await cli('stats', '--seeds', seeds);
      expect(stats.code, stats.stderr).toBe(0);
      expect(stats.stdout).toContain(newAddress);
    } finally {
      await fresh.kill();
    }
  }, 240_000);

  it('--range cutting through shards: only keys inside are written (rowsOutsideRange counts the rest); --verify checks the pieces and catches a change inside them', async () => {
    const target = await StoreCluster.start({ nodes: 2, partitions: 4 });
    const client = new StoreClient({ seeds: target.seeds });
    try {
      const low = backedUp[1234]!.key.toString('hex');
      const high = backedUp[2345]!.key.toString('hex');
      const tail = backedUp[5555]!.key.toString('hex');
      const args = ['restore', backupId, '--target', targetUrl, '--seeds', target.seeds.join(','), '--redis', stack.redis.url, '--data-dir', stack.sub('data'), '--json'];
      const dry = JSON.parse((await cli(...args, '--range', `${low}:${high}`, '--range', `${tail}:`, '--dry-run')).stdout);
      // The test is only worth something if the ranges cut through shard files.
      expect(dry.shards.some((s: { start: string; end: string; pieces: Array<{ start: string; end: string }> }) => s.pieces[0]!.start !== s.start)).toBe(true);

      const r = await cli(...args, '--range', `${low}:${high},${tail}:`, '--verify');
      expect(r.code, r.stderr).toBe(0);
      const report = JSON.parse(r.stdout);
      const wanted = [...backedUp.slice(1234, 2345), ...backedUp.slice(5555)];
      expect(report).toMatchObject({ rowsRestored: wanted.length, verified: true, mismatches: [] });
      expect(report.rowsOutsideRange).toBe(dry.rows - wanted.length);
      expect(report.rowsOutsideRange).toBeGreaterThan(0);
      expect((await scanRange(client)).map(plain)).toEqual(wanted.map(plain));

      // In-process verify of the same selection: a key changed inside a piece is a mismatch of that piece; one outside is not looked at.
      const manifest = await readBackupManifest(targetUrl, backupId);
      const backupTarget = openBackupTarget(targetUrl);
      const readShard = async function* (shard: ShardSpec) {
        const local = await openLocalShard(backupTarget, backupId, shard, { stagingDir: stack.sub('staging') });
        yield* readShardRows(local.file, shard);
      };
      const selection = [{ start: low, end: high }, { start: tail, end: '' }];
      const ok = await verifyRestore(client, manifest.shards, { selection, readShard });
      expect(ok.mismatches).toEqual([]);
      expect(ok.rangesChecked).toBeGreaterThanOrEqual(ok.shardsChecked);
      expect(ok.shardsChecked).toBe(dry.shards.length);
      await client.put(Key.fromBytes(backedUp[2000]!.key), Buffer.from('changed inside'));
      await client.put(Key.fromBytes(backedUp[3000]!.key), Buffer.from('written outside'));
      const bad = await verifyRestore(client, manifest.shards, { selection, readShard });
      expect(bad.mismatches).toHaveLength(1);
      const m = bad.mismatches[0]!;
      expect(Buffer.compare(Buffer.from(m.start, 'hex'), backedUp[2000]!.key) <= 0 && Buffer.compare(backedUp[2000]!.key, Buffer.from(m.end, 'hex')) < 0).toBe(true);
      expect(m.actualRows).toBe(m.expectedRows);
      await backupTarget.close();
    } finally {
      client.close();
      await target.close();
    }
  }, 180_000);

  it('the old disk survived: a node started on it at a new address under a newer map serves its partitions, no restore needed', async () => {
    const cluster = await StoreCluster.start({ nodes: 3, partitions: 3 });
    const seeds = cluster.seeds;
    let moved: NodeProcess | undefined;
    try {
      const client = new StoreClient({ seeds });
      await client.bulkPutAll(sortedRows(3000, 9));
      const before = await scanRange(client);
      client.close();
      const old = cluster.nodes[2]!;
      await old.stop();
      const newAddress = `127.0.0.1:${await findFreePort()}`;
      const next = PartitionMap.fromJson({ ...cluster.map.toJson(), version: cluster.map.version + 1, partitions: cluster.map.toJson().partitions.map((p) => (p.node === old.address ? { ...p, node: newAddress } : p)) });
      const mapFile = join(cluster.dir, 'map-v2.json');
      await writeFile(mapFile, JSON.stringify(next.toJson()));
      // Partition folders are named by partition id (partition-<id>), not by node address.
      moved = new NodeProcess(newAddress, old.dataDir, mapFile);
      await moved.start();
      const installed = await cli('cluster', 'install', '--map', mapFile);
      expect(installed.code, installed.stderr + installed.stdout).toBe(0);
      const after = new StoreClient({ seeds: [newAddress, seeds[0]!] });
      try {
        expect((await scanRange(after)).map(plain)).toEqual(before.map(plain));
      } finally {
        after.close();
      }
    } finally {
      await moved?.kill();
      await cluster.close();
    }
  }, 120_000);
});

async function readBackupManifest(url: string, backupId: string): Promise<BackupManifest> {
  const target = openBackupTarget(url);
  try {
    return await readManifest(target, backupId);
  } finally {
    await target.close();
  }
}
