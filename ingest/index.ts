export { IngestError, INGEST_ERROR_CODES, isIngestErrorCode } from './ingest-errors.js';
export type { IngestErrorCode, IngestErrorContext, IngestErrorOptions } from './ingest-errors.js';
export { scanDrop, assertFileNotEmpty, assertFileUnchanged, fingerprintOf, isSideFileName, parseHiveSegment } from './drop-scanner.js';
export type { DropFile, DropFileFormat, DropScan, ScanDropOptions, SkippedFile } from './drop-scanner.js';
export { scanAzureDrop } from './azure-drop.js';
export type { AzureDropScan, ScanAzureDropOptions } from './azure-drop.js';
export { assertStagedBlobUnchanged } from './azure-blob-cache.js';
export { readFileFooter } from './file-footer.js';
export type { FileFooter, FooterRowGroup } from './file-footer.js';
// files/' reader with ingest's errors (IngestError codes), and its options as they are.
export { readRecordBatches } from './file-reading.js';
export type { ReadRecordBatchesOptions, RecordBatchChunk } from '../files/index.js';
export { createRowMapper, DEFAULT_MAX_VALUE_BYTES } from './row-mapper.js';
export type { RowMapper, RowMapperOptions, BatchLocation, MappedBatch, PackedMappedBatch, Reject } from './row-mapper.js';
export { arrowKeyEncoding, encodeIntKey, describeKeyEncoding } from './key-encoding.js';
export type { KeyEncoding } from './key-encoding.js';
export { RejectsWriter } from './rejects-writer.js';
export { mergeRejects } from './merge-rejects.js';
// The writing half (file → store), built on the reading half above.
export { ingestFile } from './file-ingester.js';
export type { FileCheckpoint, FileTask, FileIngestOptions } from './file-ingester.js';
export { writeSampleDrop } from './sample-drop.js';
export type { SampleDrop, SampleDropOptions } from './sample-drop.js';
