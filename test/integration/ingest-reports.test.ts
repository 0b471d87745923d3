import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parquetMetadata } from 'hyparquet';
import { describe, expect, it } from 'vitest';
import { StoreClient } from '../../store/index.js';
import { StoreCluster, runCli } from '../helpers/store-cluster.js';
import { useStack } from '../helpers/stack.js';
import { toParquet } from '../helpers/spark-drop.js';

/** `count` rows with keys `${prefix}000000…`, in key order; `nullEvery` > 0 nulls every n-th key. */
function columns(prefix: string, count: number, nullEvery = 0): { id: Array<string | null>; payload: string[] } {
  const id = Array.from({ length: count }, (_, i) => (nullEvery > 0 && i % nullEvery === 0 ? null : `${prefix}${String(i).padStart(6, '0')}`));
  return { id, payload: id.map((_, i) => `payload ${i} `.padEnd(60, 'p')) };
}

describe('ingest reports say what happened: first real error, stored rows, rejects, empty files and drops', () => {
  const stack = useStack({ prefix: 'shardpipe-ingest-reports-', nodes: 2, partitions: 4 });

  const ingest = (source: string, ...extra: string[]) =>
    runCli(['ingest', source, '--key-column', 'id', '--value-column', 'payload', ...stack.cliArgs, '--data-dir', join(stack.dir, 'data'), '--json', '--log-level', 'warn', ...extra]);

  /** Entries in the store whose key starts with `prefix` (one ASCII prefix ending below '~'). */
  const stored = async (prefix: string): Promise<number> => {
    const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
    return (await stack.client.checksum(Buffer.from(prefix), Buffer.from(end))).count;
  };

  it('a Parquet file with a corrupt page (footer intact): the decode error is reported, not a cancellation, and rowsIngested is what the store holds', async () => {
    const folder = join(stack.dir, 'drop-corrupt-page');
    await mkdir(folder);
    // 6 row groups of 5000 rows; each row group is several BulkInsert calls, so calls are in flight when row group 3 fails.
    const bytes = Buffer.from(toParquet(columns('cp-', 30_000), 'SNAPPY', 5000));
    const meta = parquetMetadata(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
    expect(meta.row_groups.length).toBe(6);
    // Overwrite the payload column chunk of row group 3 (page headers and data) and leave the footer alone.
    const chunk = meta.row_groups[3]!.columns[1]!.meta_data!;
    const from = Number(chunk.dictionary_page_offset ?? chunk.data_page_offset);
    bytes.fill(0xff, from, from + Number(chunk.total_compressed_size));
    const name = 'part-00000-corrupt-page.snappy.parquet';
    await writeFile(join(folder, name), bytes);
    await writeFile(join(folder, '_SUCCESS'), '');

    const r = await ingest(folder);
    expect(r.code, r.stderr).toBe(2);
    const report = JSON.parse(r.stdout);
    expect(report.filesFailed).toBe(1);
    expect(report.failures[0].file).toBe(name);
    expect(report.failures[0].reason).toContain('INGEST_CORRUPT_FILE');
    expect(report.failures[0].reason).toContain(name);
    expect(report.failures[0].reason).toMatch(/row group 3/);
    expect(report.failures[0].reason).not.toContain('CANCELLED');
    // Everything read before the bad row group is stored, and counted: report and store agree.
    const inStore = await stored('cp-');
    expect(inStore).toBe(15_000);
    expect(report.rowsIngested).toBe(inStore);
    expect(report.files).toEqual([expect.objectContaining({ file: name, state: 'failed', rowsIngested: inStore, rowsRejected: 0 })]);
  });

  it('--max-rejects exceeded: the rejects are reported and the file that crossed the line is named; clean files are not blamed', async () => {
    const folder = join(stack.dir, 'drop-max-rejects');
    await mkdir(folder);
    // Every 4th key is null: 25 rejects per 100 rows, the budget of 10 is crossed in this file's first batch.
    await writeFile(join(folder, 'part-00000-dirty.parquet'), toParquet(columns('mr-a-', 400, 4), 'SNAPPY', 50));
    // Clean files, ingested at the same time and slowly, so they checkpoint after the line was crossed.
    await writeFile(join(folder, 'part-00001-clean.parquet'), toParquet(columns('mr-b-', 6000), 'SNAPPY', 500));
    await writeFile(join(folder, 'part-00002-clean.parquet'), toParquet(columns('mr-c-', 3000), 'SNAPPY', 500));
    await writeFile(join(folder, '_SUCCESS'), '');

    const r = await ingest(folder, '--max-rejects', '10', '--max-rows-per-second', '4000', '--concurrency', '2');
    expect(r.code, r.stderr).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.failures).toHaveLength(1);
    expect(report.failures[0].file).toBe('part-00000-dirty.parquet');
    expect(report.failures[0].reason).toContain('INGEST_TOO_MANY_REJECTS');
    expect(report.failures[0].reason).toContain('over --max-rejects 10');
    expect(report.failures[0].reason).toContain('part-00000-dirty.parquet');
    expect(report.rowsRejected).toBeGreaterThan(10);
    const dirty = report.files.find((f: { file: string }) => f.file === 'part-00000-dirty.parquet');
    expect(dirty).toMatchObject({ state: 'failed' });
    expect(dirty.rowsRejected).toBe(report.rowsRejected);
    // The rejects file holds what the report counts.
    const lines = (await readFile(report.rejectsPath, 'utf8')).split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThanOrEqual(report.rowsRejected);
    // The clean files went through whole.
    expect(report.files.filter((f: { state: string }) => f.state === 'ok').map((f: { file: string }) => f.file)).toEqual(['part-00001-clean.parquet', 'part-00002-clean.parquet']);
    expect(await stored('mr-b-')).toBe(6000);
    expect(await stored('mr-c-')).toBe(3000);
    expect(report.rowsIngested).toBe((await stored('mr-a-')) + 9000);
  });

  it('a 0-byte file fails alone as empty (INGEST_EMPTY_FILE, named); the other files are ingested', async () => {
    const folder = join(stack.dir, 'drop-empty-file');
    await mkdir(folder);
    await writeFile(join(folder, 'part-00000-good.parquet'), toParquet(columns('ef-', 700), 'ZSTD', 200));
    await writeFile(join(folder, 'part-00001-empty.parquet'), '');
    await writeFile(join(folder, '_SUCCESS'), '');
    const r = await ingest(folder);
    expect(r.code, r.stderr).toBe(2);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ rowsIngested: 700, filesOk: 1, filesFailed: 1 });
    expect(report.failures[0].file).toBe('part-00001-empty.parquet');
    expect(report.failures[0].reason).toContain('INGEST_EMPTY_FILE');
    expect(report.failures[0].reason).toContain('part-00001-empty.parquet');
    expect(report.failures[0].reason).not.toContain('DataView');
    expect(await stored('ef-')).toBe(700);

    // Given as the drop itself, the same.
    const single = await ingest(join(folder, 'part-00001-empty.parquet'));
    expect(single.code, single.stderr).toBe(2);
    expect(JSON.parse(single.stdout).failures[0].reason).toContain('INGEST_EMPTY_FILE');
  });

  it('a drop holding only _SUCCESS: exit 2 with INGEST_EMPTY_DROP, or exit 0 with --allow-empty', async () => {
    const folder = join(stack.dir, 'drop-only-success');
    await mkdir(folder);
    await writeFile(join(folder, '_SUCCESS'), '');
    await writeFile(join(folder, '.part-00000.crc'), 'crc');
    const r = await ingest(folder);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain('INGEST_EMPTY_DROP');
    expect(r.stderr).toContain('no data files');
    expect(r.stderr).toContain('--allow-empty');

    const allowed = await ingest(folder, '--allow-empty');
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(JSON.parse(allowed.stdout)).toMatchObject({ rowsIngested: 0, filesOk: 0, filesFailed: 0, files: [] });
  });
  it('a file failing on a store error mid-way (a node refusing a key, as a full disk refuses writes): the store error is reported and the rows checkpointed before it count', async () => {
    // Nodes that take keys of at most 64 bytes, while ingest's own limit is 4 KiB: the node refuses the long key.
    const strict = await StoreCluster.start({ nodes: 1, partitions: 2, extraArgs: ['--max-key-bytes', '64'] });
    const strictClient = new StoreClient({ seeds: strict.seeds });
    try {
      const folder = join(stack.dir, 'drop-store-error');
      await mkdir(folder);
      const { id, payload } = columns('se-', 20_000);
      // Still in key order: just after se-015000.
      id[15_000] = `${id[15_000]}${'z'.repeat(100)}`;
      await writeFile(join(folder, 'part-00000.parquet'), toParquet({ id, payload }, 'SNAPPY', 2000));
      await writeFile(join(folder, '_SUCCESS'), '');
      const r = await runCli(['ingest', folder, '--key-column', 'id', '--value-column', 'payload', '--seeds', strict.seeds.join(','), '--redis', stack.redis.url, '--data-dir', join(stack.dir, 'data'), '--json', '--log-level', 'warn']);
      expect(r.code, r.stderr).toBe(2);
      const report = JSON.parse(r.stdout);
      expect(report.failures[0].reason).toContain('STORE_INVALID_KEY');
      expect(report.failures[0].reason).not.toContain('CANCELLED');
      const inStore = (await strictClient.checksum(Buffer.from('se-'), Buffer.from('se.'))).count;
      // Rows up to the last checkpoint count; only writes in flight when the call failed may be stored
      // beyond it: 4 calls (maxInFlight) of one decoded batch each, here a 2000-row row group, the
      // failing one starting at row 14,000.
      const rowsPerCall = 2000;
      const inFlight = 4;
      expect(report.rowsIngested).toBeGreaterThanOrEqual(14_000 - (inFlight - 1) * rowsPerCall);
      expect(report.rowsIngested).toBeLessThanOrEqual(inStore);
      expect(inStore - report.rowsIngested).toBeLessThanOrEqual(inFlight * rowsPerCall);
      expect(report.files[0]).toMatchObject({ state: 'failed', rowsIngested: report.rowsIngested });
    } finally {
      strictClient.close();
      await strict.close();
    }
  });
});
