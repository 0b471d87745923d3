// Parquet and Arrow IPC reading: footers, record batches (Parquet decoded on a shared thread pool),
// the repairs old writers need. Knows nothing of drops, keys or backups; callers translate FileError.
export { FileError, FILE_ERROR_CODES } from './file-errors.js';
export type { FileErrorCode, FileErrorContext, FileErrorOptions } from './file-errors.js';
export { assertUnchanged, statDataFile } from './data-file.js';
export type { DataFile, DataFileFormat } from './data-file.js';
export { readFooter } from './file-footer.js';
export type { Footer, FooterColumn, FooterRowGroup, ReadFooterOptions } from './file-footer.js';
export { readRecordBatches } from './record-batch-reader.js';
export type { ReadRecordBatchesOptions, RecordBatchChunk } from './record-batch-reader.js';
export { configureParquetDecoderPool, prestartParquetDecoders } from './parquet-decoder.js';
export type { ParquetDecoderPoolOptions } from './parquet-decoder.js';
