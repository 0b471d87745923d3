import { writeFile } from 'node:fs/promises';
import { tableToIPC, type Table } from 'apache-arrow';
import * as parquet from 'parquet-wasm';

export type ParquetCodec = 'uncompressed' | 'snappy' | 'gzip' | 'zstd' | 'brotli' | 'lz4_raw';

const CODECS: Record<ParquetCodec, parquet.Compression> = {
  uncompressed: parquet.Compression.UNCOMPRESSED,
  snappy: parquet.Compression.SNAPPY,
  gzip: parquet.Compression.GZIP,
  zstd: parquet.Compression.ZSTD,
  brotli: parquet.Compression.BROTLI,
  lz4_raw: parquet.Compression.LZ4_RAW,
};

/** Writes `table` as Parquet with parquet-wasm (arrow-rs): the given codec and rows per row group. */
export async function writeParquetFile(path: string, table: Table, options: { codec?: ParquetCodec; rowGroupRows?: number } = {}): Promise<void> {
  const props = new parquet.WriterPropertiesBuilder()
    .setCompression(CODECS[options.codec ?? 'snappy'])
    .setMaxRowGroupSize(options.rowGroupRows ?? 1024 * 1024)
    .build();
  const bytes = parquet.writeParquet(parquet.Table.fromIPCStream(tableToIPC(table, 'stream')), props);
  await writeFile(path, bytes);
}

/** Writes `table` as Arrow IPC, file ("ARROW1" + footer) or stream format; one record batch per table batch. */
export async function writeArrowFile(path: string, table: Table, format: 'file' | 'stream'): Promise<void> {
  await writeFile(path, tableToIPC(table, format));
}
