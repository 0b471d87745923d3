import { ShardpipeError, type ShardpipeErrorOptions } from '../common/index.js';

/** Codes of failures in job handling (queues, Redis, workers). */
export const JOBS_ERROR_CODES = {
  JOBS_REDIS_MISSING: { retryable: false },
  JOBS_REDIS_UNAVAILABLE: { retryable: true },
  JOBS_INVALID_URL: { retryable: false },
  JOBS_REDIS_REFUSED: { retryable: false },
  JOBS_NOT_FOUND: { retryable: false },
  JOBS_FAILED: { retryable: false },
} as const;

export type JobsErrorCode = keyof typeof JOBS_ERROR_CODES;

export class JobsError extends ShardpipeError {
  override readonly code: JobsErrorCode;

  constructor(code: JobsErrorCode, message: string, options: Omit<ShardpipeErrorOptions, 'retryable'> = {}) {
    super(code, message, { ...options, retryable: JOBS_ERROR_CODES[code].retryable });
    this.name = 'JobsError';
    this.code = code;
  }
}
