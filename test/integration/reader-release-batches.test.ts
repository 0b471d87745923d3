import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tableFromArrays, type RecordBatch } from 'apache-arrow';
import { readRecordBatches, statDataFile, type DataFile } from '../../files/index.js';
import { writeParquetFile } from '../helpers/ingest-files.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const ROWS = 20_000;

/** The buffer a batch's columns are views of (one IPC stream buffer per decoded batch). */
function backing(batch: RecordBatch): ArrayBufferLike {
  return batch.getChildAt(0)!.data[0]!.values.buffer;
}

describe('readRecordBatches releaseBatches and readAhead: each Parquet batch freed once the next is asked for, the next row group decoded near the last batch', () => {
  let tmp: TempDir;
  let file: DataFile;
  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-release-batches-');
    const path = tmp.sub('rows.parquet');
    const ids = Int32Array.from({ length: ROWS }, (_, i) => i);
    const names = Array.from({ length: ROWS }, (_, i) => `row-${i}`);
    await writeParquetFile(path, tableFromArrays({ id: ids, name: names }), { rowGroupRows: 6000 });
    file = await statDataFile(path, 'parquet');
  });
  afterAll(async () => {
    await tmp?.remove();
  });

  async function read(releaseBatches: boolean, readAhead?: 'rowGroup' | 'late', range: { rowGroupStart?: number; rowGroupEnd?: number } = {}): Promise<{ ids: number[]; names: string[]; held: Array<{ batch: RecordBatch; buffer: ArrayBufferLike; bytes: number }> }> {
    const ids: number[] = [];
    const names: string[] = [];
    const held: Array<{ batch: RecordBatch; buffer: ArrayBufferLike; bytes: number }> = [];
    for await (const { batch } of readRecordBatches(file, { batchRows: 2048, releaseBatches, readAhead, ...range })) {
      // Copies: what a caller may keep.
      for (const v of batch.getChild('id')!) ids.push(v as number);
      for (const v of batch.getChild('name')!) names.push(String(v));
      const buffer = backing(batch);
      held.push({ batch, buffer, bytes: buffer.byteLength });
    }
    return { ids, names, held };
  }

  it('hands out the same rows; every batch buffer but the last is empty by the end, and each was whole while it was handed out', async () => {
    const kept = await read(false);
    const released = await read(true);
    expect(released.ids).toEqual(kept.ids);
    expect(released.names).toEqual(kept.names);
    expect(released.ids).toEqual(Array.from({ length: ROWS }, (_, i) => i));
    // 4 row groups of ≤ 6,000 rows in batches of ≤ 2,048: several buffers.
    expect(released.held.length).toBeGreaterThan(8);
    for (const h of released.held) expect(h.bytes).toBeGreaterThan(0);
    // The reader frees a buffer when the caller asks for the batch after it; nothing asks after the last.
    const buffers = [...new Set(released.held.map((h) => h.buffer))];
    for (const b of buffers.slice(0, -1)) expect(b.byteLength).toBe(0);
    // Without the option nothing is freed.
    for (const h of kept.held) expect(h.buffer.byteLength).toBe(h.bytes);
  });

  it("readAhead 'late' (what ingest uses, with releaseBatches) hands out the same rows, whole files and row-group ranges, with batches as large as a row group too", async () => {
    for (const range of [{}, { rowGroupStart: 1 }, { rowGroupStart: 1, rowGroupEnd: 3 }, { rowGroupStart: 3 }]) {
      const kept = await read(false, 'rowGroup', range);
      const late = await read(true, 'late', range);
      expect(late.ids).toEqual(kept.ids);
      expect(late.names).toEqual(kept.names);
    }
    // Row groups 1 and 2: rows 6,000 to 17,999.
    expect((await read(true, 'late', { rowGroupStart: 1, rowGroupEnd: 3 })).ids).toEqual(Array.from({ length: 12_000 }, (_, i) => 6000 + i));
    // One batch per row group: the next one is asked for as soon as this one is handed out.
    const whole: number[] = [];
    for await (const { batch } of readRecordBatches(file, { batchRows: 6000, releaseBatches: true, readAhead: 'late' })) for (const v of batch.getChild('id')!) whole.push(v as number);
    expect(whole).toEqual(Array.from({ length: ROWS }, (_, i) => i));
  });
});
