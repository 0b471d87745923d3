import { ShardpipeError, type ShardpipeErrorOptions } from '../common/index.js';

/** Codes of the metrics server's own failures, with their HTTP status. */
export const METRICS_ERROR_CODES = {
  METRICS_INVALID_QUERY: { retryable: false, httpStatus: 400 },
  METRICS_NOT_READY: { retryable: true, httpStatus: 503 },
  METRICS_PLAN_TOO_LARGE: { retryable: false, httpStatus: 400 },
} as const;

export type MetricsErrorCode = keyof typeof METRICS_ERROR_CODES;

export class MetricsError extends ShardpipeError {
  override readonly code: MetricsErrorCode;
  readonly httpStatus: number;

  constructor(code: MetricsErrorCode, message: string, options: Omit<ShardpipeErrorOptions, 'retryable'> = {}) {
    super(code, message, { ...options, retryable: METRICS_ERROR_CODES[code].retryable });
    this.name = 'MetricsError';
    this.code = code;
    this.httpStatus = METRICS_ERROR_CODES[code].httpStatus;
  }
}
