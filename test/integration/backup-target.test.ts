import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BackupError,
  MANIFEST_FILE,
  newBackupId,
  openBackupTarget,
  readManifest,
  writeManifest,
  type BackupManifest,
  type BackupTarget,
} from '../../backup/index.js';
import { Azurite } from '../helpers/azurite.js';
import { oneShardManifest } from '../helpers/backup-fixture.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';
import { rejectionOf } from '../helpers/rejection.js';

const failure = (promise: Promise<unknown>): Promise<BackupError> => rejectionOf(promise, BackupError);

async function* chunks(total: number, size: number, failAfter?: number): AsyncGenerator<Uint8Array> {
  for (let sent = 0; sent < total; sent += size) {
    if (failAfter !== undefined && sent >= failAfter) throw new Error('source broke');
    yield Buffer.alloc(Math.min(size, total - sent), sent % 251);
  }
}

const manifestFor = (backupId: string): BackupManifest => oneShardManifest(backupId, { startedAt: '2026-11-24T02:00:00.000Z', rows: 3, bytes: 10 });

/** The same contract, run against each kind of target. */
function contract(name: string, open: () => Promise<BackupTarget>): void {
  describe(`${name}: the BackupTarget contract`, () => {
    let target: BackupTarget;
    beforeAll(async () => {
      target = await open();
    });

    it('writes a streamed file, lists, stats, reads it whole and by range, and deletes the backup', async () => {
      const id = newBackupId();
      expect(await target.listFiles(id)).toEqual([]);
      const { bytes } = await target.writeFile(id, 'shard-00000.parquet', chunks(3_000_000, 64 * 1024));
      expect(bytes).toBe(3_000_000);
      await target.writeText(id, 'notes.txt', 'hello');
      expect(await target.listBackupIds()).toContain(id);
      expect((await target.listFiles(id)).map((f) => [f.name, f.bytes])).toEqual([
        ['notes.txt', 5],
        ['shard-00000.parquet', 3_000_000],
      ]);
      expect((await target.stat(id, 'shard-00000.parquet'))?.bytes).toBe(3_000_000);
      expect(await target.stat(id, 'nothing.parquet')).toBeUndefined();
      expect(await target.readText(id, 'notes.txt')).toBe('hello');
      expect(await target.readText(id, 'nothing.txt')).toBeUndefined();
      let read = 0;
      for await (const chunk of await target.openRead(id, 'shard-00000.parquet')) read += (chunk as Buffer).byteLength;
      expect(read).toBe(3_000_000);
      const range = Buffer.concat(await (await target.openRead(id, 'shard-00000.parquet', { offset: 65_536, length: 10 })).toArray());
      expect(range).toEqual(Buffer.alloc(10, 65_536 % 251));
      expect((await failure(target.openRead(id, 'nothing.parquet'))).code).toBe('BACKUP_NOT_FOUND');
      expect(await target.deleteBackup(id)).toBe(2);
      expect(await target.listBackupIds()).not.toContain(id);
      expect(await target.deleteBackup(id)).toBe(0);
    });

    it('a write whose source fails leaves nothing visible, and an earlier file of that name intact', async () => {
      const id = newBackupId();
      const err = await target.writeFile(id, 'shard-00001.parquet', chunks(9_000_000, 1 << 20, 5_000_000)).catch((e: unknown) => e);
      expect((err as Error).message).toBe('source broke');
      expect(await target.stat(id, 'shard-00001.parquet')).toBeUndefined();
      expect((await target.listFiles(id)).map((f) => f.name)).toEqual([]);

      await target.writeFile(id, 'shard-00001.parquet', chunks(1000, 100));
      await target.writeFile(id, 'shard-00001.parquet', chunks(9_000_000, 1 << 20, 5_000_000)).catch(() => undefined);
      expect((await target.stat(id, 'shard-00001.parquet'))?.bytes).toBe(1000);
      await target.deleteBackup(id);
    });

    it('an aborted write leaves nothing visible and rejects with the signal reason', async () => {
      const id = newBackupId();
      const controller = new AbortController();
      async function* slow(): AsyncGenerator<Uint8Array> {
        yield Buffer.alloc(1 << 20);
        controller.abort(new Error('stop now'));
        yield Buffer.alloc(1 << 20);
      }
      const err = await target.writeFile(id, 'shard-00002.parquet', slow(), { signal: controller.signal }).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/stop now|abort/i);
      expect(await target.stat(id, 'shard-00002.parquet')).toBeUndefined();
      await target.deleteBackup(id);
    });

    it('round-trips a manifest; a folder without one is BACKUP_INCOMPLETE, a missing one BACKUP_NOT_FOUND', async () => {
      const id = newBackupId();
      expect((await failure(readManifest(target, id))).code).toBe('BACKUP_NOT_FOUND');
      await target.writeFile(id, 'shard-00000.parquet', chunks(10, 10));
      expect((await failure(readManifest(target, id))).code).toBe('BACKUP_INCOMPLETE');
      await writeManifest(target, manifestFor(id));
      expect(await readManifest(target, id)).toEqual(manifestFor(id));
      await target.writeText(id, MANIFEST_FILE, JSON.stringify({ ...manifestFor(id), formatVersion: 3 }));
      expect((await failure(readManifest(target, id))).code).toBe('BACKUP_UNSUPPORTED_VERSION');
      await target.writeText(id, MANIFEST_FILE, JSON.stringify(manifestFor(newBackupId(new Date(0)))));
      expect((await failure(readManifest(target, id))).code).toBe('BACKUP_MANIFEST_INVALID');
      await target.deleteBackup(id);
    });

    it('refuses ids and file names that could leave the backup folder', async () => {
      expect((await failure(target.listFiles('../etc'))).code).toBe('BACKUP_INVALID_ID');
      expect((await failure(target.stat(newBackupId(), '../manifest.json'))).code).toBe('BACKUP_INVALID_TARGET');
      expect((await failure(target.stat(newBackupId(), '.hidden'))).code).toBe('BACKUP_INVALID_TARGET');
    });
  });
}

let tmp: TempDir;
let azurite: Azurite | undefined;

beforeAll(async () => {
  tmp = await makeTempDir('shardpipe-target-');
});

afterAll(async () => {
  await azurite?.deleteContainers();
  await azurite?.stop();
  await tmp?.remove();
});

contract('file://', async () => openBackupTarget(`file://${tmp.sub('backups')}`));

contract('az:// (real Azurite)', async () => {
  azurite ??= await Azurite.start();
  const container = await azurite.createContainer();
  return openBackupTarget(`az://${container.containerName}/nightly/${randomBytes(3).toString('hex')}`, {
    azure: { connectionString: azurite.connectionString, uploadBlockBytes: 1 << 20, uploadConcurrency: 2 },
  });
});

describe('file:// specifics', () => {
  it('leaves no temporary file after a failed write', async () => {
    const target = openBackupTarget(`file://${tmp.sub('temps')}`);
    const id = newBackupId();
    await target.writeFile(id, 'a.parquet', chunks(10, 10));
    await target.writeFile(id, 'b.parquet', chunks(5_000_000, 1 << 20, 2_000_000)).catch(() => undefined);
    expect(await readdir(tmp.sub(`temps/${id}`))).toEqual(['a.parquet']);
    expect(await text(await target.openRead(id, 'a.parquet', { length: 0 }))).toBe('');
  });

  it('an az:// target without a connection string is BACKUP_ACCESS_DENIED on first use', async () => {
    const target = openBackupTarget('az://backups/x', { azure: { connectionString: undefined } });
    expect((await failure(target.listBackupIds())).code).toBe('BACKUP_ACCESS_DENIED');
  });
});
