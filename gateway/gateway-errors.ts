import { status } from '@grpc/grpc-js';
import { errorClass, type CodedErrorOptions } from '../common/index.js';
import { StoreError } from '../store/index.js';

/** Every code a GatewayError can carry, with the gRPC status the caller sees and whether a retry may help. */
export const GATEWAY_ERROR_CODES = {
  /** A request field is out of range or malformed; the message names the field. */
  GATEWAY_INVALID_ARGUMENT: { grpc: status.INVALID_ARGUMENT, retryable: false },
  /** Get of a key without a live value. */
  GATEWAY_NOT_FOUND: { grpc: status.NOT_FOUND, retryable: false },
  /** A compare-and-set found another etag (the current one travels with it). */
  GATEWAY_ETAG_MISMATCH: { grpc: status.ABORTED, retryable: false },
  /** The cluster did not complete the call within the gateway's retry budget. */
  GATEWAY_UNAVAILABLE: { grpc: status.UNAVAILABLE, retryable: true },
  /** The gateway's bound on requests in flight and waiting is full. */
  GATEWAY_OVERLOADED: { grpc: status.RESOURCE_EXHAUSTED, retryable: true },
  /** Some rows of a BulkPut are not written; the message names them. */
  GATEWAY_BULK_PUT_FAILED: { grpc: status.UNAVAILABLE, retryable: true },
  /** The caller gave no token, an unknown one, or (protected mode) is not on loopback. */
  GATEWAY_UNAUTHENTICATED: { grpc: status.UNAUTHENTICATED, retryable: false },
  /** The caller's token has too weak a role for the method. */
  GATEWAY_PERMISSION_DENIED: { grpc: status.PERMISSION_DENIED, retryable: false },
  /** A JSON Patch `test` operation did not hold; nothing was written. */
  GATEWAY_PATCH_TEST_FAILED: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** The call was cancelled by the caller. */
  GATEWAY_CANCELLED: { grpc: status.CANCELLED, retryable: false },
  /** A failure the gateway cannot hide (its own store token refused, a store bug); the message says which. */
  GATEWAY_INTERNAL: { grpc: status.INTERNAL, retryable: false },
} as const;

export type GatewayErrorCode = keyof typeof GATEWAY_ERROR_CODES;

export interface GatewayErrorOptions extends CodedErrorOptions {
  /** The key's current etag (compare-and-set failures); 0 = the key does not exist. */
  currentEtag?: number;
}

/** A final outcome the gateway reports to its caller; the code decides the status. */
export class GatewayError extends errorClass('GatewayError', GATEWAY_ERROR_CODES) {
  readonly currentEtag: number | undefined;

  constructor(code: GatewayErrorCode, message: string, options: GatewayErrorOptions = {}) {
    super(code, message, options);
    this.currentEtag = options.currentEtag;
  }

  get grpcStatus(): status {
    return GATEWAY_ERROR_CODES[this.code].grpc;
  }

  /** Trailing metadata: our code, and the current etag of a failed compare-and-set. */
  get metadata(): Record<string, string> {
    const out: Record<string, string> = { 'shardpipe-error-code': this.code };
    if (this.currentEtag !== undefined) out['shardpipe-current-etag'] = String(this.currentEtag);
    return out;
  }
}

/**
 * The one place a failure of the store (after the thick client's retries) becomes a final outcome
 * for the caller. Routing errors that outlived the retry budget are UNAVAILABLE: the caller never
 * sees a stale map or a node that does not own the key.
 */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  if (!(err instanceof StoreError)) return new GatewayError('GATEWAY_INTERNAL', `internal error: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  switch (err.code) {
    case 'STORE_NOT_FOUND':
      return new GatewayError('GATEWAY_NOT_FOUND', err.message, { cause: err });
    case 'STORE_ETAG_MISMATCH':
      return new GatewayError('GATEWAY_ETAG_MISMATCH', err.message, { cause: err, currentEtag: err.currentEtag ?? 0 });
    case 'STORE_PATCH_TEST_FAILED':
      return new GatewayError('GATEWAY_PATCH_TEST_FAILED', err.message, { cause: err });
    case 'STORE_INVALID_KEY':
    case 'STORE_NOT_JSON':
    case 'STORE_INVALID_ARGUMENT':
    case 'STORE_VALUE_TOO_LARGE':
    case 'STORE_BATCH_TOO_LARGE':
      return new GatewayError('GATEWAY_INVALID_ARGUMENT', err.message, { cause: err });
    case 'STORE_CANCELLED':
      return new GatewayError('GATEWAY_CANCELLED', err.message, { cause: err });
    case 'STORE_UNAUTHENTICATED':
    case 'STORE_PERMISSION_DENIED':
      return new GatewayError('GATEWAY_INTERNAL', `the store refused the gateway's own token (check SHARDPIPE_TOKEN of the gateway): ${err.message}`, { cause: err });
    default:
      return err.retryable
        ? new GatewayError('GATEWAY_UNAVAILABLE', `the store did not complete the call within the gateway's retry budget: ${err.message}`, { cause: err })
        : new GatewayError('GATEWAY_INTERNAL', err.message, { cause: err });
  }
}
