import { errorClass, type CodedErrorOptions } from '../common/index.js';

/**
 * Every code a FileError can carry. All are final: they describe the file, which a retry reads
 * again unchanged. Callers that read files for a purpose (ingest, backup, restore) translate them
 * into their own codes at their boundary.
 */
export const FILE_ERROR_CODES = {
  /** The file cannot be opened or stat'ed any more (deleted, moved, permissions). */
  FILE_NOT_FOUND: { retryable: false },
  /** The file's size or modification time differs from its descriptor: it was replaced or rewritten. */
  FILE_CHANGED: { retryable: false },
  /** A footer, message, row group or record batch that cannot be decoded, or a decoder that crashed or stalled on it. */
  FILE_CORRUPT: { retryable: false },
  /** A file the reader refuses by its limits (a row group over `maxRowGroupBytes`). */
  FILE_UNSUPPORTED: { retryable: false },
} as const;

export type FileErrorCode = keyof typeof FILE_ERROR_CODES;

/** Where a read failed. */
export interface FileErrorContext {
  /** Path of the file read. */
  file?: string;
  /** Row group (Parquet) or record batch (Arrow) index, 0-based. */
  rowGroup?: number;
}

export type FileErrorOptions = CodedErrorOptions<FileErrorContext>;

/** A failure to read a Parquet or Arrow file. The message names the file and the problem. */
export class FileError extends errorClass<typeof FILE_ERROR_CODES, FileErrorContext>('FileError', FILE_ERROR_CODES) {}
