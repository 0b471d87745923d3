export { IngestError, INGEST_ERROR_CODES, isIngestErrorCode } from './ingest-errors.js';
export type { IngestErrorCode, IngestErrorContext, IngestErrorOptions } from './ingest-errors.js';
export { scanDrop, assertFileUnchanged, fingerprintOf, isSideFileName, parseHiveSegment } from './drop-scanner.js';
export type { DropFile, DropFileFormat, DropScan, ScanDropOptions, SkippedFile } from './drop-scanner.js';
export { readFileFooter } from './file-footer.js';
export type { FileFooter, FooterRowGroup } from './file-footer.js';
export { readRecordBatches } from './record-batch-reader.js';
export type { ReadRecordBatchesOptions, RecordBatchChunk } from './record-batch-reader.js';
export { createRowMapper, DEFAULT_MAX_VALUE_BYTES } from './row-mapper.js';
export type { RowMapper, RowMapperOptions, BatchLocation, MappedBatch, Reject } from './row-mapper.js';
export { arrowKeyEncoding, encodeIntKey, describeKeyEncoding } from './key-encoding.js';
export type { KeyEncoding } from './key-encoding.js';
export { RejectsWriter } from './rejects-writer.js';
// The writing half (file → store), built on the reading half above.
export { ingestFile } from './file-ingester.js';
export type { FileCheckpoint, FileTask, FileIngestOptions } from './file-ingester.js';
