import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MANIFEST_FILE,
  applyRetention,
  listBackups,
  newBackupId,
  openBackupTarget,
  verifyBackup,
  writeManifest,
  type BackupTarget,
} from '../../backup/index.js';
import { createLogger } from '../../common/index.js';
import { BACKUP_QUEUE, BackupWorkers, PrivateRedis, connectionFromUrl, submitBackup, watchBackup, type BackupParentData } from '../../jobs/index.js';
import { StoreClient, StoreError } from '../../store/index.js';
import { Job, Queue } from 'bullmq';
import { oneShardManifest } from '../helpers/backup-fixture.js';
import { CLI, StoreCluster, runCli, sortedRows } from '../helpers/store-cluster.js';

const logger = createLogger({ level: 'silent', pretty: false });

/** Polls a condition (readiness), never a fixed sleep. */
async function until<T>(check: () => Promise<T | undefined | false>, what: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('backup recovery and retention (real cluster, Redis, worker processes)', () => {
  let dir: string;
  let redis: PrivateRedis;
  let cluster: StoreCluster;
  let client: StoreClient;
  const ROWS = 80_000;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shardpipe-backup-rec-'));
    [redis, cluster] = await Promise.all([PrivateRedis.start({ dataDir: join(dir, 'redis') }), StoreCluster.start({ nodes: 3, partitions: 4 })]);
    client = new StoreClient({ seeds: cluster.seeds });
    for (const chunk of sortedRows(ROWS, 11)) await client.bulkPutAll([chunk]);
  });

  afterAll(async () => {
    client?.close();
    await Promise.allSettled([cluster?.close(), redis?.stop()]);
    await rm(dir, { recursive: true, force: true });
  });

  function startWorker(): { child: ChildProcess; ready: Promise<void> } {
    const child = spawn(
      process.execPath,
      [CLI, 'worker', '--redis', redis.url, '--seeds', cluster.seeds.join(','), '--lock-duration', '2s', '--backup-concurrency', '1', '--log-level', 'warn'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('"event":"ready"')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`worker exited early with ${code}`)));
    });
    child.stderr!.resume();
    return { child, ready };
  }

  it('a worker killed (SIGKILL) mid-backup: no manifest until a new worker has rewritten the lost shard and finished', async () => {
    const folder = join(dir, 'killed');
    const url = pathToFileURL(folder).href;
    const first = startWorker();
    await first.ready;
    const run = await runCli(['backup', 'run', '--target', url, '--shard-rows', '2500', '--seeds', cluster.seeds.join(','), '--redis', redis.url, '--no-local-worker', '--json', '--log-level', 'warn']);
    expect(run.code, run.stderr).toBe(0);
    const { backupId, shards } = JSON.parse(run.stdout) as { backupId: string; shards: number };
    expect(shards).toBeGreaterThan(8);
    const shardFiles = async () => (await readdir(join(folder, backupId)).catch(() => [] as string[])).filter((f) => f.startsWith('shard-'));
    await until(async () => (await shardFiles()).length >= 2, 'two shard files');
    const exited = once(first.child, 'exit');
    first.child.kill('SIGKILL');
    await exited;
    const files = await readdir(join(folder, backupId));
    expect(files).not.toContain(MANIFEST_FILE);
    expect((await shardFiles()).length).toBeLessThan(shards);
    expect((await listBackups(openBackupTarget(url))).map((b) => [b.id, b.state])).toEqual([[backupId, 'incomplete']]);

    // The re-run: a fresh worker takes the stalled shard over (its lock ran out) and finishes.
    const second = startWorker();
    try {
      await second.ready;
      const report = await watchBackup(connectionFromUrl(redis.url), backupId);
      expect(report.rows).toBe(ROWS);
      expect((await shardFiles()).length).toBe(shards);
      const verified = await verifyBackup(openBackupTarget(url), backupId);
      expect(verified).toMatchObject({ ok: true, rowsChecked: ROWS });
    } finally {
      const exited2 = once(second.child, 'exit');
      second.child.kill('SIGTERM');
      await exited2;
    }
  });

  it('snapshots that run out before their shards are written fail the backup with BACKUP_SNAPSHOT_LOST and no manifest', async () => {
    const url = pathToFileURL(join(dir, 'expired')).href;
    const connection = connectionFromUrl(redis.url);
    const submitted = await submitBackup(connection, client, { target: url, shardTarget: { targetRows: 20_000 }, leaseMs: 1000 }, { logger });
    const parents = new Queue<BackupParentData>(BACKUP_QUEUE, { connection });
    const leases = (await Job.fromId<BackupParentData>(parents, submitted.backupId))!.data.leases;
    await parents.close();
    // No worker runs until the nodes have dropped the snapshots (a read through them fails).
    await until(
      async () =>
        client.checksum(Buffer.alloc(0), Buffer.alloc(0), { snapshots: leases }).then(
          () => false,
          (err: unknown) => err instanceof StoreError && err.code === 'STORE_SNAPSHOT_NOT_FOUND',
        ),
      'the leases to run out',
    );
    const workers = BackupWorkers.start({ connection, client, logger });
    try {
      const err = await watchBackup(connection, submitted.backupId).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'BACKUP_SHARD_FAILED' });
      expect((err as Error).message).toContain('BACKUP_SNAPSHOT_LOST');
    } finally {
      await workers.close();
    }
    expect((await listBackups(openBackupTarget(url))).filter((b) => b.state === 'complete')).toEqual([]);
    expect(await readdir(join(dir, 'expired', submitted.backupId)).catch(() => [])).not.toContain(MANIFEST_FILE);
  });

  describe('retention', () => {
    let target: BackupTarget;
    const at = (iso: string) => newBackupId(new Date(iso));

    async function complete(id: string): Promise<void> {
      await target.writeFile(id, 'shard-00000.parquet', [Buffer.from('x')]);
      await writeManifest(target, oneShardManifest(id, { startedAt: '2026-01-01T00:00:00.000Z', rows: 1, bytes: 1 }));
    }
    const incomplete = (id: string) => target.writeFile(id, 'shard-00000.parquet', [Buffer.from('x')]);

    beforeAll(() => {
      target = openBackupTarget(pathToFileURL(join(dir, 'retention')).href);
    });

    it('keeps the newest N complete backups, deletes stale incomplete ones older than the newest complete, never the only complete one', async () => {
      const c1 = at('2026-01-01T02:00:00Z');
      const c2 = at('2026-01-02T02:00:00Z');
      const c3 = at('2026-01-03T02:00:00Z');
      const c4 = at('2026-01-04T02:00:00Z');
      const i1 = at('2026-01-02T12:00:00Z'); // failed between c2 and c3: goes
      const i2 = at('2026-01-05T02:00:00Z'); // newer than every complete one (maybe running): stays
      for (const id of [c1, c2, c3, c4]) await complete(id);
      for (const id of [i1, i2]) await incomplete(id);
      const unreadable = at('2026-01-01T00:00:00Z');
      await incomplete(unreadable);
      await target.writeText(unreadable, MANIFEST_FILE, JSON.stringify({ formatVersion: 99 }));
      const later = Date.now() + 7 * 3600_000;

      const dry = await applyRetention(target, { keep: 2, nowMs: later, dryRun: true });
      expect(dry.deleted.map((d) => d.id)).toEqual([c1, c2, i1]);
      expect((await target.listBackupIds()).length).toBe(7);

      // Within the grace period an incomplete backup is left alone even when older.
      const early = await applyRetention(target, { keep: 2, nowMs: Date.now() });
      expect(early.deleted.map((d) => d.id)).toEqual([c1, c2]);
      const report = await applyRetention(target, { keep: 2, nowMs: later });
      expect(report.deleted.map((d) => [d.id, d.state])).toEqual([[i1, 'incomplete']]);
      expect(await target.listBackupIds()).toEqual([unreadable, c3, c4, i2].sort());

      const one = await applyRetention(target, { keep: 1, nowMs: later });
      expect(one.deleted.map((d) => d.id)).toEqual([c3]);
      // keep 1 again: the only complete backup stays, however often retention runs.
      expect((await applyRetention(target, { keep: 1, nowMs: later })).deleted).toEqual([]);
      expect((await listBackups(target)).map((b) => [b.id, b.state])).toEqual([
        [unreadable, 'unreadable'],
        [c4, 'complete'],
        [i2, 'incomplete'],
      ]);
      await expect(applyRetention(target, { keep: 0 })).rejects.toThrow(RangeError);
    });

    it('a scheduled backup (BullMQ job scheduler) runs, then retention keeps --keep complete backups', async () => {
      const url = pathToFileURL(join(dir, 'scheduled')).href;
      const sched = await runCli(['backup', 'schedule', '--target', url, '--cron', '*/4 * * * * *', '--keep', '1', '--shard-rows', '40000', '--name', 'every4s', '--redis', redis.url, '--json']);
      expect(sched.code, sched.stderr).toBe(0);
      expect(JSON.parse(sched.stdout)).toMatchObject({ name: 'every4s', cron: '*/4 * * * * *' });
      const list = await runCli(['backup', 'schedule', 'list', '--redis', redis.url, '--json']);
      expect(JSON.parse(list.stdout).schedules).toEqual([expect.objectContaining({ name: 'every4s', spec: expect.objectContaining({ target: url, keep: 1 }) })]);

      const connection = connectionFromUrl(redis.url);
      const workers = BackupWorkers.start({ connection, client, logger });
      const target2 = openBackupTarget(url);
      const completed = new Set<string>();
      try {
        await until(
          async () => {
            for (const b of await listBackups(target2)) if (b.state === 'complete') completed.add(b.id);
            return completed.size >= 2;
          },
          'two scheduled backups',
          90_000,
        );
        const removed = await runCli(['backup', 'schedule', 'remove', 'every4s', '--redis', redis.url]);
        expect(removed.code, removed.stderr).toBe(0);
        // Retention after the second backup removed the first: one complete backup at a time.
        await until(async () => (await listBackups(target2)).filter((b) => b.state === 'complete').length === 1 && 'ok', 'retention');
        // Tracing off, each scheduled run still names a trace of its own: the scheduled job's result and
        // its backup's report carry the same trace id, a different one per run.
        const queue = new Queue(BACKUP_QUEUE, { connection });
        try {
          const jobs = await queue.getJobs(['completed']);
          const runs = jobs.filter((j) => j.name === 'scheduled-backup').map((j) => j.returnvalue as { backupId: string; traceId: string });
          const reports = new Map(jobs.filter((j) => j.name === 'backup').map((j) => [(j.returnvalue as { backupId: string }).backupId, j.returnvalue as { traceId?: string }]));
          const finished = runs.filter((r) => completed.has(r.backupId));
          expect(finished.length).toBeGreaterThanOrEqual(2);
          for (const r of finished) {
            expect(r.traceId).toMatch(/^[0-9a-f]{32}$/);
            expect(r.traceId).not.toMatch(/^0+$/);
            expect(reports.get(r.backupId)?.traceId).toBe(r.traceId);
          }
          expect(new Set(finished.map((r) => r.traceId)).size).toBe(finished.length);
        } finally {
          await queue.close();
        }
      } finally {
        await workers.close();
      }
      const again = await runCli(['backup', 'schedule', 'remove', 'every4s', '--redis', redis.url]);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain('BACKUP_INVALID_SCHEDULE');
      const bad = await runCli(['backup', 'schedule', '--target', url, '--cron', 'not a cron', '--redis', redis.url]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('BACKUP_INVALID_SCHEDULE');
    });
  });
});
