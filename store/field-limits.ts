/**
 * The documented range of every field of every Store RPC request (README "Field ranges"). The
 * service checks each request against this table before it reaches the node, so nothing outside
 * these ranges is ever written; a unit test keeps the table covering every field of store.proto.
 *
 * Every integer range lies inside JavaScript's exact integers (≤ 2^53 − 1): whatever the store
 * accepts it can also report, and a client decoding 64-bit fields as numbers never fails.
 */

/** Latest time the store accepts or reports, Unix ms: 9999-12-31T23:59:59.999Z (a 4-digit-year ISO date). */
export const MAX_TIME_MS = 253_402_300_799_999;
/** Longest time to live of a put: 100 years of 365 days, in ms. */
export const MAX_TTL_MS = 36_500 * 86_400_000;
/** Largest etag the store assigns, reports, or compares against (2^53 − 1). */
export const MAX_ETAG = Number.MAX_SAFE_INTEGER;
/**
 * Largest etag a BulkInsert row may keep (2^52). A partition's etag sequence moves past kept etags,
 * so this leaves at least 2^52 fresh etags for later writes: one row can never exhaust a partition.
 */
export const MAX_KEPT_ETAG = 2 ** 52;
/** Largest partition map version (2^53 − 1). */
export const MAX_MAP_VERSION = Number.MAX_SAFE_INTEGER;
/** How far one SetPartitionMap may move a node's map version forward without `force`. */
export const MAX_MAP_VERSION_STEP = 1000;
/** Most replicas a chain may have (and the largest replication factor a map may ask for). */
export const MAX_CHAIN_REPLICAS = 16;
/** Snapshot leases, ms: 1 s – 24 h. */
export const MIN_LEASE_MS = 1000;
export const MAX_LEASE_MS = 24 * 60 * 60 * 1000;
/** SplitKeys pieces. */
export const MIN_SPLIT_PARTS = 2;
export const MAX_SPLIT_PARTS = 1000;
/** Entries per Scan batch or ScanPage page (0 = the server default). */
export const MAX_SCAN_BATCH = 10_000;
/** Longest snapshot id, in bytes (the node hands out ids of about 28). */
export const MAX_SNAPSHOT_ID_BYTES = 128;
/** Longest node address HOST:PORT, in bytes (a 253-byte DNS name, brackets, port). */
export const MAX_NODE_ADDRESS_BYTES = 300;
/** Most partitions in a map, partition ids or snapshot ids in one request. */
export const MAX_LIST_ITEMS = 65_536;
/** Most rows in one BulkInsert (the batch is also bounded by bytes, --max-batch-bytes). */
export const MAX_BULK_ROWS = 1_000_000;
/** Most point operations in one Multi (the thick client also bounds a Multi's key + value bytes, MULTI_MAX_BYTES). */
export const MAX_MULTI_OPS = 1000;
/** Most writes one Forward call carries (group commit per hop: the request and its `more`). */
export const MAX_FORWARD_BATCH = 256;
/**
 * Key + value bytes the thick client puts into one Multi; a single op at least this large goes as
 * its own plain call. Any Multi is also bounded by the node's receive limit (--max-batch-bytes + 1 MiB).
 */
export const MULTI_MAX_BYTES = 1024 * 1024;
/** Most JSON Pointers in one partial get (GetRequest.fields). */
export const MAX_FIELDS = 100;
/** Longest JSON Pointer of a partial get, in bytes. */
export const MAX_POINTER_BYTES = 1024;
/** Most operations in one JSON Patch. */
export const MAX_PATCH_OPS = 1000;
/** Longest SubmitOperationRequest.args_json, bytes (a set-replicas over every partition of a large map fits). */
export const MAX_OPERATION_ARGS_BYTES = 1024 * 1024;
/** Most movements one operation may ask for at once (`--max-movements`). */
export const MAX_OPERATION_MOVEMENTS = 64;
/** Longest pause one step may ask for (`--max-pause`), ms: 10 minutes. */
export const MAX_OPERATION_PAUSE_MS = 600_000;
/** Longest `requestedBy` a record keeps, characters. */
export const MAX_REQUESTED_BY_CHARS = 200;
/** Longest operation id accepted from outside. */
export const MAX_OPERATION_ID_CHARS = 64;
const UINT32_MAX = 0xffff_ffff;

/** Node settings some ranges depend on. */
export interface FieldLimitContext {
  maxKeyBytes: number;
  maxValueBytes: number;
}

/** The range of one field. Lists carry `maxItems` and an element range. */
export type FieldLimit =
  | { kind: 'int'; min: number; max: number; unit?: string; note?: string }
  | { kind: 'bool' }
  /** A key: 1 byte – the node's max key bytes. */
  | { kind: 'key' }
  /** A range bound: empty (open) or a valid key. */
  | { kind: 'bound' }
  /** A value: 0 – the node's max value bytes. */
  | { kind: 'value' }
  | { kind: 'string'; maxBytes: number }
  | { kind: 'message'; required: boolean; note?: string }
  /** Bytes laid out as the note says; checked as a whole (a packed batch, store/packed-rows.ts). */
  | { kind: 'bytes'; note: string }
  | { kind: 'list'; maxItems: number; minItems?: number; item: FieldLimit };

const mapVersion: FieldLimit = { kind: 'int', min: 0, max: MAX_MAP_VERSION, note: 'the caller\'s partition map version' };
const expectedEtag: FieldLimit = { kind: 'int', min: 0, max: MAX_ETAG, note: '0 = the key must not exist' };
const bound: FieldLimit = { kind: 'bound' };
const time: FieldLimit = { kind: 'int', min: 0, max: MAX_TIME_MS, unit: 'ms', note: 'Unix ms, 0 = unset' };
const partitionId: FieldLimit = { kind: 'int', min: 0, max: UINT32_MAX };
const partitionIds: FieldLimit = { kind: 'list', maxItems: MAX_LIST_ITEMS, item: partitionId };
const leaseMs: FieldLimit = { kind: 'int', min: MIN_LEASE_MS, max: MAX_LEASE_MS, unit: 'ms' };
const snapshotId: FieldLimit = { kind: 'string', maxBytes: MAX_SNAPSHOT_ID_BYTES };
const snapshotIds: FieldLimit = { kind: 'list', maxItems: MAX_LIST_ITEMS, item: snapshotId };

/** Ranges by message and field, with the wire (proto) names. */
export const FIELD_LIMITS: Readonly<Record<string, Readonly<Record<string, FieldLimit>>>> = {
  GetRequest: {
    map_version: mapVersion,
    key: { kind: 'key' },
    fields: { kind: 'list', maxItems: MAX_FIELDS, item: { kind: 'string', maxBytes: MAX_POINTER_BYTES } },
  },
  PutRequest: {
    map_version: mapVersion,
    key: { kind: 'key' },
    value: { kind: 'value' },
    expected_etag: expectedEtag,
    ttl_ms: { kind: 'int', min: 0, max: MAX_TTL_MS, unit: 'ms', note: '0 = no expiry; now + ttl must not pass 9999-12-31' },
  },
  DeleteRequest: { map_version: mapVersion, key: { kind: 'key' }, expected_etag: expectedEtag },
  ScanRequest: {
    map_version: mapVersion,
    start: bound,
    end: bound,
    limit: { kind: 'int', min: 0, max: UINT32_MAX, note: '0 = no limit' },
    batch_size: { kind: 'int', min: 0, max: MAX_SCAN_BATCH, note: '0 = server default' },
    snapshot_id: snapshotId,
    packed: { kind: 'bool' },
  },
  BulkInsertRequest: {
    map_version: mapVersion,
    rows: { kind: 'list', maxItems: MAX_BULK_ROWS, item: { kind: 'message', required: true } },
    packed: { kind: 'message', required: false, note: 'not together with rows' },
  },
  PackedRows: {
    format: { kind: 'int', min: 1, max: 1, note: 'the packed layout; a node refuses a format it does not know' },
    count: { kind: 'int', min: 0, max: MAX_BULK_ROWS, note: 'rows' },
    lengths: { kind: 'bytes', note: 'count × 8 bytes: u32 LE key length, u32 LE value length; each key and value in the range of BulkRow.key and BulkRow.value' },
    data: { kind: 'bytes', note: 'the keys and values, concatenated: as many bytes as lengths add up to' },
    meta: { kind: 'bytes', note: 'empty, or count × 24 bytes: etag, updated_at_ms, expires_at_ms as u64 LE, each in the range of its BulkRow field' },
  },
  BulkRow: {
    key: { kind: 'key' },
    value: { kind: 'value' },
    etag: { kind: 'int', min: 0, max: MAX_KEPT_ETAG, note: '0 = assign the next one' },
    updated_at_ms: time,
    expires_at_ms: time,
  },
  PartitionStatsRequest: { partition_ids: partitionIds },
  ChecksumRequest: {
    map_version: mapVersion,
    start: bound,
    end: bound,
    include_etag: { kind: 'bool' },
    snapshot_id: snapshotId,
    replica: { kind: 'bool' },
    max_entries: { kind: 'int', min: 0, max: UINT32_MAX, note: '0 = the whole range in one call; ignored with replica' },
  },
  GetPartitionMapRequest: {},
  SetPartitionMapRequest: { map: { kind: 'message', required: true }, force: { kind: 'bool' } },
  PartitionMapProto: {
    version: { kind: 'int', min: 1, max: MAX_MAP_VERSION },
    partitions: { kind: 'list', minItems: 1, maxItems: MAX_LIST_ITEMS, item: { kind: 'message', required: true } },
    replicas: { kind: 'int', min: 0, max: MAX_CHAIN_REPLICAS, note: '0 = 1' },
  },
  PartitionProto: {
    id: partitionId,
    start: bound,
    end: bound,
    node: { kind: 'string', maxBytes: MAX_NODE_ADDRESS_BYTES },
    chain: { kind: 'list', maxItems: MAX_CHAIN_REPLICAS, item: { kind: 'message', required: true } },
    epoch: { kind: 'int', min: 0, max: MAX_MAP_VERSION, note: '0 = 1' },
  },
  ReplicaProto: { node: { kind: 'string', maxBytes: MAX_NODE_ADDRESS_BYTES }, state: { kind: 'int', min: 0, max: 2, note: '1 serving, 2 syncing, 0 = serving' } },
  OpenSnapshotRequest: { map_version: mapVersion, partition_ids: partitionIds, lease_ms: leaseMs },
  RenewSnapshotRequest: { snapshot_ids: snapshotIds, lease_ms: leaseMs },
  ReleaseSnapshotRequest: { snapshot_ids: snapshotIds },
  SplitKeysRequest: { map_version: mapVersion, start: bound, end: bound, parts: { kind: 'int', min: MIN_SPLIT_PARTS, max: MAX_SPLIT_PARTS } },
  MultiRequest: { ops: { kind: 'list', minItems: 1, maxItems: MAX_MULTI_OPS, item: { kind: 'message', required: true } } },
  // Exactly one of the three is set (checked by the service); each is checked as its plain call's request.
  MultiOp: { get: { kind: 'message', required: false }, put: { kind: 'message', required: false }, delete: { kind: 'message', required: false } },
  ForwardRequest: {
    partition_id: partitionId,
    epoch: { kind: 'int', min: 1, max: MAX_MAP_VERSION, note: 'the sender\'s partition epoch; another one than the receiver\'s is STORE_STALE_EPOCH' },
    from: { kind: 'string', maxBytes: MAX_NODE_ADDRESS_BYTES },
    stream_id: { kind: 'string', maxBytes: 64 },
    seq: { kind: 'int', min: 1, max: MAX_ETAG, note: 'the head\'s sequence number of the write' },
    packed: { kind: 'message', required: false, note: 'a bulk write: its accepted rows as they arrived; not together with points' },
    first_etag: { kind: 'int', min: 0, max: MAX_ETAG, note: 'with packed: the first etag the head handed out' },
    now_ms: time,
    points: { kind: 'list', maxItems: MAX_MULTI_OPS, item: { kind: 'message', required: true } },
    head_seq: { kind: 'int', min: 0, max: MAX_ETAG, note: 'the head\'s last sequence number when it sent the write (replica lag); 0 = unknown' },
    more: { kind: 'list', maxItems: MAX_FORWARD_BATCH - 1, item: { kind: 'message', required: true } },
  },
  ForwardWrite: {
    seq: { kind: 'int', min: 1, max: MAX_ETAG, note: 'the head\'s sequence number of the write' },
    packed: { kind: 'message', required: false, note: 'a bulk write: its accepted rows as they arrived; not together with points' },
    first_etag: { kind: 'int', min: 0, max: MAX_ETAG, note: 'with packed: the first etag the head handed out' },
    now_ms: time,
    points: { kind: 'list', maxItems: MAX_MULTI_OPS, item: { kind: 'message', required: true } },
    head_seq: { kind: 'int', min: 0, max: MAX_ETAG, note: 'the head\'s last sequence number when it sent the write (replica lag); 0 = unknown' },
  },
  ForwardPoint: { entry: { kind: 'message', required: true }, deleted: { kind: 'bool' } },
  PatchRequest: {
    map_version: mapVersion,
    key: { kind: 'key' },
    patch: { kind: 'value' },
    mode: { kind: 'int', min: 0, max: 1, note: '0 = JSON Merge Patch, 1 = JSON Patch' },
    if_etag: { kind: 'int', min: 0, max: MAX_ETAG, note: 'absent = unconditional' },
    ttl_ms: { kind: 'int', min: 0, max: MAX_TTL_MS, unit: 'ms', note: 'absent = keep the expiry, 0 = no expiry' },
    return_document: { kind: 'bool' },
  },
  Entry: { key: { kind: 'key' }, value: { kind: 'value' }, etag: { kind: 'int', min: 0, max: MAX_ETAG }, updated_at_ms: time, expires_at_ms: time },
  SubmitOperationRequest: {
    args_json: { kind: 'string', maxBytes: MAX_OPERATION_ARGS_BYTES },
    max_bytes_per_second: { kind: 'int', min: 0, max: Number.MAX_SAFE_INTEGER, unit: 'bytes/s', note: '0 = unthrottled' },
    max_movements: { kind: 'int', min: 0, max: MAX_OPERATION_MOVEMENTS, note: '0 = 2' },
    max_pause_ms: { kind: 'int', min: 0, max: MAX_OPERATION_PAUSE_MS, unit: 'ms', note: '0 = 2000' },
    requested_by: { kind: 'string', maxBytes: MAX_REQUESTED_BY_CHARS },
    id: { kind: 'string', maxBytes: MAX_OPERATION_ID_CHARS },
  },
  ListOperationsRequest: { all: { kind: 'bool' } },
  GetOperationRequest: { id: { kind: 'string', maxBytes: MAX_OPERATION_ID_CHARS } },
  CancelOperationRequest: { id: { kind: 'string', maxBytes: MAX_OPERATION_ID_CHARS }, requested_by: { kind: 'string', maxBytes: MAX_REQUESTED_BY_CHARS } },
  ChangedKeysRequest: {
    map_version: mapVersion,
    snapshot_id: snapshotId,
    after_stream: { kind: 'string', maxBytes: 64 },
    after_seq: { kind: 'int', min: 0, max: MAX_ETAG, note: 'the replica\'s last sequence number in it' },
    keys: { kind: 'list', maxItems: MAX_SCAN_BATCH, item: { kind: 'key' } },
    batch_size: { kind: 'int', min: 0, max: MAX_SCAN_BATCH, note: '0 = server default (1000)' },
  },
};

/** The allowed range of a field as text, for error messages and the README table. */
export function describeLimit(limit: FieldLimit, ctx?: FieldLimitContext): string {
  switch (limit.kind) {
    case 'int':
      return `${limit.min}–${limit.max}${limit.unit ? ` ${limit.unit}` : ''}${limit.note ? ` (${limit.note})` : ''}`;
    case 'bool':
      return 'true or false';
    case 'key':
      return ctx ? `1–${ctx.maxKeyBytes} bytes` : '1 byte to --max-key-bytes (default 4096)';
    case 'bound':
      return ctx ? `0–${ctx.maxKeyBytes} bytes (empty = open end)` : 'empty (open end), or 1 byte to --max-key-bytes (default 4096)';
    case 'value':
      return ctx ? `0–${ctx.maxValueBytes} bytes` : '0 bytes to --max-value-bytes (default 4 MiB)';
    case 'string':
      return `0–${limit.maxBytes} bytes`;
    case 'message':
      return `${limit.required ? 'required' : 'optional'}${limit.note ? ` (${limit.note})` : ''}`;
    case 'bytes':
      return limit.note;
    case 'list':
      return `${limit.minItems ?? 0}–${limit.maxItems} items, each ${describeLimit(limit.item, ctx)}`;
  }
}

/** A string for an error message: at most `maxChars`, with the full length when cut. */
export function truncateForMessage(text: string, maxChars = 64): string {
  return text.length <= maxChars ? text : `${text.slice(0, maxChars)}…(${text.length} chars)`;
}
