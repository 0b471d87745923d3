import { errorClass, type CodedErrorOptions } from '../common/index.js';

/**
 * Every code a RestoreError can carry and whether repeating the same operation may succeed. The
 * backup is read-only input: what is wrong with it stays wrong, so only the target being
 * unreachable is worth a retry.
 */
export const RESTORE_ERROR_CODES = {
  /** No backup folder with that id in the target, or the id is malformed. */
  RESTORE_BACKUP_NOT_FOUND: { retryable: false },
  /** The backup folder has no manifest.json: the backup never finished. */
  RESTORE_BACKUP_INCOMPLETE: { retryable: false },
  /** The manifest's formatVersion is not one this version of shardpipe reads. */
  RESTORE_UNSUPPORTED_FORMAT: { retryable: false },
  /** The manifest is not valid JSON or does not follow FORMAT.md. */
  RESTORE_INVALID_MANIFEST: { retryable: false },
  /** A shard file is missing, unreadable, or does not follow FORMAT.md (schema, metadata, key order, range). */
  RESTORE_CORRUPT_SHARD: { retryable: false },
  /** A shard file's rows do not add up to the manifest's row count and checksum. */
  RESTORE_SHARD_CHECKSUM_MISMATCH: { retryable: false },
  /** A shard file's rows do not hash to the manifest's content hash and row count (manifest format 2). */
  RESTORE_SHARD_HASH_MISMATCH: { retryable: false },
  /** The backup target could not be read (network, throttling, server error) after the client's retries. */
  RESTORE_TARGET_UNAVAILABLE: { retryable: true },
  /** A shard could not be copied to the local staging folder (disk full, permissions). */
  RESTORE_STAGING_FAILED: { retryable: false },
  /** A partial restore's selection names a partition the target's map does not have, or a malformed key range. */
  RESTORE_INVALID_SELECTION: { retryable: false },
} as const;

export type RestoreErrorCode = keyof typeof RESTORE_ERROR_CODES;

/** Where a restore failure happened. */
export interface RestoreErrorContext {
  backupId?: string;
  target?: string;
  /** Shard index in the manifest. */
  shard?: number;
  /** Shard file name (relative to the backup folder). */
  file?: string;
  rowGroup?: number;
  row?: number;
  /** RESTORE_SHARD_HASH_MISMATCH: the manifest's content hash and row count, and what the file's rows gave. */
  expectedHash?: string;
  computedHash?: string;
  expectedRows?: number;
  rows?: number;
}

export type RestoreErrorOptions = CodedErrorOptions<RestoreErrorContext>;

/** A failure of restore. The code decides retryability; `context` says where. */
export class RestoreError extends errorClass<typeof RESTORE_ERROR_CODES, RestoreErrorContext>('RestoreError', RESTORE_ERROR_CODES) {}
