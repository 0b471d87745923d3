import { Metadata, status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { describeCause } from '../common/index.js';
import { truncateForMessage } from './field-limits.js';
import { StoreError, isStoreErrorCode, type StoreErrorCode } from './store-errors.js';

/** Trailing metadata keys that carry our error details across gRPC. */
export const METADATA_ERROR_CODE = 'shardpipe-error-code';
export const METADATA_MAP_VERSION = 'shardpipe-map-version';
export const METADATA_CURRENT_ETAG = 'shardpipe-current-etag';
/** The status message travels in an HTTP/2 trailer; a long one would never arrive (the call times out). */
const MAX_DETAILS_CHARS = 2000;
/** Request metadata: a node whose map is older than this version fetches the map from METADATA_MAP_FROM. */
export const METADATA_CALLER_MAP_VERSION = 'x-shardpipe-map-version';
/** Request metadata: HOST:PORT of a node of the map that has the caller's newer map. */
export const METADATA_MAP_FROM = 'x-shardpipe-map-from';
/** Milliseconds an overloaded node asks the caller to wait before retrying. */
export const METADATA_RETRY_AFTER_MS = 'shardpipe-retry-after-ms';

/**
 * The one place a server-side failure becomes a gRPC status. Anything that is not a StoreError is
 * a bug or an I/O failure: INTERNAL, with the message kept for the operator.
 */
export function toGrpcStatus(err: unknown): Partial<StatusObject> {
  const storeError = err instanceof StoreError ? err : new StoreError('STORE_INTERNAL', `internal error: ${describeCause(err)}`, { cause: err });
  const metadata = new Metadata();
  metadata.set(METADATA_ERROR_CODE, storeError.code);
  if (storeError.mapVersion !== undefined) metadata.set(METADATA_MAP_VERSION, String(storeError.mapVersion));
  if (storeError.currentEtag !== undefined) metadata.set(METADATA_CURRENT_ETAG, String(storeError.currentEtag));
  if (storeError.retryAfterMs !== undefined) metadata.set(METADATA_RETRY_AFTER_MS, String(storeError.retryAfterMs));
  return { code: storeError.grpcStatus, details: truncateForMessage(storeError.message, MAX_DETAILS_CHARS), metadata };
}

const STATUS_FALLBACK: Partial<Record<status, StoreErrorCode>> = {
  [status.INVALID_ARGUMENT]: 'STORE_INVALID_ARGUMENT',
  [status.RESOURCE_EXHAUSTED]: 'STORE_BATCH_TOO_LARGE',
  [status.FAILED_PRECONDITION]: 'STORE_STALE_MAP',
  [status.ABORTED]: 'STORE_ETAG_MISMATCH',
  [status.NOT_FOUND]: 'STORE_NOT_FOUND',
  [status.UNAVAILABLE]: 'STORE_UNAVAILABLE',
  [status.DEADLINE_EXCEEDED]: 'STORE_DEADLINE_EXCEEDED',
  [status.CANCELLED]: 'STORE_CANCELLED',
  [status.INTERNAL]: 'STORE_INTERNAL',
  [status.UNAUTHENTICATED]: 'STORE_UNAUTHENTICATED',
  [status.PERMISSION_DENIED]: 'STORE_PERMISSION_DENIED',
};

/** The one place a failed call becomes a typed StoreError again, on the client. */
export function fromGrpcError(err: unknown, context: Record<string, string | number | undefined> = {}): StoreError {
  if (err instanceof StoreError) return err;
  if (!isServiceError(err)) return new StoreError('STORE_UNKNOWN', describeCause(err), { cause: err, context });
  const sent = err.metadata?.get(METADATA_ERROR_CODE)[0];
  // The node's request id (x-request-id, see request-tracing.ts) finds the call in the node's log.
  const requestId = err.metadata?.get('x-request-id')[0];
  return storeErrorOf(err.code, typeof sent === 'string' ? sent : undefined, err.details || err.message, {
    cause: err,
    context: typeof requestId === 'string' ? { ...context, requestId } : context,
    mapVersion: numberFrom(err.metadata?.get(METADATA_MAP_VERSION)[0]),
    currentEtag: numberFrom(err.metadata?.get(METADATA_CURRENT_ETAG)[0]),
    retryAfterMs: numberFrom(err.metadata?.get(METADATA_RETRY_AFTER_MS)[0]),
  });
}

/**
 * The typed error of a failed operation from its parts: the gRPC status code, our code as sent (an
 * unknown one falls back by status), the message and details. For plain calls' statuses and Multi slots.
 */
export function storeErrorOf(
  grpcCode: number,
  sentCode: string | undefined,
  message: string,
  details: { cause?: unknown; context?: Record<string, string | number | undefined>; mapVersion?: number; currentEtag?: number; retryAfterMs?: number },
): StoreError {
  const code: StoreErrorCode = sentCode !== undefined && isStoreErrorCode(sentCode) ? sentCode : (STATUS_FALLBACK[grpcCode as status] ?? 'STORE_UNKNOWN');
  return new StoreError(code, message, details);
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number';
}

function numberFrom(value: string | Buffer | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : undefined;
}
