import { appendFile, copyFile, readFile, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupError, readShardRows } from '../../backup/index.js';
import { FileError, readFooter, readRecordBatches, statDataFile, type DataFile } from '../../files/index.js';
import { IngestError, encodeIntKey, readFileFooter, readRecordBatches as readDropFileBatches, scanDrop, type DropFile } from '../../ingest/index.js';
import { tableFromArrays } from 'apache-arrow';
import { writeParquetFile } from '../helpers/ingest-files.js';
import { rejectionOf } from '../helpers/rejection.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const REAL = resolve(import.meta.dirname, '../fixtures/real/parquet-testing/data/alltypes_plain.parquet');
/** 7,300 rows, one row group, statistics for `id` (INT32, 0 to 7299). */
const WITH_STATS = resolve(import.meta.dirname, '../fixtures/real/parquet-testing/data/alltypes_tiny_pages.parquet');

async function drain(batches: AsyncIterable<{ batch: { numRows: number } }>): Promise<number> {
  let rows = 0;
  for await (const { batch } of batches) rows += batch.numRows;
  return rows;
}

describe('files/: its own errors; ingest and backup translate them at their boundary', () => {
  let tmp: TempDir;
  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-files-');
  });
  afterAll(async () => {
    await tmp?.remove();
  });

  /** A fresh copy of the real file, as files/ and as ingest (a scanned drop file) see it. */
  async function copy(name: string, from = REAL): Promise<{ file: DataFile; drop: DropFile }> {
    const path = tmp.sub(name);
    await copyFile(from, path);
    const drop = (await scanDrop(path, { requireSuccess: false })).files[0]!;
    return { file: await statDataFile(path, 'parquet'), drop };
  }

  it('reads footer and batches of a real file; the footer carries raw statistics of the column asked for', async () => {
    const { file, drop } = await copy('ok.parquet', WITH_STATS);
    const footer = await readFooter(file, { statisticsColumn: 'id' });
    expect(footer.format).toBe('parquet');
    expect(footer.columns.find((c) => c.name === 'id')).toMatchObject({ type: 'INT32', parquet: { nestedOrRepeated: false } });
    expect(footer.rows).toBe(7300);
    expect(await drain(readRecordBatches(file))).toBe(7300);
    expect(footer.rowGroups.map((rg) => [rg.statistics?.min_value, rg.statistics?.max_value])).toEqual([[0, 7299]]);
    // ingest's footer turns the same statistics into key bounds, encoded as store keys.
    const ingestFooter = await readFileFooter(drop, 'id');
    expect(ingestFooter.rows).toBe(7300);
    expect(ingestFooter.rowGroups.map((rg) => [rg.keyMin, rg.keyMax])).toEqual([[encodeIntKey(0, 4, true), encodeIntKey(7299, 4, true)]]);
  });

  it('a truncated file: FILE_CORRUPT from files/, INGEST_CORRUPT_FILE with the same message from ingest, BACKUP_CORRUPT_FILE from the shard reader', async () => {
    const { file: before } = await copy('cut.parquet');
    await truncate(before.path, before.sizeBytes - 20);
    const cutBytes = await readFile(before.path);
    await writeFile(before.path, Buffer.concat([cutBytes, Buffer.from('PAR1')]));
    const file = await statDataFile(before.path, 'parquet');
    const drop = (await scanDrop(file.path, { requireSuccess: false })).files[0]!;
    const fileError = await rejectionOf(drain(readRecordBatches(file)), FileError);
    expect(fileError).toMatchObject({ code: 'FILE_CORRUPT', context: { file: file.path } });
    const ingestError = await rejectionOf(drain(readDropFileBatches(drop)), IngestError);
    expect(ingestError).toMatchObject({ code: 'INGEST_CORRUPT_FILE', message: fileError.message, context: { file: file.path } });
    const backupError = await rejectionOf(readShardRows(file).next(), BackupError);
    expect(backupError).toMatchObject({ code: 'BACKUP_CORRUPT_FILE' });
    expect(backupError.message).toContain(file.path);
  });

  it('a file rewritten after it was described: FILE_CHANGED, and for ingest INGEST_INPUT_CHANGED telling to scan again', async () => {
    const { file, drop } = await copy('changed.parquet');
    await appendFile(file.path, Buffer.from('x'));
    const fileError = await rejectionOf(readFooter(file), FileError);
    expect(fileError).toMatchObject({ code: 'FILE_CHANGED' });
    const ingestError = await rejectionOf(readFileFooter(drop), IngestError);
    expect(ingestError).toMatchObject({ code: 'INGEST_INPUT_CHANGED', message: `${fileError.message}; scan the drop again` });
    expect(await rejectionOf(drain(readDropFileBatches(drop)), IngestError)).toMatchObject({ code: 'INGEST_INPUT_CHANGED' });
  });

  it('a file modified while its row groups are read: FILE_CHANGED (INGEST_INPUT_CHANGED) at the next row group read, not after handing out the rest', async () => {
    const groups = 6;
    const rowsPerGroup = 1000;
    for (const [name, read] of [
      ['changed-mid-read.parquet', (file: DataFile) => readRecordBatches(file)],
      ['changed-mid-ingest.parquet', (file: DataFile) => readDropFileBatches(file as DropFile)],
    ] as const) {
      const path = tmp.sub(name);
      await writeParquetFile(path, tableFromArrays({ k: Int32Array.from({ length: groups * rowsPerGroup }, (_, i) => i) }), { rowGroupRows: rowsPerGroup });
      const drop = (await scanDrop(path, { requireSuccess: false })).files[0]!;
      const batches = read(name.includes('ingest') ? drop : await statDataFile(path, 'parquet'))[Symbol.asyncIterator]();
      let rows = ((await batches.next()).value as { batch: { numRows: number } }).batch.numRows;
      // Same bytes, a new modification time: a rewrite as the decoder's reads see it.
      await utimes(path, new Date(), new Date(Date.now() + 60_000));
      const failure = await (async () => {
        try {
          for (let next = await batches.next(); !next.done; next = await batches.next()) rows += next.value.batch.numRows;
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      if (name.includes('ingest')) {
        expect(failure).toBeInstanceOf(IngestError);
        expect(failure).toMatchObject({ code: 'INGEST_INPUT_CHANGED' });
      } else {
        expect(failure).toBeInstanceOf(FileError);
        expect(failure).toMatchObject({ code: 'FILE_CHANGED', context: { file: path } });
        expect((failure as Error).message).toContain('changed while it was being read');
      }
      // The row group decoded ahead may still come; the ones after the change never do.
      expect(rows).toBeLessThanOrEqual(2 * rowsPerGroup);
    }
  });

  it('a file gone after it was described: FILE_NOT_FOUND, INGEST_SOURCE_NOT_FOUND, BACKUP_NOT_FOUND', async () => {
    const { file, drop } = await copy('gone.parquet');
    await rm(file.path);
    expect(await rejectionOf(drain(readRecordBatches(file)), FileError)).toMatchObject({ code: 'FILE_NOT_FOUND', context: { file: file.path } });
    expect(await rejectionOf(drain(readDropFileBatches(drop)), IngestError)).toMatchObject({ code: 'INGEST_SOURCE_NOT_FOUND', context: { file: file.path } });
    expect(await rejectionOf(readShardRows(file).next(), BackupError)).toMatchObject({ code: 'BACKUP_NOT_FOUND' });
    expect(await rejectionOf(statDataFile(file.path, 'parquet'), FileError)).toMatchObject({ code: 'FILE_NOT_FOUND' });
  });

  it('a Parquet file that is not a shard file: the shard reader names the missing column', async () => {
    const { file } = await copy('not-a-shard.parquet');
    const err = await rejectionOf(readShardRows(file, { label: 'shard 3 (x.parquet)' }).next(), BackupError);
    expect(err).toMatchObject({ code: 'BACKUP_CORRUPT_FILE', context: { rowGroup: 0 } });
    expect(err.message).toBe('shard 3 (x.parquet): row group 0: column key is missing or split');
  });
});
