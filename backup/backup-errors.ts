import { errorClass, type CodedErrorOptions } from '../common/index.js';

/**
 * Every code a BackupError can carry and whether repeating the same operation may succeed.
 * Transport failures of a remote target are retryable; everything that describes the target's
 * contents, the URL or the credentials is final.
 */
export const BACKUP_ERROR_CODES = {
  /** A malformed target URL (`file:///DIR`, `az://CONTAINER/PREFIX`) or connection string. */
  BACKUP_INVALID_TARGET: { retryable: false },
  /** No credentials for an `az://` target, or the storage account refused them (HTTP 401/403). */
  BACKUP_ACCESS_DENIED: { retryable: false },
  /** Azure storage could not be reached, timed out, throttled or answered 5xx, after the SDK's retries. */
  BACKUP_TARGET_UNAVAILABLE: { retryable: true },
  /** A local target folder could not be read or written (disk full, permissions, a name clash). */
  BACKUP_TARGET_IO_FAILED: { retryable: false },
  /** A backup id that does not have the form `YYYYMMDDTHHMMSSZ-xxxxxx`. */
  BACKUP_INVALID_ID: { retryable: false },
  /** The backup (or one of its files) is not in the target. */
  BACKUP_NOT_FOUND: { retryable: false },
  /** The backup has no manifest: it never finished (or is still running). */
  BACKUP_INCOMPLETE: { retryable: false },
  /** manifest.json is not JSON or does not match the format. */
  BACKUP_MANIFEST_INVALID: { retryable: false },
  /** manifest.json has a `formatVersion` this build does not know. */
  BACKUP_UNSUPPORTED_VERSION: { retryable: false },
  /** A shard file cannot be decoded as Parquet, or lacks the format's columns. */
  BACKUP_CORRUPT_FILE: { retryable: false },
  /** The shard plan could not be had for now: the metrics server or a store node did not answer, or the map kept changing. */
  BACKUP_PLAN_FAILED: { retryable: true },
  /** No shard plan can be made as asked: a target too small for the store's size, a bad --metrics-url, an answer that is not a valid plan. */
  BACKUP_PLAN_IMPOSSIBLE: { retryable: false },
  /** A snapshot lease expired (or its node restarted) before every shard was written; the backup cannot go on from one moment. */
  BACKUP_SNAPSHOT_LOST: { retryable: false },
  /** At least one shard of the backup failed; the message names them. No manifest was written. */
  BACKUP_SHARD_FAILED: { retryable: false },
  /** `backup verify` found files whose rows, bytes or checksum differ from the manifest, or that cannot be read. */
  BACKUP_VERIFY_FAILED: { retryable: false },
  /** A cron pattern or schedule option that BullMQ refuses, or a schedule name that does not exist. */
  BACKUP_INVALID_SCHEDULE: { retryable: false },
} as const;

export type BackupErrorCode = keyof typeof BACKUP_ERROR_CODES;

/** Where a backup failure happened. Every field is optional. */
export interface BackupErrorContext {
  /** The target URL. */
  target?: string;
  /** The backup id. */
  backupId?: string;
  /** File name relative to the backup's folder (`shard-00003.parquet`, `manifest.json`). */
  file?: string;
  /** Shard index. */
  shard?: number;
  /** Partition id. */
  partition?: number;
  /** Row group of a shard file, 0-based. */
  rowGroup?: number;
  /** Row within the row group, 0-based. */
  row?: number;
}

export type BackupErrorOptions = CodedErrorOptions<BackupErrorContext>;

/** A failure of backup (targets, manifest, shard writing, verification). The code decides retryability. */
export class BackupError extends errorClass<typeof BACKUP_ERROR_CODES, BackupErrorContext>('BackupError', BACKUP_ERROR_CODES) {}
