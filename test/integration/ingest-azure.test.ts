import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Job, Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  IngestError,
  assertStagedBlobUnchanged,
  readFileFooter,
  readRecordBatches,
  scanAzureDrop,
  scanDrop,
  type DropFile,
} from '../../ingest/index.js';
import { isAzureUrl, parseAzureUrl } from '../../common/index.js';
import { INGEST_FILE_QUEUE, INGEST_QUEUE, childJobId, connectionFromUrl } from '../../jobs/index.js';
import { Azurite } from '../helpers/azurite.js';
import { runCli } from '../helpers/store-cluster.js';
import { toParquet, writeSparkDrop, type SparkDropOptions } from '../helpers/spark-drop.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';
import { rejectionOf } from '../helpers/rejection.js';
import { useStack } from '../helpers/stack.js';

const refusal = (promise: Promise<unknown>): Promise<IngestError> => rejectionOf(promise, IngestError);

const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');

async function rowsOf(file: DropFile): Promise<number> {
  let rows = 0;
  for await (const { batch } of readRecordBatches(file)) rows += batch.numRows;
  return rows;
}

describe('az:// drops: Azure Blob prefixes staged and scanned like local folders (real Azurite)', () => {
  let azurite: Azurite;
  let tmp: TempDir;

  beforeAll(async () => {
    azurite = await Azurite.start();
    tmp = await makeTempDir('shardpipe-azure-');
  });

  afterEach(async () => {
    await azurite.deleteContainers();
  });

  afterAll(async () => {
    await azurite?.stop();
    await tmp?.remove();
  });

  /** A Spark-like drop written to `spark-NAME` (keys `NAME-…`), uploaded to a fresh container under `drop-NAME`; scans cache in `cache-NAME`. */
  async function uploadedDrop(name: string, drop: Omit<SparkDropOptions, 'prefix'>) {
    const local = tmp.sub(`spark-${name}`);
    await writeSparkDrop(local, { ...drop, prefix: `${name}-` });
    const container = await azurite.createContainer();
    await azurite.uploadFolder(container, local, `drop-${name}`);
    const options = { connectionString: azurite.connectionString, cacheDir: tmp.sub(`cache-${name}`) };
    return { local, container, options, url: `az://${container.containerName}/drop-${name}` };
  }

  it('parses az://CONTAINER/PREFIX and refuses malformed URLs with INGEST_INVALID_SOURCE', async () => {
    expect(isAzureUrl('az://drops/2026/x')).toBe(true);
    expect(isAzureUrl('/data/drops')).toBe(false);
    expect(parseAzureUrl('az://drops/2026/11/')).toEqual({ container: 'drops', prefix: '2026/11/' });
    expect(parseAzureUrl('az://drops')).toEqual({ container: 'drops', prefix: '' });
    for (const bad of ['az://', 'az://Drops/x', 'az://a/x', 'az://my--drops/x', 'az://drops//x', 'az://drops/a/../b', 'az://drops/./a']) {
      const err = await refusal(scanAzureDrop(bad, { connectionString: azurite.connectionString, cacheDir: tmp.sub('cache-bad') }));
      expect(err.code, bad).toBe('INGEST_INVALID_SOURCE');
      expect(err.message, bad).toContain(bad);
    }
  });

  it('without a connection string, or with a wrong key: INGEST_ACCESS_DENIED naming AZURE_STORAGE_CONNECTION_STRING; a missing container: INGEST_SOURCE_NOT_FOUND', async () => {
    const cacheDir = tmp.sub('cache-auth');
    const missing = await refusal(scanAzureDrop('az://drops/x', { connectionString: undefined, cacheDir }));
    expect(missing.code).toBe('INGEST_ACCESS_DENIED');
    expect(missing.message).toContain('AZURE_STORAGE_CONNECTION_STRING');

    const container = await azurite.createContainer();
    await container.getBlockBlobClient('x/_SUCCESS').upload('', 0);
    const wrongKey = azurite.connectionString.replace(/AccountKey=[^;]+/, `AccountKey=${Buffer.alloc(64, 7).toString('base64')}`);
    const denied = await refusal(scanAzureDrop(`az://${container.containerName}/x`, { connectionString: wrongKey, cacheDir }));
    expect(denied.code).toBe('INGEST_ACCESS_DENIED');
    expect(denied.message).not.toContain(Buffer.alloc(64, 7).toString('base64'));

    const noContainer = await refusal(scanAzureDrop('az://no-such-container/x', { connectionString: azurite.connectionString, cacheDir }));
    expect(noContainer.code).toBe('INGEST_SOURCE_NOT_FOUND');
    const empty = await refusal(scanAzureDrop(`az://${container.containerName}/nothing-here`, { connectionString: azurite.connectionString, cacheDir }));
    expect(empty.code).toBe('INGEST_SOURCE_NOT_FOUND');
  });

  it('a Spark-like drop uploaded with its side files scans to the same files, bytes and rows as the local folder', async () => {
    const local = tmp.sub('spark-a');
    const drop = await writeSparkDrop(local, { files: 3, rowsPerFile: 2000, rowGroupRows: 700, prefix: 'a-' });
    // A Hive partition, Spark's leftovers and a stray file, as in a real drop.
    await mkdir(join(local, 'dt=2026-11-24', 'src=web%2Fapp'), { recursive: true });
    await writeFile(join(local, 'dt=2026-11-24', 'src=web%2Fapp', 'part-00100-hive.snappy.parquet'), toParquet({ id: ['h-1', 'h-2'], payload: ['x', 'y'] }, 'SNAPPY', 10));
    await mkdir(join(local, '_temporary', '0'), { recursive: true });
    await writeFile(join(local, '_temporary', '0', 'part-00009-attempt.parquet'), toParquet({ id: ['t'], payload: ['t'] }, 'SNAPPY', 10));
    await writeFile(join(local, '_committed_123'), '{}');
    await writeFile(join(local, 'README.txt'), 'not data');

    const container = await azurite.createContainer();
    const uploaded = await azurite.uploadFolder(container, local, 'drops/2026-11-24');
    expect(uploaded.some((n) => n.endsWith('/_SUCCESS'))).toBe(true);
    expect(uploaded.some((n) => n.endsWith('.crc'))).toBe(true);

    const cacheDir = tmp.sub('cache-a');
    const url = `az://${container.containerName}/drops/2026-11-24`;
    const remote = await scanAzureDrop(url, { connectionString: azurite.connectionString, cacheDir });
    const localScan = await scanDrop(local);

    const shape = (f: DropFile) => ({ relativePath: f.relativePath, format: f.format, sizeBytes: f.sizeBytes, partitionValues: f.partitionValues });
    expect(remote.files.map(shape)).toEqual(localScan.files.map(shape));
    expect(remote.files).toHaveLength(4);
    expect(remote.files.find((f) => f.relativePath.startsWith('dt='))!.partitionValues).toEqual({ dt: '2026-11-24', src: 'web/app' });
    expect(remote.stagedAt).toBe(join(cacheDir, container.containerName, 'drops', '2026-11-24'));
    for (const [i, file] of remote.files.entries()) {
      expect(file.path).toBe(join(remote.stagedAt, ...file.relativePath.split('/')));
      expect(file.origin).toMatch(new RegExp(`^az://${container.containerName}/drops/2026-11-24/${file.relativePath.replace(/[.]/g, '\\.')}@\\S+$`));
      expect(await sha256(file.path)).toBe(await sha256(localScan.files[i]!.path));
      const [a, b] = await Promise.all([readFileFooter(file, 'id'), readFileFooter(localScan.files[i]!, 'id')]);
      expect(a.rows).toBe(b.rows);
      expect(await rowsOf(file)).toBe(b.rows);
    }
    const footers = await Promise.all(remote.files.map((f) => readFileFooter(f, 'id')));
    expect(footers.reduce((s, f) => s + f.rows, 0)).toBe(drop.rows + 2);
    // The stray file is listed with its blob URL; side files were never downloaded.
    expect(remote.skipped).toEqual([{ path: `az://${container.containerName}/drops/2026-11-24/README.txt`, reason: expect.stringContaining('magic') }]);
    expect(remote.downloaded).toBe(5);
    const staged = await readdir(remote.stagedAt, { recursive: true });
    expect(staged.filter((n) => n.endsWith('.crc') || n.includes('_temporary') || n.includes('_SUCCESS') || n.includes('_committed'))).toEqual([]);
  });

  it('refuses a prefix without _SUCCESS (nothing downloaded) unless requireSuccess is false', async () => {
    const local = tmp.sub('spark-b');
    await writeSparkDrop(local, { files: 1, rowsPerFile: 100, success: false, prefix: 'b-' });
    const container = await azurite.createContainer();
    await azurite.uploadFolder(container, local, 'drop-b');
    const cacheDir = tmp.sub('cache-b');
    const url = `az://${container.containerName}/drop-b/`;
    const err = await refusal(scanAzureDrop(url, { connectionString: azurite.connectionString, cacheDir }));
    expect(err.code).toBe('INGEST_INCOMPLETE_DROP');
    expect(err.message).toContain('_SUCCESS');
    expect(err.message).toContain('--no-require-success');
    expect(existsSync(join(cacheDir, container.containerName))).toBe(false);
    const forced = await scanAzureDrop(url, { connectionString: azurite.connectionString, cacheDir, requireSuccess: false });
    expect(forced.files).toHaveLength(1);
    expect((await readFileFooter(forced.files[0]!, 'id')).rows).toBe(100);
  });

  it('a re-scan reuses the staged copies: no download, same mtime, same fingerprint', async () => {
    const { container, options, url } = await uploadedDrop('c', { files: 2, rowsPerFile: 500 });
    const first = await scanAzureDrop(url, options);
    expect(first).toMatchObject({ downloaded: 2, reused: 0 });
    const inodes = await Promise.all(first.files.map(async (f) => (await stat(f.path)).ino));
    for (const f of first.files) {
      const props = await container.getBlobClient(`drop-c/${f.relativePath}`).getProperties();
      expect(f.mtimeMs).toBe(props.lastModified!.getTime());
    }

    const second = await scanAzureDrop(url, options);
    expect(second).toMatchObject({ downloaded: 0, reused: 2 });
    expect(second.files).toEqual(first.files);
    expect(await Promise.all(second.files.map(async (f) => (await stat(f.path)).ino))).toEqual(inodes);
  });

  it('a blob overwritten with the same bytes (new etag) gets a new fingerprint; the old plan is refused with INGEST_INPUT_CHANGED', async () => {
    const { local, container, options, url } = await uploadedDrop('d', { files: 2, rowsPerFile: 300 });
    const before = await scanAzureDrop(url, options);
    const target = before.files[1]!;
    // Same size and possibly the same lastModified second: only the etag tells the versions apart.
    await container.getBlockBlobClient(`drop-d/${target.relativePath}`).uploadFile(join(local, target.relativePath));

    const after = await scanAzureDrop(url, options);
    expect(after).toMatchObject({ downloaded: 1, reused: 1 });
    expect(after.files[0]!.fingerprint).toBe(before.files[0]!.fingerprint);
    expect(after.files[1]!.sizeBytes).toBe(target.sizeBytes);
    expect(after.files[1]!.origin).not.toBe(target.origin);
    expect(after.files[1]!.fingerprint).not.toBe(target.fingerprint);
    // A worker holding the old plan must not read the new copy under the old checkpoints.
    const changed = await refusal(assertStagedBlobUnchanged(target));
    expect(changed.code).toBe('INGEST_INPUT_CHANGED');
    expect(changed.message).toContain(target.origin!);
    await assertStagedBlobUnchanged(after.files[1]!);
  });

  it('a prefix naming one blob is a single-file drop; a blob that is not data is INGEST_UNSUPPORTED_FORMAT naming it', async () => {
    const container = await azurite.createContainer();
    const bytes = toParquet({ id: ['s-1', 's-2', 's-3'], payload: ['1', '2', '3'] }, 'ZSTD', 10);
    await container.getBlockBlobClient('single/one.parquet').uploadData(Buffer.from(bytes));
    await container.getBlockBlobClient('single/notes.txt').uploadData(Buffer.from('hello'));
    const options = { connectionString: azurite.connectionString, cacheDir: tmp.sub('cache-e') };
    const scan = await scanAzureDrop(`az://${container.containerName}/single/one.parquet`, options);
    expect(scan.files).toHaveLength(1);
    expect(scan.files[0]).toMatchObject({ relativePath: 'one.parquet', format: 'parquet', sizeBytes: bytes.length });
    expect((await readFileFooter(scan.files[0]!, 'id')).rows).toBe(3);
    const err = await refusal(scanAzureDrop(`az://${container.containerName}/single/notes.txt`, options));
    expect(err.code).toBe('INGEST_UNSUPPORTED_FORMAT');
    expect(err.message).toContain(`az://${container.containerName}/single/notes.txt`);
  });

  describe('shardpipe ingest az://… into a real 3-node cluster', () => {
    const stack = useStack({ dir: () => tmp.path, nodes: 3, partitions: 6 });

    const ingest = (source: string, env: Record<string, string>, ...extra: string[]) =>
      runCli(['ingest', source, '--key-column', 'id', '--value-column', 'payload', ...stack.cliArgs, '--data-dir', tmp.sub('data'), '--json', '--log-level', 'warn', ...extra], env);

    it('ingests the drop exactly; the connection string stays out of the jobs; without it the command fails with INGEST_ACCESS_DENIED', async () => {
      const local = tmp.sub('spark-f');
      const drop = await writeSparkDrop(local, { files: 3, rowsPerFile: 4000, rowGroupRows: 1500, prefix: 'az-' });
      const container = await azurite.createContainer();
      await azurite.uploadFolder(container, local, 'exports/run-1');
      const url = `az://${container.containerName}/exports/run-1`;

      const denied = await ingest(url, { AZURE_STORAGE_CONNECTION_STRING: '' });
      expect(denied.code).toBe(1);
      expect(denied.stderr).toContain('INGEST_ACCESS_DENIED');
      expect(denied.stderr).toContain('AZURE_STORAGE_CONNECTION_STRING');

      const r = await ingest(url, { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString });
      expect(r.code, r.stderr).toBe(0);
      const report = JSON.parse(r.stdout);
      expect(report).toMatchObject({ rowsIngested: drop.rows, rowsRejected: 0, filesOk: 3, filesFailed: 0 });
      const stored = await stack.client.checksum(Buffer.from('az-'), Buffer.from('az.'));
      expect(stored.count).toBe(drop.rows);
      expect(stored.toHex()).toBe(drop.digest.toHex());
      expect(existsSync(join(tmp.sub('data'), 'azure-cache', container.containerName, 'exports', 'run-1'))).toBe(true);

      const connection = connectionFromUrl(stack.redis.url);
      const parents = new Queue(INGEST_QUEUE, { connection });
      const files = new Queue(INGEST_FILE_QUEUE, { connection });
      try {
        const parent = await Job.fromId(parents, report.id);
        const child = await Job.fromId(files, childJobId(report.id, 0));
        expect(parent!.data.spec.source).toBe(url);
        for (const data of [parent!.data, child!.data]) {
          expect(JSON.stringify(data)).not.toContain('AccountKey');
          expect(JSON.stringify(data)).not.toContain(azurite.connectionString.match(/AccountKey=([^;]+)/)![1]);
        }
        expect(child!.data.file.origin).toMatch(new RegExp(`^az://${container.containerName}/exports/run-1/part-`));
      } finally {
        await parents.close();
        await files.close();
      }

      // The same drop again: found finished, nothing downloaded again.
      const again = await ingest(url, { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString });
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout).id).toBe(report.id);
    });
  });
});
