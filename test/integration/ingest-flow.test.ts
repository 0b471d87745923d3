import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, runCli } from '../helpers/store-cluster.js';
import { useStack } from '../helpers/stack.js';
import { REAL_DATA_DIR, readManifest } from '../helpers/ingest-manifest.js';
import { toParquet, writeSparkDrop } from '../helpers/spark-drop.js';

describe('shardpipe ingest: BullMQ flow into a real 3-node cluster', () => {
  const stack = useStack({ prefix: 'shardpipe-ingest-', nodes: 3, partitions: 6 });

  const ingest = (source: string, ...extra: string[]) =>
    runCli(['ingest', source, '--key-column', 'id', ...stack.cliArgs, '--data-dir', join(stack.dir, 'data'), '--json', '--log-level', 'warn', ...extra]);

  /** Entries whose key starts with `prefix`, as a digest. */
  const storeDigest = async (prefix: string) => stack.client.checksum(Buffer.from(prefix), Buffer.from(prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)));

  it('ingests a Spark-like drop (several part files, codecs, .crc, _SUCCESS) exactly', async () => {
    const drop = await writeSparkDrop(join(stack.dir, 'drop-a'), { files: 4, rowsPerFile: 5000, rowGroupRows: 1500, prefix: 'a-' });
    const r = await ingest(drop.dir, '--value-column', 'payload');
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ rowsIngested: drop.rows, rowsRejected: 0, filesOk: 4, filesFailed: 0 });
    expect(Object.keys(report)).toEqual(expect.arrayContaining(['id', 'rowsIngested', 'rowsRejected', 'filesOk', 'filesFailed', 'rejectsPath', 'durationMs', 'rowsPerSecond']));
    // Sorted part files: no two share a key range.
    expect(report.keyOverlaps).toEqual({ filesOverlapping: 0, overlappingPairs: 0, overlaps: [], filesWithoutKeyRange: 0 });
    const stored = await storeDigest('a-');
    expect(stored.count).toBe(drop.rows);
    expect(stored.toHex()).toBe(drop.digest.toHex());

    // The same drop again: the finished ingest is found, not redone.
    const again = await ingest(drop.dir, '--value-column', 'payload');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).id).toBe(report.id);
  });

  it('files overlapping in key range: the plan and report name them, and the store still holds each key once', async () => {
    const drop = await writeSparkDrop(join(stack.dir, 'drop-h'), { files: 3, rowsPerFile: 3000, rowGroupRows: 1000, overlapRows: 500, prefix: 'h-' });
    const r = await runCli(['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', ...stack.cliArgs, '--data-dir', join(stack.dir, 'data'), '--log-level', 'warn']);
    expect(r.code, r.stderr).toBe(0);
    // Said when planning, before any row is read, and again in the report.
    expect(r.stderr).toContain('key ranges overlap: 3 files, 2 pairs');
    expect(r.stdout).toContain('key ranges overlap: 3 files, 2 pairs');
    const again = await ingest(drop.dir, '--value-column', 'payload');
    const report = JSON.parse(again.stdout);
    expect(report).toMatchObject({ rowsIngested: 9000, rowsOutOfOrder: 0, filesOk: 3 });
    const [p0, p1, p2] = ['part-00000-3f1c.c000.snappy.parquet', 'part-00001-3f1c.c000.zstd.parquet', 'part-00002-3f1c.c000.gzip.parquet'];
    expect(report.keyOverlaps).toEqual({
      filesOverlapping: 3,
      overlappingPairs: 2,
      overlaps: [
        { file: p0, overlapsWith: [p1] },
        { file: p1, overlapsWith: [p0, p2] },
        { file: p2, overlapsWith: [p1] },
      ],
      filesWithoutKeyRange: 0,
    });
    const stored = await storeDigest('h-');
    expect(stored.count).toBe(drop.rows);
    expect(stored.toHex()).toBe(drop.digest.toHex());
  });

  it('refuses a folder without _SUCCESS unless told otherwise', async () => {
    const drop = await writeSparkDrop(join(stack.dir, 'drop-b'), { files: 1, rowsPerFile: 100, success: false, prefix: 'b-' });
    const refused = await ingest(drop.dir);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('_SUCCESS');
    expect(refused.stderr).toContain('INGEST_INCOMPLETE_DROP');
    const forced = await ingest(drop.dir, '--no-require-success', '--value-column', 'payload');
    expect(forced.code, forced.stderr).toBe(0);
    expect(JSON.parse(forced.stdout).rowsIngested).toBe(100);
  });

  it('null keys and oversized values become rejects with file, row group, row and reason; a corrupt file fails alone (exit 2)', async () => {
    const folder = join(stack.dir, 'drop-c');
    await writeSparkDrop(folder, { files: 2, rowsPerFile: 1000, prefix: 'c-' });
    const ids = Array.from({ length: 50 }, (_, i) => (i % 10 === 3 ? null : `zz-${String(i).padStart(4, '0')}`));
    await writeFile(join(folder, 'part-09999-bad-rows.parquet'), toParquet({ id: ids, payload: ids.map((_, i) => (i === 7 ? 'x'.repeat(5 * 1024 * 1024) : 'ok')) }, 'SNAPPY', 20));
    const good = await readFile(join(folder, 'part-00000-3f1c.c000.snappy.parquet'));
    await writeFile(join(folder, 'part-09998-truncated.parquet'), good.subarray(0, Math.floor(good.length / 2)));
    const r = await ingest(folder, '--value-column', 'payload');
    expect(r.code, r.stderr).toBe(2);
    const report = JSON.parse(r.stdout);
    expect(report.filesFailed).toBe(1);
    expect(report.failures[0].file).toContain('part-09998-truncated.parquet');
    expect(report.filesOk).toBe(3);
    expect(report.rowsRejected).toBe(6);
    expect(report.rowsIngested).toBe(2000 + 44);
    // One file for the whole ingest; the children's parts are gone.
    expect(report.rejectsPath).toBe(join(stack.dir, 'data', 'rejects', `${report.id}.ndjson`));
    await expect(readdir(join(stack.dir, 'data', 'rejects', report.id))).rejects.toThrow(/ENOENT/);
    const lines = (await readFile(report.rejectsPath, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(6);
    const nullKey = lines.find((l) => l.row === 3);
    expect(nullKey).toMatchObject({ file: 'part-09999-bad-rows.parquet', rowGroup: 0 });
    expect(nullKey.reason).toMatch(/null/i);
    const big = lines.find((l) => l.row === 7);
    expect(big.reason).toMatch(/value/i);
    expect(big.key).toBe(Buffer.from('zz-0007').toString('hex'));
  });

  it('a worker killed with SIGKILL mid-ingest: running the same command again completes, re-sends little, and the store holds exactly the input', async () => {
    const drop = await writeSparkDrop(join(stack.dir, 'drop-d'), { files: 3, rowsPerFile: 20_000, rowGroupRows: 2000, prefix: 'd-' });
    const args = ['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', ...stack.cliArgs, '--data-dir', join(stack.dir, 'data'), '--json', '--lock-duration', '2s', '--log-level', 'warn'];
    const first = spawn(process.execPath, [CLI, ...args, '--max-rows-per-second', '10000'], { stdio: 'ignore' });
    // Kill once a good part of the input is in the store.
    for (;;) {
      const n = (await storeDigest('d-')).count;
      if (n > drop.rows / 4) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const exited = once(first, 'exit');
    first.kill('SIGKILL');
    await exited;
    const partial = (await storeDigest('d-')).count;
    expect(partial).toBeLessThan(drop.rows);

    const second = await runCli(args);
    expect(second.code, second.stderr).toBe(0);
    const report = JSON.parse(second.stdout);
    expect(report.rowsIngested).toBe(drop.rows);
    const stored = await storeDigest('d-');
    expect(stored.count).toBe(drop.rows);
    expect(stored.toHex()).toBe(drop.digest.toHex());

    // Every write takes the next etag of its partition and nothing else writes meanwhile, so a
    // partition's etag span counts its writes: writes beyond one per row were re-sends.
    const spans = new Map<number, { min: number; max: number }>();
    const map = await stack.client.map();
    for await (const batch of stack.client.scanAll(Buffer.from('d-'), Buffer.from('d.'))) {
      for (const e of batch) {
        const p = map.lookup(e.key).id;
        const span = spans.get(p) ?? { min: Infinity, max: 0 };
        spans.set(p, { min: Math.min(span.min, e.etag), max: Math.max(span.max, e.etag) });
      }
    }
    const writes = [...spans.values()].reduce((sum, s) => sum + s.max - s.min + 1, 0);
    const resent = writes - drop.rows;
    // At most what was in flight when the last checkpoint was taken: 2 files × 4 calls × 1000 rows.
    expect(resent).toBeLessThanOrEqual(8000);
  });

  it('a store node restarted mid-ingest: the ingest completes with nothing lost', async () => {
    const drop = await writeSparkDrop(join(stack.dir, 'drop-e'), { files: 2, rowsPerFile: 20_000, rowGroupRows: 2000, prefix: 'e-' });
    const owner = stack.cluster.nodes.find((n) => n.address === stack.cluster.map.lookup(Buffer.from('e-')).node)!;
    expect(owner).toBeDefined();
    const run = ingest(drop.dir, '--value-column', 'payload', '--max-rows-per-second', '8000');
    for (;;) {
      if ((await storeDigest('e-')).count > 2000) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await owner.stop();
    await new Promise((r) => setTimeout(r, 500));
    await owner.start();
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).rowsIngested).toBe(drop.rows);
    const stored = await storeDigest('e-');
    expect(stored.count).toBe(drop.rows);
    expect(stored.toHex()).toBe(drop.digest.toHex());
  });

  it('a file without the key column fails alone with INGEST_KEY_COLUMN_MISSING; the others are ingested', async () => {
    const folder = join(stack.dir, 'drop-f');
    const drop = await writeSparkDrop(folder, { files: 1, rowsPerFile: 300, prefix: 'f-' });
    await writeFile(join(folder, 'part-00007-other-schema.parquet'), toParquet({ user: ['x', 'y'], payload: ['1', '2'] }, 'ZSTD', 10));
    const r = await ingest(folder, '--value-column', 'payload');
    expect(r.code, r.stderr).toBe(2);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ rowsIngested: drop.rows, filesOk: 1, filesFailed: 1 });
    expect(report.failures[0].file).toBe('part-00007-other-schema.parquet');
    expect(report.failures[0].reason).toContain('INGEST_KEY_COLUMN_MISSING');
    expect(report.failures[0].reason).toContain('user');
  });

  it('real files written by other tools go into the store with their key column: rows + rejects = the manifest count', async () => {
    const picks = ['alltypes_tiny_pages.parquet', 'delta_byte_array.parquet', 'int32_with_null_pages.parquet', 'rle-dict-snappy-checksum.parquet', 'lz4_raw_compressed_larger.parquet'];
    const manifest = readManifest();
    for (const name of picks) {
      const entry = manifest.find((e) => e.file.endsWith(`/${name}`))!;
      expect(entry.keyColumn, name).toBeDefined();
      const r = await runCli(['ingest', join(REAL_DATA_DIR, entry.file), '--key-column', entry.keyColumn!, ...stack.cliArgs, '--data-dir', join(stack.dir, 'data'), '--json', '--log-level', 'warn']);
      expect([0, 2], `${name}: ${r.stderr}`).toContain(r.code);
      const report = JSON.parse(r.stdout);
      expect(report.filesFailed, name).toBe(0);
      expect(report.rowsIngested + report.rowsRejected, name).toBe(entry.rows);
      if (entry.keyHasNulls) expect(report.rowsRejected, name).toBeGreaterThan(0);
    }
  }, 120_000);

  it('--max-rejects: beyond the budget the ingest fails (exit 1) and says why', async () => {
    const folder = join(stack.dir, 'drop-g');
    await mkdir(folder);
    const ids = Array.from({ length: 400 }, (_, i) => (i % 4 === 0 ? null : `g-${String(i).padStart(4, '0')}`));
    await writeFile(join(folder, 'part-00000.parquet'), toParquet({ id: ids, payload: ids.map(() => 'v') }, 'SNAPPY', 50));
    await writeFile(join(folder, '_SUCCESS'), '');
    const r = await ingest(folder, '--value-column', 'payload', '--max-rejects', '10');
    expect(r.code, r.stderr).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.failures[0].reason).toContain('INGEST_TOO_MANY_REJECTS');
    expect(report.failures[0].reason).toContain('over --max-rejects 10');
  });
});
