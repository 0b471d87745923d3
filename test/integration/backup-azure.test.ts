import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BackupError, listBackups, openBackupTarget, readManifest, verifyBackup, type BackupTarget } from '../../backup/index.js';
import { createLogger, findFreePort } from '../../common/index.js';
import { BackupWorkers, connectionFromUrl, shardJobId, submitBackup, watchBackup, BACKUP_SHARD_QUEUE } from '../../jobs/index.js';
import { Azurite } from '../helpers/azurite.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { runCli, sortedRows } from '../helpers/store-cluster.js';
import { useStack } from '../helpers/stack.js';
import { Job, Queue } from 'bullmq';

const ROWS = 40_000;
const logger = createLogger({ level: 'silent', pretty: false });

describe('backup to Azure Blob (real Azurite)', () => {
  let azurite: Azurite;
  beforeAll(async () => {
    azurite = await Azurite.start();
  });
  afterAll(async () => {
    await azurite?.stop();
  });
  const stack = useStack({ prefix: 'shardpipe-backup-az-', nodes: 3, partitions: 3, seed: async ({ client }) => {
    for (const chunk of sortedRows(ROWS, 3)) await client.bulkPutAll([chunk]);
  } });

  afterEach(async () => {
    await azurite.deleteContainers();
  });

  it('backs up, lists and verifies through the CLI with AZURE_STORAGE_CONNECTION_STRING', async () => {
    const container = await azurite.createContainer();
    const url = `az://${container.containerName}/nightly`;
    const env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
    const run = await runCli(['backup', 'run', '--target', url, '--shard-rows', '10000', ...stack.cliArgs, '--json', '--log-level', 'warn'], env);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report).toMatchObject({ rows: ROWS, target: url });
    const names: string[] = [];
    for await (const blob of container.listBlobsFlat({ prefix: `nightly/${report.backupId}/` })) names.push(blob.name.split('/').pop()!);
    expect(names).toContain('manifest.json');
    expect(names.filter((n) => n.startsWith('shard-')).length).toBe(report.shards);

    const list = await runCli(['backup', 'list', '--target', url, '--json'], env);
    expect(JSON.parse(list.stdout).backups).toEqual([expect.objectContaining({ id: report.backupId, state: 'complete', rows: ROWS })]);
    const verify = await runCli(['backup', 'verify', report.backupId, '--target', url, '--json'], env);
    expect(verify.code, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, rowsChecked: ROWS });
    const noCredentials = await runCli(['backup', 'list', '--target', url], { AZURE_STORAGE_CONNECTION_STRING: '' });
    expect(noCredentials.code).toBe(1);
    expect(noCredentials.stderr).toContain('BACKUP_ACCESS_DENIED');
  });

  describe('Azurite unreachable mid-upload (fault injection: a TCP proxy that resets connections)', () => {
    let proxy: FaultProxy;
    let target: BackupTarget;
    let workers: BackupWorkers;
    const connection = () => connectionFromUrl(stack.redis.url);

    const start = async (): Promise<string> => {
      proxy = await FaultProxy.start(await findFreePort(), { host: '127.0.0.1', port: azurite.port });
      const container = await azurite.createContainer();
      const connectionString = azurite.connectionString.replace(`:${azurite.port}/`, `:${proxy.port}/`);
      const azure = { connectionString, maxTries: 3, retryDelayMs: 200, maxRetryDelayMs: 500, tryTimeoutMs: 5000, uploadBlockBytes: 1 << 20 };
      target = openBackupTarget(`az://${container.containerName}/p`, { azure });
      workers = BackupWorkers.start({ connection: connection(), client: stack.client, targetOptions: { azure }, concurrency: 1, logger });
      return target.url;
    };

    afterEach(async () => {
      await workers?.close();
      await proxy?.close();
    });

    /** Resolves once some shard job has reported rows: its upload is under way. */
    async function shardStarted(backupId: string, shards: number): Promise<void> {
      const queue = new Queue(BACKUP_SHARD_QUEUE, { connection: connection() });
      try {
        for (;;) {
          for (let i = 0; i < shards; i++) {
            const job = await Job.fromId(queue, shardJobId(backupId, i));
            if (job && typeof job.progress === 'object' && (job.progress as { rowsDone?: number }).rowsDone) return;
          }
          await new Promise((r) => setTimeout(r, 20)); // polling a condition
        }
      } finally {
        await queue.close();
      }
    }

    it('a short outage is retried (SDK retries, then BullMQ attempts) and the backup completes', async () => {
      const url = await start();
      const submitted = await submitBackup(connection(), stack.client, { target: url, shardTarget: { targetRows: 5_000 }, leaseMs: 120_000, rowGroupRows: 2000 }, { targetOptions: { azure: { connectionString: azurite.connectionString } } });
      await shardStarted(submitted.backupId, submitted.shards.length);
      proxy.setMode({ kind: 'reset' });
      await new Promise((r) => setTimeout(r, 1500)); // the outage being injected
      proxy.setMode({ kind: 'pass' });
      const report = await watchBackup(connection(), submitted.backupId);
      expect(report.rows).toBe(ROWS);
      expect((await verifyBackup(target, submitted.backupId)).ok).toBe(true);
    });

    it('an outage longer than every retry fails the backup with the shards named, and never writes a manifest', async () => {
      const url = await start();
      const submitted = await submitBackup(
        connection(),
        stack.client,
        { target: url, shardTarget: { targetRows: 5_000 }, leaseMs: 120_000, rowGroupRows: 2000 },
        { attempts: 2, targetOptions: { azure: { connectionString: azurite.connectionString } } },
      );
      await shardStarted(submitted.backupId, submitted.shards.length);
      proxy.setMode({ kind: 'reset' });
      const err = await watchBackup(connection(), submitted.backupId).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackupError);
      expect((err as BackupError).code).toBe('BACKUP_SHARD_FAILED');
      expect((err as BackupError).message).toMatch(/shard \d+: BACKUP_TARGET_UNAVAILABLE/);
      proxy.setMode({ kind: 'pass' });
      const err2 = await readManifest(target, submitted.backupId).catch((e: unknown) => e);
      expect((err2 as BackupError).code).toMatch(/BACKUP_INCOMPLETE|BACKUP_NOT_FOUND/);
      const listed = await listBackups(target);
      expect(listed.filter((b) => b.state === 'complete')).toEqual([]);
    });
  });
});
