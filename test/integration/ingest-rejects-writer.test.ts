import { readFile, readdir, writeFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RejectsWriter, mergeRejects, type Reject } from '../../ingest/index.js';
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

  it('mergeRejects joins the parts in name order into one file, removes them, and can run again', async () => {
    const parts = dir.sub('ingest-1');
    for (const [i, rows] of [[0, [1, 2]], [2, [5]], [1, []]] as const) {
      const writer = await RejectsWriter.open(`${parts}/${String(i).padStart(5, '0')}.ndjson`);
      await writer.write(rows.map((row) => ({ file: `part-${i}`, rowGroup: i, row, keyHex: 'ab', reason: 'bad' })));
      await writer.close();
    }
    await writeFile(`${parts}/notes.txt`, 'not a part');
    const target = dir.sub('ingest-1.ndjson');
    await mergeRejects(parts, target);
    const lines = (await readFile(target, 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l) as { file: string; row: number });
    expect(lines.map((l) => [l.file, l.row])).toEqual([['part-0', 1], ['part-0', 2], ['part-2', 5]]);
    expect(lines[0]).toEqual({ file: 'part-0', rowGroup: 0, row: 1, key: 'ab', reason: 'bad' });
    await expect(readdir(parts)).rejects.toThrow(/ENOENT/);
    // Again (a parent job retried after the merge): the joined file stays as it is.
    await mergeRejects(parts, target);
    expect((await readFile(target, 'utf8')).trimEnd().split('\n')).toHaveLength(3);
    // No parts and no file (nothing was ever rejected): an empty file to point at.
    await mergeRejects(dir.sub('ingest-2'), dir.sub('ingest-2.ndjson'));
    expect(await readFile(dir.sub('ingest-2.ndjson'), 'utf8')).toBe('');
    expect((await readdir(dir.path)).filter((n) => n.endsWith('.partial'))).toEqual([]);
  });
});
