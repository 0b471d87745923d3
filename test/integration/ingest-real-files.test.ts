import { resolve } from 'node:path';
import { Int32, RecordBatch, Table, makeVector, type Vector } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import {
  IngestError,
  createRowMapper,
  readFileFooter,
  readRecordBatches,
  scanDrop,
  type DropFile,
  type FileFooter,
  type Reject,
} from '../../ingest/index.js';
import { REAL_DATA_DIR, readManifest } from '../helpers/ingest-manifest.js';

const manifest = readManifest();
/** Each file gets this long; a reader that hangs fails its test instead of the whole run. */
const PER_FILE_TIMEOUT_MS = 20_000;
/** The reader's own hang guard, well inside the test's timeout. */
const STALL_TIMEOUT_MS = 10_000;

async function dropFileOf(relative: string): Promise<DropFile> {
  const { files } = await scanDrop(resolve(REAL_DATA_DIR, relative));
  expect(files).toHaveLength(1);
  return files[0]!;
}

/**
 * The manifest strips a trailing colon that some column names of delta_encoding_required_column
 * really have ("c_customer_sk:"): the footer must refuse the stripped name and list the real ones.
 */
async function resolveKeyColumn(file: DropFile, candidate: string): Promise<{ key: string; footer: FileFooter }> {
  try {
    return { key: candidate, footer: await readFileFooter(file, candidate) };
  } catch (err) {
    expect(err).toBeInstanceOf(IngestError);
    expect((err as IngestError).code).toBe('INGEST_KEY_COLUMN_MISSING');
    const footer = await readFileFooter(file);
    const real = footer.columns.find((c) => c.name.replace(/:$/, '') === candidate);
    expect(real, `${candidate} not among ${footer.columns.map((c) => c.name).join(', ')}`).toBeDefined();
    expect((err as IngestError).message).toContain(real!.name);
    return { key: real!.name, footer: await readFileFooter(file, real!.name) };
  }
}

/** A batch with an extra Int32 `__row` column in front, to map files that have no usable key. */
function withRowKey(batch: RecordBatch, firstRow: number): RecordBatch {
  const columns: Record<string, Vector> = { __row: makeVector({ type: new Int32(), data: Int32Array.from({ length: batch.numRows }, (_, i) => firstRow + i) }) };
  batch.schema.fields.forEach((f, i) => {
    columns[f.name] = batch.getChildAt(i)!;
  });
  const table = new Table(columns);
  expect(table.batches).toHaveLength(1);
  return table.batches[0]!;
}

describe('ingest reads the real files of MANIFEST.md', () => {
  const readable = manifest.filter((e) => e.folder === 'data' && e.duckdbReads && e.keyColumn !== undefined);
  expect(readable.length).toBeGreaterThan(20);

  it.each(readable.map((e) => [e.file, e] as const))(
    '%s: footer rows, streamed rows + rejects and key bounds agree with the manifest',
    async (_name, entry) => {
      const file = await dropFileOf(entry.file);
      expect(file.format).toBe('parquet');
      const { key, footer } = await resolveKeyColumn(file, entry.keyColumn!);
      expect(footer.rows).toBe(entry.rows);
      expect(footer.rowGroups.reduce((n, rg) => n + rg.rows, 0)).toBe(entry.rows);

      const mapper = createRowMapper({ keyColumn: key, partitionValues: { source: 'manifest' } });
      let rows = 0;
      const rejects: Reject[] = [];
      const perGroup = new Map<number, number>();
      for await (const { rowGroup, rowOffset, batch } of readRecordBatches(file, { stallTimeoutMs: STALL_TIMEOUT_MS })) {
        const mapped = mapper.mapBatch(batch, { file: file.path, rowGroup, rowOffset });
        rows += mapped.rows.length;
        rejects.push(...mapped.rejects);
        perGroup.set(rowGroup, (perGroup.get(rowGroup) ?? 0) + batch.numRows);
        const { keyMin, keyMax } = footer.rowGroups[rowGroup]!;
        for (const row of mapped.rows) {
          // Footer bounds are encoded like mapped keys, so they bound them bytewise.
          if (keyMin !== undefined) expect(Buffer.compare(keyMin, row.key), `key ${row.key.toString('hex')} < keyMin`).toBeLessThanOrEqual(0);
          if (keyMax !== undefined) expect(Buffer.compare(row.key, keyMax), `key ${row.key.toString('hex')} > keyMax`).toBeLessThanOrEqual(0);
          const doc = JSON.parse(row.value.toString('utf8')) as Record<string, unknown>;
          expect(doc).not.toHaveProperty(key);
          expect(doc.source).toBe('manifest');
        }
      }
      expect(rows + rejects.length).toBe(entry.rows);
      for (const rg of footer.rowGroups) expect(perGroup.get(rg.index) ?? 0).toBe(rg.rows);
      for (const r of rejects) {
        expect(r.file).toBe(file.path);
        expect(r.row).toBeGreaterThanOrEqual(0);
        expect(r.row).toBeLessThan(footer.rowGroups[r.rowGroup]!.rows);
      }
      // The manifest marks int32_with_null_pages; other key candidates have some nulls too
      // (fixed_length_byte_array, sort_columns). Every reject must be a null key, nothing else.
      if (entry.keyHasNulls) expect(rejects.length).toBeGreaterThan(0);
      for (const r of rejects) {
        expect(r.reason).toBe(`key column "${key}" is null`);
        expect(r.keyHex).toBeUndefined();
      }
    },
    PER_FILE_TIMEOUT_MS,
  );
});

describe('ingest reads or cleanly refuses every other real file', () => {
  const others = manifest.filter((e) => !(e.folder === 'data' && e.duckdbReads && e.keyColumn !== undefined));

  it.each(others.map((e) => [e.file, e] as const))(
    '%s: reads with the manifest row count, or refuses naming the file',
    async (_name, entry) => {
      const path = resolve(REAL_DATA_DIR, entry.file);
      const name = entry.file.split('/').pop()!;
      let outcome: { rows: number } | IngestError;
      try {
        const file = await dropFileOf(entry.file);
        const footer = await readFileFooter(file);
        const mapper = createRowMapper({ keyColumn: '__row' });
        let rows = 0;
        let firstRow = 0;
        for await (const { rowGroup, rowOffset, batch } of readRecordBatches(file, { stallTimeoutMs: STALL_TIMEOUT_MS })) {
          // Every column goes through the JSON value rules; each document must parse.
          const mapped = mapper.mapBatch(withRowKey(batch, firstRow), { file: file.path, rowGroup, rowOffset });
          for (const row of mapped.rows) JSON.parse(row.value.toString('utf8'));
          for (const r of mapped.rejects) expect(r.reason).toMatch(/value/);
          rows += mapped.rows.length + mapped.rejects.length;
          firstRow += batch.numRows;
        }
        expect(rows).toBe(footer.rows);
        outcome = { rows };
      } catch (err) {
        if (!(err instanceof IngestError)) throw err;
        outcome = err;
      }
      if (outcome instanceof IngestError) {
        expect(outcome.message).toContain(name);
        expect(outcome.context.file).toBe(path);
        expect(['INGEST_CORRUPT_FILE', 'INGEST_UNSUPPORTED_FORMAT']).toContain(outcome.code);
      } else if (entry.rows !== undefined) {
        expect(outcome.rows).toBe(entry.rows);
      }
    },
    PER_FILE_TIMEOUT_MS,
  );
});
