import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// prestartParquetDecoders starts the decoder threads before any request (the ingest command does, so
// that a thread's start runs beside the CLI's): a started thread then serves reads, and an idle one
// never keeps the process alive. Run in a child process: the pool is per process.

const FILES = pathToFileURL(resolve(import.meta.dirname, '../../dist/files/index.js')).href;
/** 7,300 rows, one row group. */
const REAL = resolve(import.meta.dirname, '../fixtures/real/parquet-testing/data/alltypes_tiny_pages.parquet');

let tmp: TempDir;
beforeAll(async () => {
  tmp = await makeTempDir('shardpipe-decoder-prestart-');
});
afterAll(async () => {
  await tmp?.remove();
});

/** Runs `script` as an ES module file (not `--input-type=module -e`: the decoder's eval'd worker would inherit it). */
async function runChild(script: string): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const path = tmp.sub(`script-${Math.random().toString(36).slice(2)}.mjs`);
  await writeFile(path, script);
  const started = performance.now();
  const child = spawn(process.execPath, [path], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr, ms: performance.now() - started };
}

describe('prestartParquetDecoders', { timeout: 60_000 }, () => {
  it('the started thread serves the reads that follow, and an idle one lets the process exit at once', async () => {
    const script = `
      import { prestartParquetDecoders, readRecordBatches, statDataFile } from ${JSON.stringify(FILES)};
      prestartParquetDecoders();
      prestartParquetDecoders();
      let rows = 0;
      for await (const { batch } of readRecordBatches(await statDataFile(${JSON.stringify(REAL)}, 'parquet'))) rows += batch.numRows;
      console.log(JSON.stringify({ rows }));
    `;
    const r = await runChild(script);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toEqual({ rows: 7300 });
    // Idle threads are unref'd: the process does not wait for their 30 s idle stop.
    expect(r.ms).toBeLessThan(20_000);
  });

  it('a process that starts them and reads nothing exits on its own', async () => {
    const r = await runChild(`import { prestartParquetDecoders } from ${JSON.stringify(FILES)}; prestartParquetDecoders(); console.log('started');`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('started');
    expect(r.ms).toBeLessThan(20_000);
  });
});
