import { errorClass, type CodedErrorOptions } from '../common/index.js';

/**
 * Every code an IngestError can carry and whether repeating the same operation may succeed. All but
 * INGEST_SOURCE_UNAVAILABLE are final: they describe the input, which a retry reads again unchanged.
 * INGEST_INPUT_CHANGED too — a retry holds the same stale scan; what helps is a new scan (a new
 * submission).
 */
export const INGEST_ERROR_CODES = {
  /** The drop path (folder or file) does not exist or cannot be read. */
  INGEST_SOURCE_NOT_FOUND: { retryable: false },
  /** A folder without the `_SUCCESS` marker while it is required. */
  INGEST_INCOMPLETE_DROP: { retryable: false },
  /** A data file that is neither Parquet nor Arrow IPC, or uses a feature ingest does not read. */
  INGEST_UNSUPPORTED_FORMAT: { retryable: false },
  /** A file, footer, row group or record batch that cannot be decoded. */
  INGEST_CORRUPT_FILE: { retryable: false },
  /** The key column is not a top-level column of the file. */
  INGEST_KEY_COLUMN_MISSING: { retryable: false },
  /** The value column is not a top-level column of the file. */
  INGEST_VALUE_COLUMN_MISSING: { retryable: false },
  /** The key column has a type without a byte encoding (float, bool, nested, decimal...). */
  INGEST_UNSUPPORTED_KEY_TYPE: { retryable: false },
  /** The file's size or modification time (a staged blob's etag) differs from what the scan recorded. */
  INGEST_INPUT_CHANGED: { retryable: false },
  /** More rejected rows than the job allows. */
  INGEST_TOO_MANY_REJECTS: { retryable: false },
  /** Keys that go backwards where the input must be sorted. */
  INGEST_OUT_OF_ORDER: { retryable: false },
  /** A data file of 0 bytes. */
  INGEST_EMPTY_FILE: { retryable: false },
  /** A drop with no data files at all (only `_SUCCESS` or side files), while that is not allowed. */
  INGEST_EMPTY_DROP: { retryable: false },
  /** A malformed remote drop location (`az://CONTAINER/PREFIX`) or connection string. */
  INGEST_INVALID_SOURCE: { retryable: false },
  /** No credentials for a remote drop, or its storage refused them (HTTP 401/403). */
  INGEST_ACCESS_DENIED: { retryable: false },
  /** The remote storage did not answer, or answered with a server error or throttling, after the client's retries. */
  INGEST_SOURCE_UNAVAILABLE: { retryable: true },
  /** A remote file could not be written to the local staging folder (disk full, permissions, a name clash). */
  INGEST_STAGING_FAILED: { retryable: false },
} as const;

export type IngestErrorCode = keyof typeof INGEST_ERROR_CODES;

/** Where an ingest failure happened. Every field is optional; `file` is set whenever one is known. */
export interface IngestErrorContext {
  /** Path of the file (as scanned). */
  file?: string;
  /** Row group (Parquet) or record batch (Arrow) index, 0-based. */
  rowGroup?: number;
  /** Row index within the row group, 0-based. */
  row?: number;
  /** The column concerned (key or value column). */
  column?: string;
  /** The drop folder or file given to the scanner. */
  source?: string;
  /** Where a staged file came from (`az://container/blob@etag`). */
  origin?: string;
}

export type IngestErrorOptions = CodedErrorOptions<IngestErrorContext>;

/** A failure of ingest's reading half. The code decides retryability; `context` says where. */
export class IngestError extends errorClass<typeof INGEST_ERROR_CODES, IngestErrorContext>('IngestError', INGEST_ERROR_CODES) {}

export function isIngestErrorCode(code: string): code is IngestErrorCode {
  return Object.hasOwn(INGEST_ERROR_CODES, code);
}
