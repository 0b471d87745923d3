export { Key, DEFAULT_MAX_KEY_BYTES, displayBytes, successor } from './key.js';
export { PartitionMap, partitionContains, targetReplicas } from './partition-map.js';
export type { Partition, PartitionMapJson, PartitionMapOptions, PartitionSpec, Replica, ReplicaState } from './partition-map.js';
export { connectEtcd, parseEtcdUrl, etcdFailure, isEtcdAuthFailure, DEFAULT_ETCD_CALL_TIMEOUT_MS } from './etcd-connection.js';
export type { EtcdConnectionOptions, EtcdEndpoints } from './etcd-connection.js';
export { EtcdMapStore, ETCD_PREFIX, etcdKeys } from './etcd-map-store.js';
export type { NodeRegistration, ReplicationReport, StoredMap, SyncReport } from './etcd-map-store.js';
export { syncReplica } from './replica-sync.js';
export { SyncThrottle } from './sync-throttle.js';
export type { ReplicaSyncOptions, SyncMode, SyncProgress, SyncResult } from './replica-sync.js';
export { EtcdNodeAgent } from './etcd-node-agent.js';
export { EtcdMovementMarks, EtcdOperationStore, OPERATION_KINDS, OPERATION_STATES, DEFAULT_MAX_MOVEMENTS, DEFAULT_MAX_PAUSE_MS, isFinalOperationState, newOperationId, operationKeys, parseOperationArgs, parseOperationRecord } from './etcd-operations.js';
export type { DrainMark, OperationArgs, OperationKind, ThrottleMark, OperationPause, OperationRecord, OperationState, OperationStep, StoredOperation } from './etcd-operations.js';
export type { EtcdNodeAgentOptions } from './etcd-node-agent.js';
export { PartitionGc, DEFAULT_GC_GRACE_MS, folderBytes, partitionFolder } from './partition-gc.js';
export type { GcFigures, GcPendingPartition, PartitionGcOptions } from './partition-gc.js';
export { readGcReports } from './etcd-gc-reports.js';
export type { GcReport } from './etcd-gc-reports.js';
export { encodeRecord, decodeRecord, isExpired, RECORD_FORMAT_VERSION } from './record.js';
export type { StoredRecord } from './record.js';
export { RangeDigest } from './range-digest.js';
export { CHECKSUM_PAGE_ENTRIES } from './checksum-page.js';
export { PATCH_MODES, parsePointer, projectDocument, patchDocument } from './json-document.js';
export type { PatchMode } from './json-document.js';
export {
  FIELD_LIMITS,
  MAX_ETAG,
  MAX_KEPT_ETAG,
  MAX_MAP_VERSION,
  MAX_MAP_VERSION_STEP,
  MAX_CHAIN_REPLICAS,
  MAX_MULTI_OPS,
  MAX_TIME_MS,
  MAX_TTL_MS,
  MAX_FIELDS,
  MAX_POINTER_BYTES,
  MAX_PATCH_OPS,
  MULTI_MAX_BYTES,
  describeLimit,
} from './field-limits.js';
export type { FieldLimit, FieldLimitContext } from './field-limits.js';
export { STORE_SERVICE_DESC, checkPackedRows, checkRequest, checkedPackedRows, requestDescOf } from './request-check.js';
export { PACKED_ROWS_FORMAT, PackedRows, PackedRowsBuilder } from './packed-rows.js';
export { readVarint, varintSize, writeVarint } from './wire-varint.js';
export type { PackedRowsMessage, RowMeta } from './packed-rows.js';
export { StoreError, STORE_ERROR_CODES } from './store-errors.js';
export type { StoreErrorCode, StoreErrorOptions } from './store-errors.js';
export { PartitionStore, DEFAULT_WRITE_BUFFER_BYTES } from './partition-store.js';
export { ChangeLog, DEFAULT_CHANGE_LOG_RETENTION, MAX_CHANGE_LOG_KEYS, parseChangeLogRetention } from './change-log.js';
export type { ChangeLogRetention, ChangesSince } from './change-log.js';
export { DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES } from './http2-window.js';
export type { BulkRowInput } from './bulk-row.js';
export type { UpdateFn, UpdateOptions } from './partition-store.js';
export type { StoredEntry, WriteTiming, PartitionStoreOptions, PartitionStoreStats, PartitionSnapshot, ReadOptions, PartitionHealth } from './partition-store.js';
export { planShards, planCoverageProblem, MAX_SPLIT_PARTS, DEFAULT_MAX_PLAN_SHARDS } from './shard-planner.js';
export type { PartitionSize, PlanShardsOptions, ShardRange, ShardTarget, SplitKeysFn } from './shard-planner.js';
export { StoreNode } from './store-node.js';
export type { StoreNodeOptions, SnapshotLeaseInfo, PartitionHealthInfo } from './store-node.js';
export { StoreServer, STORE_SERVICE_NAME, DEFAULT_MAX_INFLIGHT_BYTES, partitionHealthService } from './store-server.js';
export type { StoreServerOptions } from './store-server.js';
export { StoreClient } from './store-client.js';
export type { StoreClientOptions, ClientPutOptions, ClientGetOptions, ClientPatchOptions, PatchResult, PutResult, WriteReplyTiming, ScanOptions, NodeStats, SnapshotLease, SnapshotSet } from './store-client.js';
export { StoreRouter } from './store-router.js';
export type { StoreRouterOptions, CallOptions } from './store-router.js';
export { bulkPutAll, bulkPutCheckpointed, DEFAULT_BULK_BATCH_MAX_BYTES, DEFAULT_BULK_BATCH_MAX_ROWS, DEFAULT_BULK_MAX_IN_FLIGHT } from './bulk-writer.js';
export type { BulkChunk, BulkPutOptions, BulkPutResult, BulkPutter, BulkSource, CheckpointedChunk, CheckpointedPutOptions } from './bulk-writer.js';
export { NodeConnection, channelCredentials } from './node-connection.js';
export type { NodeConnectionOptions, StoreCredentials } from './node-connection.js';
export { PointCoalescer } from './point-coalescer.js';
export { POINT_CODECS } from './point-codec.js';
export type { PointCoalescerOptions, PointKind, PointMethods, PointTransport } from './point-coalescer.js';
export { METHOD_ROLES } from './store-auth.js';
export { checkHealth } from './health-check.js';
export { StoreRpcMetrics, StoreNodeMetrics } from './store-metrics.js';
export { InflightBudget } from './inflight-budget.js';
export type { BudgetLease, InflightBudgetOptions } from './inflight-budget.js';
export { MAX_RESPONSE_MESSAGE_BYTES } from './message-limits.js';
export { ChainReplica, type ChainReplicaOptions, type ForwardAck, type ForwardMessage, type ForwardOp, type ForwardTransport, type HopTiming, type PointApplied } from './chain-replica.js';
export { ChainForwarder, forwardWireBytes } from './chain-forwarder.js';
export { OperationAdmin, RECENT_FINISHED_OPERATIONS } from './operation-admin.js';
export type { OperationSubmission, OperationsApi } from './operation-admin.js';
export { OperationClient } from './operation-client.js';
export type { OperationClientOptions } from './operation-client.js';
export { checkOperation, checkOperationId, checkOperationLimits, checkedOperationArgs } from './operation-validation.js';
export type { OperationCheckContext, OperationLimitsInput } from './operation-validation.js';
export { splitEtcdKeys, splitValues } from './etcd-split.js';
export type { MergePrepareRequest, PausedReport, PauseRequest, SplitPreparedReport, SplitPrepareRequest } from './etcd-split.js';
export type { WritePauseRecord } from './write-pause.js';
