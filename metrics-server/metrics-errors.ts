import { errorClass } from '../common/index.js';

/** Codes of the metrics server's own failures, with their HTTP status. */
export const METRICS_ERROR_CODES = {
  METRICS_INVALID_QUERY: { retryable: false, httpStatus: 400 },
  METRICS_NOT_READY: { retryable: true, httpStatus: 503 },
  METRICS_PLAN_TOO_LARGE: { retryable: false, httpStatus: 400 },
} as const;

export type MetricsErrorCode = keyof typeof METRICS_ERROR_CODES;

/** A failure of the metrics server, answered with the code's HTTP status. */
export class MetricsError extends errorClass('MetricsError', METRICS_ERROR_CODES) {
  readonly httpStatus: number = METRICS_ERROR_CODES[this.code].httpStatus;
}
