import { errorClass } from '../common/index.js';

/** Codes of failures in job handling (queues, Redis, workers). */
export const JOBS_ERROR_CODES = {
  JOBS_REDIS_MISSING: { retryable: false },
  JOBS_REDIS_UNAVAILABLE: { retryable: true },
  JOBS_INVALID_URL: { retryable: false },
  JOBS_REDIS_REFUSED: { retryable: false },
  JOBS_NOT_FOUND: { retryable: false },
  JOBS_FAILED: { retryable: false },
  JOBS_PROCESSOR_ERROR: { retryable: true },
} as const;

export type JobsErrorCode = keyof typeof JOBS_ERROR_CODES;

/** A failure of job handling. The code decides retryability. */
export class JobsError extends errorClass('JobsError', JOBS_ERROR_CODES) {}
