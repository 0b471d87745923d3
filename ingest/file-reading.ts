import {
  FileError,
  readFooter,
  readRecordBatches as readFileRecordBatches,
  type FileErrorCode,
  type Footer,
  type ReadFooterOptions,
  type ReadRecordBatchesOptions,
  type DataFile,
  type RecordBatchChunk,
} from '../files/index.js';
import { IngestError, type IngestErrorCode } from './ingest-errors.js';

/** files/' codes as ingest has always reported them. */
const INGEST_CODE_OF: Record<FileErrorCode, IngestErrorCode> = {
  FILE_NOT_FOUND: 'INGEST_SOURCE_NOT_FOUND',
  FILE_CHANGED: 'INGEST_INPUT_CHANGED',
  FILE_CORRUPT: 'INGEST_CORRUPT_FILE',
  FILE_UNSUPPORTED: 'INGEST_UNSUPPORTED_FORMAT',
};

/** A FileError as the IngestError ingest's callers expect (same message, cause and context); anything else as it is. */
export function toIngestError(err: unknown): unknown {
  if (!(err instanceof FileError)) return err;
  // What helps against a rewritten file is a new scan of the drop.
  const message = err.code === 'FILE_CHANGED' ? `${err.message}; scan the drop again` : err.message;
  return new IngestError(INGEST_CODE_OF[err.code], message, { cause: err.cause, context: { ...err.context } });
}

/**
 * files/' `readRecordBatches` for a scanned file (a DropFile), failing with IngestError: INGEST_CORRUPT_FILE (with
 * file and row group), INGEST_INPUT_CHANGED, INGEST_SOURCE_NOT_FOUND, INGEST_UNSUPPORTED_FORMAT.
 */
export async function* readRecordBatches(file: DataFile, options: ReadRecordBatchesOptions = {}): AsyncGenerator<RecordBatchChunk> {
  try {
    yield* readFileRecordBatches(file, options);
  } catch (err) {
    throw toIngestError(err);
  }
}

/** files/' `readFooter`, failing with IngestError like `readRecordBatches`. */
export async function readDropFileFooter(file: DataFile, options: ReadFooterOptions = {}): Promise<Footer> {
  try {
    return await readFooter(file, options);
  } catch (err) {
    throw toIngestError(err);
  }
}
