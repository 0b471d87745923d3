import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { RangeDigest } from '../../store/index.js';

export interface SparkDropOptions {
  files: number;
  rowsPerFile: number;
  /** Rows per Parquet row group. Default 10,000. */
  rowGroupRows?: number;
  /** Codecs used round-robin per file. Default snappy, zstd, gzip. */
  codecs?: Array<'SNAPPY' | 'ZSTD' | 'GZIP' | 'UNCOMPRESSED'>;
  /** Write the _SUCCESS marker. Default true. */
  success?: boolean;
  /** Key prefix, so drops of one test file do not overlap. Default 'user-'. */
  prefix?: string;
  /**
   * Each file after the first starts this many rows before the previous one ends, so neighbouring
   * files overlap in key range (the overlapping rows are the same in both). Default 0.
   */
  overlapRows?: number;
}

export interface SparkDrop {
  dir: string;
  /** Distinct rows (keys): what the store holds after the ingest. */
  rows: number;
  /** Digest of (id as UTF-8, payload as UTF-8) for every row: what the store must hold with --key-column id --value-column payload. */
  digest: RangeDigest;
}

/**
 * A drop the way Spark writes one: sorted part files (keys ascending across files), `.crc` side
 * files, `_SUCCESS`, a mix of codecs. Columns: id (string key), payload (string), n (int64).
 */
export async function writeSparkDrop(dir: string, options: SparkDropOptions): Promise<SparkDrop> {
  await mkdir(dir, { recursive: true });
  const codecs = options.codecs ?? ['SNAPPY', 'ZSTD', 'GZIP'];
  const digest = new RangeDigest();
  const overlap = options.overlapRows ?? 0;
  if (!Number.isInteger(overlap) || overlap < 0 || overlap >= options.rowsPerFile) throw new RangeError(`overlapRows must be 0–${options.rowsPerFile - 1}, got ${overlap}`);
  let distinct = 0;
  for (let f = 0; f < options.files; f++) {
    const ids: string[] = [];
    const payloads: string[] = [];
    const ns = new BigInt64Array(options.rowsPerFile);
    for (let i = 0, row = f * (options.rowsPerFile - overlap); i < options.rowsPerFile; i++, row++) {
      const id = `${options.prefix ?? 'user-'}${String(row).padStart(9, '0')}`;
      const payload = `payload ${row} `.padEnd(100, 'x');
      ids.push(id);
      payloads.push(payload);
      ns[i] = BigInt(row) * 1_000_003n;
      // A row repeated by the next file's overlap is one entry in the store.
      if (row >= distinct) {
        digest.add(Buffer.from(id), Buffer.from(payload), 0);
        distinct = row + 1;
      }
    }
    const name = `part-${String(f).padStart(5, '0')}-3f1c.c000.${codecs[f % codecs.length]!.toLowerCase()}.parquet`;
    await writeFile(join(dir, name), toParquet({ id: ids, payload: payloads, n: ns }, codecs[f % codecs.length]!, options.rowGroupRows ?? 10_000));
    await writeFile(join(dir, `.${name}.crc`), 'crc');
  }
  if (options.success ?? true) await writeFile(join(dir, '_SUCCESS'), '');
  return { dir, rows: distinct, digest };
}

/** Parquet bytes of the given columns, written by parquet-wasm (arrow-rs). */
export function toParquet(columns: Record<string, unknown>, codec: 'SNAPPY' | 'ZSTD' | 'GZIP' | 'UNCOMPRESSED', rowGroupRows: number): Uint8Array {
  const table = tableFromArrays(columns as Parameters<typeof tableFromArrays>[0]);
  const wasmTable = parquet.Table.fromIPCStream(tableToIPC(table, 'stream'));
  const props = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression[codec]).setMaxRowGroupSize(rowGroupRows).build();
  return parquet.writeParquet(wasmTable, props);
}
