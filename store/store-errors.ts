import { status } from '@grpc/grpc-js';
import { errorClass, type CodedErrorOptions } from '../common/index.js';

/** Every code a StoreError can carry, with the gRPC status it travels as and whether a retry may help. */
export const STORE_ERROR_CODES = {
  STORE_INVALID_KEY: { grpc: status.INVALID_ARGUMENT, retryable: false },
  STORE_INVALID_ARGUMENT: { grpc: status.INVALID_ARGUMENT, retryable: false },
  STORE_VALUE_TOO_LARGE: { grpc: status.INVALID_ARGUMENT, retryable: false },
  STORE_BATCH_TOO_LARGE: { grpc: status.RESOURCE_EXHAUSTED, retryable: false },
  STORE_INVALID_MAP: { grpc: status.INVALID_ARGUMENT, retryable: false },
  STORE_STALE_MAP: { grpc: status.FAILED_PRECONDITION, retryable: true },
  STORE_NODE_MAP_BEHIND: { grpc: status.FAILED_PRECONDITION, retryable: true },
  STORE_NOT_OWNER: { grpc: status.FAILED_PRECONDITION, retryable: true },
  STORE_MAP_NOT_NEWER: { grpc: status.FAILED_PRECONDITION, retryable: false },
  STORE_MAP_CONFLICT: { grpc: status.FAILED_PRECONDITION, retryable: false },
  STORE_MAP_VERSION_JUMP: { grpc: status.FAILED_PRECONDITION, retryable: false },
  STORE_ETAG_EXHAUSTED: { grpc: status.FAILED_PRECONDITION, retryable: false },
  STORE_ETAG_MISMATCH: { grpc: status.ABORTED, retryable: false },
  STORE_NOT_FOUND: { grpc: status.NOT_FOUND, retryable: false },
  STORE_SNAPSHOT_NOT_FOUND: { grpc: status.NOT_FOUND, retryable: false },
  STORE_UNAVAILABLE: { grpc: status.UNAVAILABLE, retryable: true },
  STORE_PARTITION_UNAVAILABLE: { grpc: status.UNAVAILABLE, retryable: true },
  STORE_OVERLOADED: { grpc: status.RESOURCE_EXHAUSTED, retryable: true },
  STORE_DEADLINE_EXCEEDED: { grpc: status.DEADLINE_EXCEEDED, retryable: true },
  STORE_CANCELLED: { grpc: status.CANCELLED, retryable: false },
  STORE_CLOSED: { grpc: status.UNAVAILABLE, retryable: false },
  STORE_UNAUTHENTICATED: { grpc: status.UNAUTHENTICATED, retryable: false },
  STORE_PERMISSION_DENIED: { grpc: status.PERMISSION_DENIED, retryable: false },
  STORE_INTERNAL: { grpc: status.INTERNAL, retryable: false },
  STORE_UNKNOWN: { grpc: status.UNKNOWN, retryable: false },
  /** A shard plan's target would make more shards than a plan may have (client side; no node is asked). */
  STORE_PLAN_TOO_LARGE: { grpc: status.INVALID_ARGUMENT, retryable: false },
  /** The node lost its etcd session for longer than its lease and serves nothing until it has the current map again. */
  STORE_FENCED: { grpc: status.UNAVAILABLE, retryable: true },
  /** SetPartitionMap on a node whose map comes from etcd. */
  STORE_MAP_MANAGED_BY_ETCD: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** etcd did not answer (client side: node, coordinator, cluster commands). */
  STORE_ETCD_UNAVAILABLE: { grpc: status.UNAVAILABLE, retryable: true },
  /** etcd refused the credentials (user/password in the URL, client certificate). */
  STORE_ETCD_UNAUTHENTICATED: { grpc: status.UNAUTHENTICATED, retryable: false },
  /** cluster init found fewer registered nodes than replicas asked for within its wait. */
  STORE_CLUSTER_NODES_MISSING: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** cluster init found a map in etcd already. */
  STORE_CLUSTER_MAP_EXISTS: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** Another live process holds this node's registration in etcd (two nodes started with one --node). */
  STORE_NODE_DUPLICATE: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** A replica sync's copy did not match the checksum of the snapshot it copied (the sync starts again). */
  STORE_SYNC_MISMATCH: { grpc: status.ABORTED, retryable: true },
  /** cluster repair was asked for a replica it cannot resync (not in the chain, or the chain's only serving replica). */
  STORE_REPAIR_REFUSED: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** A chain forward under another partition epoch (or from a node that is not the receiver's predecessor). */
  STORE_STALE_EPOCH: { grpc: status.FAILED_PRECONDITION, retryable: true },
  /** A chain forward arrived while an earlier one of its stream is missing (or the replica needs a sync). */
  STORE_FORWARD_GAP: { grpc: status.FAILED_PRECONDITION, retryable: true },
  /** A CAS write was applied by a head whose chain changed before the tail acknowledged it: it may or may not have taken effect. */
  STORE_AMBIGUOUS: { grpc: status.UNAVAILABLE, retryable: false },
  /** Partial get or Patch of a value that is not a JSON document (or holds an integer a patch would round). */
  STORE_NOT_JSON: { grpc: status.INVALID_ARGUMENT, retryable: false },
  /** A JSON Patch `test` operation did not hold: nothing was written. */
  STORE_PATCH_TEST_FAILED: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** A data-movement operation (`cluster move`, `drain-node`, …) refused before it was recorded: its arguments do not fit the map or the registrations. */
  STORE_OPERATION_INVALID: { grpc: status.INVALID_ARGUMENT, retryable: false },
  /** No operation record with that id. */
  STORE_OPERATION_NOT_FOUND: { grpc: status.NOT_FOUND, retryable: false },
  /** `cluster cancel` of an operation that finished already (completed, failed or cancelled). */
  STORE_OPERATION_FINISHED: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** An operation RPC on a node whose map is a static file: operations exist only in etcd-managed clusters. */
  STORE_OPERATIONS_NEED_ETCD: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** Client side: the operation a command waited for ended failed or cancelled. */
  STORE_OPERATION_FAILED: { grpc: status.ABORTED, retryable: false },
  /** A data-movement operation was refused before any step (partition missing, `from` not in the chain, `to` in it already or draining, too few nodes). */
  STORE_OPERATION_REFUSED: { grpc: status.FAILED_PRECONDITION, retryable: false },
  /** A step of a data-movement operation failed (its destination left, or its sync kept failing) and was rolled back. */
  STORE_MOVE_FAILED: { grpc: status.ABORTED, retryable: false },
} as const;

export type StoreErrorCode = keyof typeof STORE_ERROR_CODES;

export interface StoreErrorOptions extends CodedErrorOptions {
  /** The partition map version of the node that raised it (stale-map and not-owner errors). */
  mapVersion?: number;
  /** The key's current etag (etag mismatches); 0 = the key does not exist. */
  currentEtag?: number;
  /** How long the node asks the caller to wait before retrying (overload), in ms. */
  retryAfterMs?: number;
}

/** A failure of the store or of a call to it. The code decides the gRPC status and retryability. */
export class StoreError extends errorClass('StoreError', STORE_ERROR_CODES) {
  readonly mapVersion: number | undefined;
  readonly currentEtag: number | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(code: StoreErrorCode, message: string, options: StoreErrorOptions = {}) {
    super(code, message, options);
    this.mapVersion = options.mapVersion;
    this.currentEtag = options.currentEtag;
    this.retryAfterMs = options.retryAfterMs;
  }

  /** The gRPC status code this error is sent as. */
  get grpcStatus(): status {
    return STORE_ERROR_CODES[this.code].grpc;
  }
}

export function isStoreErrorCode(code: string): code is StoreErrorCode {
  return Object.hasOwn(STORE_ERROR_CODES, code);
}
