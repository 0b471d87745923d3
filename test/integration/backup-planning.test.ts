import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BackupError, openBackupTarget, planBackupShards, readManifest } from '../../backup/index.js';
import { createLogger } from '../../common/index.js';
import { MetricsServer } from '../../metrics-server/index.js';
import { StoreClient } from '../../store/index.js';
import { StoreCluster, runCli, sortedRows } from '../helpers/store-cluster.js';
import { keysPerShard } from '../helpers/shard-tiling.js';
import { useStack } from '../helpers/stack.js';

const ROWS = 60_000;
const logger = createLogger({ level: 'warn', pretty: false });

describe('backup plans for partitions that need more than 1000 pieces; restore --target takes what backup run takes', () => {
  // One partition holds every row: at --shard-rows 50 it needs 1200 pieces, more than one SplitKeys call may ask for.
  const stack = useStack({ prefix: 'shardpipe-backup-plan-', nodes: 1, partitions: 1, seed: async ({ client }) => void (await client.bulkPutAll(sortedRows(ROWS, 5))) });

  const cli = (...args: string[]) => runCli([...args, ...stack.cliArgs, '--log-level', 'warn']);

  it('backup run --shard-rows 50 on a 60,000-row partition succeeds, and every row is in exactly one shard', async () => {
    const folder = join(stack.dir, 'fine');
    const r = await cli('backup', 'run', '--target', folder, '--shard-rows', '50', '--concurrency', '4', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('BACKUP_PLAN_FAILED');
    const report = JSON.parse(r.stdout);
    expect(report.rows).toBe(ROWS);
    const manifest = await readManifest(openBackupTarget(pathToFileURL(folder).href), report.backupId);
    expect(manifest.shards.length).toBeGreaterThan(1000);
    // The shards tile the keyspace, so each stored key falls in exactly one shard, whose row count the manifest states.
    const { counts, seen } = await keysPerShard(stack.client, manifest.shards);
    expect(seen).toBe(ROWS);
    expect(manifest.shards.filter((s, i) => counts[i] !== s.rows)).toEqual([]);
    expect(manifest.totals.rows).toBe(ROWS);
    // Near the target: the node's split keys are estimates, so allow a wide band.
    expect(Math.max(...manifest.shards.map((s) => s.rows))).toBeLessThanOrEqual(150);
  }, 240_000);

  it('a target no plan can meet fails at once with BACKUP_PLAN_IMPOSSIBLE (not retryable), naming a --shard-rows that fits', async () => {
    const server = await MetricsServer.start({ seeds: stack.cluster.seeds, port: 0, intervalMs: 3_600_000, maxPlanShards: 100, logger });
    try {
      await server.poller.waitUntilReady();
      await server.poller.poll();
      const url = `http://127.0.0.1:${server.port}`;
      const answer = await fetch(`${url}/api/shards?targetRows=10`);
      expect(answer.status).toBe(400);
      const body = (await answer.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('METRICS_PLAN_TOO_LARGE');
      expect(body.error.message).toMatch(/targetRows=\d+ or more/);
      const err = await planBackupShards(stack.client, { targetRows: 10 }, { metricsUrl: url }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackupError);
      expect(err).toMatchObject({ code: 'BACKUP_PLAN_IMPOSSIBLE', retryable: false });
      expect((err as BackupError).message).toContain('--shard-rows');
      // The target it names does plan.
      const fits = Number(/targetRows=(\d+) or more/.exec(body.error.message)![1]);
      const ok = await fetch(`${url}/api/shards?targetRows=${fits}`);
      expect(ok.status, await ok.clone().text()).toBe(200);
      expect(((await ok.json()) as { shards: unknown[] }).shards.length).toBeLessThanOrEqual(100);
    } finally {
      await server.close();
    }
  });

  it('restore --target /plain/dir: a backup written to a plain folder path is restored from that path', async () => {
    const folder = join(stack.dir, 'plain');
    const backup = await cli('backup', 'run', '--target', folder, '--json');
    expect(backup.code, backup.stderr).toBe(0);
    const { backupId } = JSON.parse(backup.stdout);
    const list = await runCli(['backup', 'list', '--target', folder, '--json', '--log-level', 'warn']);
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).backups.map((b: { id: string }) => b.id)).toContain(backupId);

    const target = await StoreCluster.start({ nodes: 2, partitions: 3 });
    const targetClient = new StoreClient({ seeds: target.seeds });
    try {
      const r = await runCli(['restore', backupId, '--target', folder, '--seeds', target.seeds.join(','), '--redis', stack.redis.url, '--verify', '--json', '--log-level', 'warn']);
      expect(r.code, r.stderr).toBe(0);
      const report = JSON.parse(r.stdout);
      expect(report).toMatchObject({ backupId, rowsRestored: ROWS, verified: true });
      const all = Buffer.alloc(0);
      expect((await targetClient.checksum(all, all, { includeEtag: true })).toHex()).toBe((await stack.client.checksum(all, all, { includeEtag: true })).toHex());
      // A relative path is a folder too, as for backup run.
      const fromRelative = await runCli(['restore', backupId, '--target', relative(process.cwd(), folder), '--seeds', target.seeds.join(','), '--redis', stack.redis.url, '--dry-run', '--json', '--log-level', 'warn']);
      expect(fromRelative.code, fromRelative.stderr).toBe(0);
      expect(JSON.parse(fromRelative.stdout).target).toBe(pathToFileURL(folder).href);
    } finally {
      targetClient.close();
      await target.close();
    }
  });
});
