import type { Etcd3 } from 'etcd3';
import type { Logger } from '../common/index.js';
import type { EtcdMapStore, EtcdMovementMarks, EtcdOperationStore, NodeRegistration, OperationKind, OperationRecord, PartitionMap, SyncReport } from '../store/index.js';

/** What one pass of the leading coordinator knows when it advances an operation. */
export interface OperationContext {
  /** The map read at the start of this pass (the CAS of a returned map compares its version). */
  map: PartitionMap;
  /** Live registrations by HOST:PORT. */
  nodes: ReadonlyMap<string, NodeRegistration>;
  /** Every syncing replica's report (progress of movements). */
  syncs: readonly SyncReport[];
  maps: EtcdMapStore;
  operations: EtcdOperationStore;
  /** Drain and throttle marks (`draining/`, `throttle/`); the leading coordinator always passes them. */
  marks?: EtcdMovementMarks;
  /** The coordinator's etcd client, for the keys a runner exchanges with nodes (`prepare/`, `pause/`, …). */
  etcd: Etcd3;
  logger: Logger;
  nowMs: number;
}

/** The outcome of advancing one operation by one step. */
export interface OperationAdvance {
  /** The map this step needs (version + 1); written by CAS before `record` is. */
  map?: PartitionMap;
  /** The record after the step (progress, step states, final state); written by CAS on the record. */
  record: OperationRecord;
  /**
   * A back-off: advance this operation again no sooner than this many ms from now. The coordinator
   * skips it until then and runs a pass when it is due; a runner never sleeps inside a pass, which
   * would hold up membership changes and every other operation.
   */
  retryAfterMs?: number;
}

/**
 * Carries out the operations of some kinds. `advance` must be idempotent and read its progress
 * from the map, not from the record alone: a coordinator killed after writing the map but before
 * writing the record runs the same step again, and must find it done in the map.
 */
export interface OperationRunner {
  readonly kinds: readonly OperationKind[];
  /** etcd key prefixes (below the cluster prefix, e.g. `paused/`) whose changes start a pass: the nodes' answers to the runner. */
  readonly watchPrefixes?: readonly string[];
  /** One step of `op` (not in a final state), or undefined while there is nothing to do (a sync copying, say). */
  advance(op: OperationRecord, ctx: OperationContext): Promise<OperationAdvance | undefined>;
}
