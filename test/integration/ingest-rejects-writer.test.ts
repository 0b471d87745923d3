import { readFile, writeFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RejectsWriter, type Reject } from '../../ingest/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

describe('RejectsWriter', () => {
  let dir: TempDir;
  beforeEach(async () => {
    dir = await makeTempDir('shardpipe-ingest-rejects-');
  });
  afterEach(async () => {
    await dir.remove();
  });

  it('writes one NDJSON object per reject, key as hex or null, creating the folder', async () => {
    const path = dir.sub('nested/run-1/rejects.ndjson');
    const writer = await RejectsWriter.open(path);
    await writer.write([
      { file: '/d/part-0.parquet', rowGroup: 0, row: 7, reason: 'key column "id" is null' },
      { file: '/d/part-0.parquet', rowGroup: 2, row: 1, keyHex: '6869', reason: 'value is 5000000 bytes, over the limit of 4194304 bytes' },
    ]);
    await writer.write([]);
    expect(writer.count).toBe(2);
    await writer.close();
    await writer.close();
    const lines = (await readFile(path, 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(lines).toEqual([
      { file: '/d/part-0.parquet', rowGroup: 0, row: 7, key: null, reason: 'key column "id" is null' },
      { file: '/d/part-0.parquet', rowGroup: 2, row: 1, key: '6869', reason: 'value is 5000000 bytes, over the limit of 4194304 bytes' },
    ]);
    await expect(writer.write(lines as Reject[])).rejects.toThrow(/closed/);
  });

  it('keeps up with a flood of rejects by waiting for the stream (back-pressure), losing none', async () => {
    const path = dir.sub('rejects.ndjson');
    const writer = await RejectsWriter.open(path);
    const batch: Reject[] = Array.from({ length: 2000 }, (_, i) => ({ file: 'f', rowGroup: 0, row: i, keyHex: 'ab'.repeat(64), reason: 'x'.repeat(100) }));
    for (let i = 0; i < 50; i++) await writer.write(batch);
    await writer.close();
    expect(writer.count).toBe(100_000);
    expect((await readFile(path, 'utf8')).split('\n').length - 1).toBe(100_000);
  });

  it('fails to open where the file cannot be created', async () => {
    // A regular file where the folder should be.
    await writeFile(dir.sub('occupied'), '');
    await expect(RejectsWriter.open(dir.sub('occupied/rejects.ndjson'))).rejects.toThrow(/ENOTDIR|EEXIST/);
  });
});
