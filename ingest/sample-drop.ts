import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tableFromArrays, tableToIPC } from 'apache-arrow';

/** Options of a generated drop. */
export interface SampleDropOptions {
  /** Rows in all. Required. */
  rows: number;
  /** Part files; rows are spread evenly. Default 8. */
  files?: number;
  /** Rows per Parquet row group. Default 50,000. */
  rowGroupRows?: number;
  /** Key prefix. Default 'user-'. */
  prefix?: string;
  signal?: AbortSignal;
}

export interface SampleDrop {
  dir: string;
  rows: number;
  files: number;
  /** Size of the part files, in bytes. */
  bytes: number;
  /** Keys that cut the drop's key range into `parts` equal pieces: split points for a partition map. */
  splitKeys(parts: number): string[];
}

/**
 * Writes a drop the way a Spark job writes one: sorted snappy part files (keys ascending across
 * files) and `_SUCCESS`. Columns: `id` (string key `<prefix><9-digit row>`), `payload` (a ~100-byte
 * string) and `n` (int64). Used by `shardpipe demo` and the benchmarks.
 */
export async function writeSampleDrop(dir: string, options: SampleDropOptions): Promise<SampleDrop> {
  const files = options.files ?? 8;
  if (!Number.isSafeInteger(options.rows) || options.rows < 1) throw new RangeError(`rows must be a whole number ≥ 1, got ${options.rows}`);
  if (!Number.isSafeInteger(files) || files < 1) throw new RangeError(`files must be a whole number ≥ 1, got ${files}`);
  const prefix = options.prefix ?? 'user-';
  const idOf = (row: number): string => `${prefix}${String(row).padStart(9, '0')}`;
  // parquet-wasm (a 5 MB wasm module) is loaded only by the demo that writes with it, not by every CLI start.
  const parquet = await import('parquet-wasm');
  await mkdir(dir, { recursive: true });
  let bytes = 0;
  for (let f = 0; f < files; f++) {
    options.signal?.throwIfAborted();
    const from = Math.floor((options.rows * f) / files);
    const to = Math.floor((options.rows * (f + 1)) / files);
    const ids: string[] = [];
    const payloads: string[] = [];
    const ns = new BigInt64Array(to - from);
    for (let row = from; row < to; row++) {
      ids.push(idOf(row));
      payloads.push(`payload of row ${row} `.padEnd(100, '.'));
      ns[row - from] = BigInt(row) * 1_000_003n;
    }
    const path = join(dir, `part-${String(f).padStart(5, '0')}-sample.c000.snappy.parquet`);
    await writeFile(path, toParquet(parquet, { id: ids, payload: payloads, n: ns }, options.rowGroupRows ?? 50_000));
    bytes += (await stat(path)).size;
  }
  await writeFile(join(dir, '_SUCCESS'), '');
  return {
    dir,
    rows: options.rows,
    files,
    bytes,
    splitKeys: (parts) => Array.from({ length: parts - 1 }, (_, i) => idOf(Math.floor((options.rows * (i + 1)) / parts))),
  };
}

type ParquetWasm = typeof import('parquet-wasm');

function toParquet(parquet: ParquetWasm, columns: Record<string, unknown>, rowGroupRows: number): Uint8Array {
  const table = tableFromArrays(columns as Parameters<typeof tableFromArrays>[0]);
  const wasmTable = parquet.Table.fromIPCStream(tableToIPC(table, 'stream'));
  const props = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.SNAPPY).setMaxRowGroupSize(rowGroupRows).build();
  return parquet.writeParquet(wasmTable, props);
}
