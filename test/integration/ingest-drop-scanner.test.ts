import { copyFile, mkdir, open, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Int32, Int64, Table, Utf8, vectorFromArray, type RecordBatch } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  IngestError,
  createRowMapper,
  encodeIntKey,
  readFileFooter,
  readRecordBatches,
  scanDrop,
  type DropFile,
} from '../../ingest/index.js';
import { writeArrowFile, writeParquetFile } from '../helpers/ingest-files.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';
import { rejectionOf } from '../helpers/rejection.js';

/** `rows` rows with ids from `first`: id (int32), name (utf8), amount (int64). */
function people(first: number, rows: number): Table {
  return new Table({
    id: vectorFromArray(Int32Array.from({ length: rows }, (_, i) => first + i)),
    // Plain Utf8: tableFromArrays would dictionary-encode, and the Arrow file format refuses a
    // different dictionary per batch.
    name: vectorFromArray(Array.from({ length: rows }, (_, i) => `person-${first + i}`), new Utf8()),
    amount: vectorFromArray(BigInt64Array.from({ length: rows }, (_, i) => BigInt(first + i) * 1000n)),
  });
}

async function collect(file: DropFile, options: Parameters<typeof readRecordBatches>[1] = {}): Promise<Array<{ rowGroup: number; batch: RecordBatch }>> {
  const out: Array<{ rowGroup: number; batch: RecordBatch }> = [];
  for await (const { rowGroup, batch } of readRecordBatches(file, options)) out.push({ rowGroup, batch });
  return out;
}

const refusal = (promise: Promise<unknown>): Promise<IngestError> => rejectionOf(promise, IngestError);

describe('scanDrop on a Spark-like folder', () => {
  let dir: TempDir;
  let drop: string;

  beforeAll(async () => {
    dir = await makeTempDir('shardpipe-ingest-scan-');
    drop = dir.sub('drop');
    await mkdir(join(drop, 'dt=2026-01-01', 'region=eu%2Fwest'), { recursive: true });
    await mkdir(join(drop, '_temporary', '0'), { recursive: true });
    await writeParquetFile(join(drop, 'part-00000-abc.snappy.parquet'), people(0, 250), { codec: 'snappy', rowGroupRows: 100 });
    await writeParquetFile(join(drop, 'dt=2026-01-01', 'part-00001-abc.zstd.parquet'), people(1000, 50), { codec: 'zstd' });
    await writeParquetFile(join(drop, 'dt=2026-01-01', 'region=eu%2Fwest', 'part-00002-abc.gz.parquet'), people(2000, 10), { codec: 'gzip' });
    // Side files Spark and Hadoop leave around, and a stray file that is no data at all.
    await writeFile(join(drop, '_SUCCESS'), '');
    await writeFile(join(drop, '.part-00000-abc.snappy.parquet.crc'), 'crc');
    await writeFile(join(drop, '_committed_123'), '{}');
    await writeFile(join(drop, '_started_123'), '');
    await writeFile(join(drop, '.hidden'), 'x');
    await writeFile(join(drop, '_temporary', '0', 'part-99999.parquet'), 'half-written');
    await writeFile(join(drop, 'README.txt'), 'notes');
    // A link back up the tree: the walk must list it once as skipped, not loop.
    await symlink(drop, join(drop, 'dt=2026-01-01', 'loop'));
  });

  afterAll(async () => {
    await dir.remove();
  });

  it('lists part files in two codecs with their Hive partition values, ignores side files, skips strays', async () => {
    const { files, skipped } = await scanDrop(drop);
    expect(files.map((f) => f.relativePath)).toEqual([
      'dt=2026-01-01/part-00001-abc.zstd.parquet',
      'dt=2026-01-01/region=eu%2Fwest/part-00002-abc.gz.parquet',
      'part-00000-abc.snappy.parquet',
    ]);
    expect(files.map((f) => f.format)).toEqual(['parquet', 'parquet', 'parquet']);
    expect(files.map((f) => f.partitionValues)).toEqual([{ dt: '2026-01-01' }, { dt: '2026-01-01', region: 'eu/west' }, {}]);
    expect(skipped).toEqual([
      { path: join(drop, 'README.txt'), reason: expect.stringContaining('no Parquet (PAR1) or Arrow IPC') },
      { path: join(drop, 'dt=2026-01-01', 'loop'), reason: expect.stringContaining('already part of the drop') },
    ]);
    for (const f of files) {
      const s = await stat(f.path);
      expect(f).toMatchObject({ sizeBytes: s.size, mtimeMs: s.mtimeMs });
      expect(f.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    }
    expect(new Set(files.map((f) => f.fingerprint)).size).toBe(3);
  });

  it('reads footers, row group ranges and key bounds of the generated files', async () => {
    const { files } = await scanDrop(drop);
    const snappy = files.find((f) => f.relativePath.startsWith('part-00000'))!;
    const footer = await readFileFooter(snappy, 'id');
    expect(footer.rows).toBe(250);
    expect(footer.rowGroups.map((rg) => rg.rows)).toEqual([100, 100, 50]);
    expect(footer.columns).toEqual([
      { name: 'id', type: 'INT32' },
      { name: 'name', type: 'BYTE_ARRAY (STRING)' },
      { name: 'amount', type: 'INT64' },
    ]);
    expect(footer.rowGroups[1]!.keyMin).toEqual(encodeIntKey(100, 4, true));
    expect(footer.rowGroups[1]!.keyMax).toEqual(encodeIntKey(199, 4, true));
    const byName = await readFileFooter(snappy, 'name');
    expect(byName.rowGroups[0]!.keyMin?.toString()).toBe('person-0');

    const middle = await collect(snappy, { rowGroupStart: 1, rowGroupEnd: 3 });
    expect(middle.map((c) => [c.rowGroup, c.batch.numRows])).toEqual([
      [1, 100],
      [2, 50],
    ]);
    expect(middle[0]!.batch.getChild('id')!.get(0)).toBe(100);

    const nested = files.find((f) => f.relativePath.includes('region='))!;
    const mapper = createRowMapper({ keyColumn: 'id', partitionValues: nested.partitionValues });
    const [chunk] = await collect(nested);
    const { rows } = mapper.mapBatch(chunk!.batch, { file: nested.path, rowGroup: chunk!.rowGroup });
    expect(JSON.parse(rows[0]!.value.toString())).toEqual({ name: 'person-2000', amount: 2000000, dt: '2026-01-01', region: 'eu/west' });
  });

  it('hands a row group on in batches of batchRows, each with its row offset in the group', async () => {
    const { files } = await scanDrop(drop);
    const snappy = files.find((f) => f.relativePath.startsWith('part-00000'))!;
    const chunks = [];
    for await (const { rowGroup, rowOffset, batch } of readRecordBatches(snappy, { rowGroupStart: 1, batchRows: 40 })) {
      chunks.push([rowGroup, rowOffset, batch.numRows, batch.getChild('id')!.get(0)]);
    }
    expect(chunks).toEqual([
      [1, 0, 40, 100],
      [1, 40, 40, 140],
      [1, 80, 20, 180],
      [2, 0, 40, 200],
      [2, 40, 10, 240],
    ]);
    await expect(collect(snappy, { batchRows: 0 })).rejects.toThrow(RangeError);
  });

  it('stops a Parquet read on abort, and reads nothing past the last row group', async () => {
    const { files } = await scanDrop(drop);
    const snappy = files.find((f) => f.relativePath.startsWith('part-00000'))!;
    const controller = new AbortController();
    const reason = new Error('stop');
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const { rowGroup } of readRecordBatches(snappy, { signal: controller.signal })) {
          seen.push(rowGroup);
          controller.abort(reason);
        }
      })(),
    ).rejects.toBe(reason);
    expect(seen).toEqual([0]);
    expect(await collect(snappy, { rowGroupStart: 3 })).toEqual([]);
    // The decoder is usable again after an aborted read.
    expect((await collect(snappy)).map((c) => c.batch.numRows)).toEqual([100, 100, 50]);
  });

  it('refuses a folder without _SUCCESS unless told otherwise', async () => {
    const incomplete = dir.sub('incomplete');
    await mkdir(incomplete);
    await copyFile(join(drop, 'part-00000-abc.snappy.parquet'), join(incomplete, 'part-00000.parquet'));
    const err = await refusal(scanDrop(incomplete));
    expect(err.code).toBe('INGEST_INCOMPLETE_DROP');
    expect(err.message).toContain('_SUCCESS');
    expect(err.message).toContain('--no-require-success');
    const { files } = await scanDrop(incomplete, { requireSuccess: false });
    expect(files.map((f) => f.relativePath)).toEqual(['part-00000.parquet']);
  });

  it('takes a single file as a drop of one, without a marker', async () => {
    const path = join(drop, 'dt=2026-01-01', 'part-00001-abc.zstd.parquet');
    const { files, skipped } = await scanDrop(path);
    expect(skipped).toEqual([]);
    expect(files).toEqual([expect.objectContaining({ path, relativePath: 'part-00001-abc.zstd.parquet', format: 'parquet', partitionValues: {} })]);
    expect((await readFileFooter(files[0]!)).rows).toBe(50);
  });

  it('refuses a missing path and a file changed after the scan; keeps a truncated Parquet file, whose footer read fails naming it', async () => {
    expect((await refusal(scanDrop(dir.sub('nope')))).code).toBe('INGEST_SOURCE_NOT_FOUND');

    const truncated = dir.sub('truncated');
    await mkdir(truncated);
    const source = join(drop, 'part-00000-abc.snappy.parquet');
    const half = Buffer.alloc(Math.floor((await stat(source)).size / 2));
    const handle = await open(source, 'r');
    await handle.read(half, 0, half.byteLength, 0);
    await handle.close();
    await writeFile(join(truncated, 'part-00000.parquet'), half);
    await writeFile(join(truncated, '_SUCCESS'), '');
    const scan = await scanDrop(truncated);
    expect(scan.files.map((f) => f.relativePath)).toEqual(['part-00000.parquet']);
    const err = await refusal(readFileFooter(scan.files[0]!));
    expect(err.code).toBe('INGEST_CORRUPT_FILE');
    expect(err.message).toContain('part-00000.parquet');
    expect(err.message).toContain('truncated');

    const changing = dir.sub('changing.parquet');
    await copyFile(source, changing);
    const { files } = await scanDrop(changing);
    await utimes(changing, new Date(), new Date(Date.now() + 5000));
    expect((await refusal(readFileFooter(files[0]!))).code).toBe('INGEST_INPUT_CHANGED');
    expect((await refusal(collect(files[0]!))).code).toBe('INGEST_INPUT_CHANGED');
  });
});

describe('Arrow IPC drops', () => {
  let dir: TempDir;
  const table = people(0, 10).concat(people(10, 20), people(30, 5));

  beforeAll(async () => {
    dir = await makeTempDir('shardpipe-ingest-arrow-');
    await writeArrowFile(dir.sub('data.arrow'), table, 'file');
    await writeArrowFile(dir.sub('data.arrows'), table, 'stream');
    await writeFile(dir.sub('_SUCCESS'), '');
  });

  afterAll(async () => {
    await dir.remove();
  });

  it.each(['data.arrow', 'data.arrows'])('%s: detected by magic, footer per record batch, ranges read', async (name) => {
    const { files } = await scanDrop(dir.path);
    const file = files.find((f) => f.relativePath === name)!;
    expect(file.format).toBe('arrow');
    const footer = await readFileFooter(file, 'name');
    expect(footer.rows).toBe(35);
    expect(footer.rowGroups.map((rg) => rg.rows)).toEqual([10, 20, 5]);
    expect(footer.rowGroups.every((rg) => rg.bytes > 0 && rg.keyMin === undefined)).toBe(true);
    expect(footer.columns).toEqual([
      { name: 'id', type: 'Int32' },
      { name: 'name', type: 'Utf8' },
      { name: 'amount', type: 'Int64' },
    ]);
    const all = await collect(file);
    expect(all.map((c) => [c.rowGroup, c.batch.numRows])).toEqual([
      [0, 10],
      [1, 20],
      [2, 5],
    ]);
    const tail = await collect(file, { rowGroupStart: 1, rowGroupEnd: 2 });
    expect(tail.map((c) => [c.rowGroup, c.batch.getChild('id')!.get(0)])).toEqual([[1, 10]]);
    const mapped = createRowMapper({ keyColumn: 'name', valueColumn: 'id' }).mapBatch(all[2]!.batch, { file: file.path, rowGroup: 2 });
    expect(mapped.rows.map((r) => r.key.toString())).toEqual(['person-30', 'person-31', 'person-32', 'person-33', 'person-34']);
    expect(mapped.rows[0]!.value.toString()).toBe('30');
    expect((await refusal(readFileFooter(file, 'missing'))).code).toBe('INGEST_KEY_COLUMN_MISSING');
  });

  it('refuses an Arrow stream cut off inside a record batch, naming the file', async () => {
    const bytes = await import('node:fs/promises').then((fs) => fs.readFile(dir.sub('data.arrows')));
    const cut = dir.sub('cut.arrows');
    await writeFile(cut, bytes.subarray(0, bytes.byteLength - 200));
    const { files } = await scanDrop(cut);
    const footerErr = await refusal(readFileFooter(files[0]!));
    expect(footerErr.code).toBe('INGEST_CORRUPT_FILE');
    expect(footerErr.message).toContain('cut.arrows');
    const readErr = await refusal(collect(files[0]!));
    expect(readErr.code).toBe('INGEST_CORRUPT_FILE');
    expect(readErr.message).toContain('cut.arrows');
  });

  it('an aborted read stops with the signal’s reason', async () => {
    const { files } = await scanDrop(dir.sub('data.arrow'));
    const controller = new AbortController();
    const seen: number[] = [];
    const reason = new Error('stop');
    await expect(
      (async () => {
        for await (const { rowGroup } of readRecordBatches(files[0]!, { signal: controller.signal })) {
          seen.push(rowGroup);
          controller.abort(reason);
        }
      })(),
    ).rejects.toBe(reason);
    expect(seen).toEqual([0]);
  });
});

describe('Parquet type coverage written by parquet-wasm', () => {
  it('reads what it writes in every codec, with nulls and many row groups', async () => {
    const dir = await makeTempDir('shardpipe-ingest-codecs-');
    try {
      const ids = vectorFromArray(Array.from({ length: 300 }, (_, i) => (i % 7 === 0 ? null : BigInt(i - 150))), new Int64());
      const names = vectorFromArray(Array.from({ length: 300 }, (_, i) => (i % 5 === 0 ? null : `n${i}`)), new Utf8());
      const table = new Table({ id: ids, name: names, n: vectorFromArray(Array.from({ length: 300 }, (_, i) => i), new Int32()) });
      for (const codec of ['uncompressed', 'snappy', 'gzip', 'zstd', 'brotli', 'lz4_raw'] as const) {
        const path = join(dir.path, `${codec}.parquet`);
        await writeParquetFile(path, table, { codec, rowGroupRows: 64 });
        const { files } = await scanDrop(path);
        const footer = await readFileFooter(files[0]!, 'id');
        expect(footer.rowGroups).toHaveLength(5);
        const mapper = createRowMapper({ keyColumn: 'id' });
        let rows = 0;
        let rejects = 0;
        let previous: Buffer | undefined;
        for await (const { rowGroup, batch } of readRecordBatches(files[0]!)) {
          const mapped = mapper.mapBatch(batch, { file: path, rowGroup });
          rows += mapped.rows.length;
          rejects += mapped.rejects.length;
          for (const row of mapped.rows) {
            // Ascending ids give ascending keys, across the sign change too.
            if (previous !== undefined) expect(Buffer.compare(previous, row.key)).toBeLessThan(0);
            previous = row.key;
          }
        }
        expect({ codec, rows, rejects }).toEqual({ codec, rows: 300 - 43, rejects: 43 });
      }
    } finally {
      await dir.remove();
    }
  });
});
