import { once } from 'node:events';
import { status as grpcStatus, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import { roleAllows, type Logger, type Role } from '../common/index.js';
import { StoreService, type ChangedKeysBatch, type DeleteResponse, type GetResponse, type PutResponse, type ChangedKeysRequest, type Entry, type ServerTiming, type MultiOp, type MultiRequest, type MultiResponse, type MultiResult, type ReplicaStat, type ScanBatch, type ScanRequest, type SnapshotInfo, type StoreServer as StoreHandlers } from './proto/gen/shardpipe/store/v1/store.js';
import { FIELD_LIMITS, MAX_MULTI_OPS, truncateForMessage, type FieldLimitContext } from './field-limits.js';
import { decodePackedBulkInsert } from './bulk-insert-codec.js';
import { decodeForwardRequest, encodeForwardResponse } from './forward-codec.js';
import { packEntries } from './scan-batch-codec.js';
import { POINT_CODECS } from './point-codec.js';
import { PATCH_MODES } from './json-document.js';
import { forwardAcksToProto, forwardsFromProto } from './chain-forwarder.js';
import { toGrpcStatus } from './grpc-errors.js';
import { checkRequest, checkedPackedRows, requestDescOf, undecodableRequestError } from './request-check.js';
import { successor } from './key.js';
import { PackedRows } from './packed-rows.js';
import { PartitionMap } from './partition-map.js';
import { SCAN_ENTRY_OVERHEAD_BYTES, type StoredEntry } from './partition-store.js';
import { METADATA_GRANTED_ROLE } from './store-auth.js';
import type { PointOp, PointOutcome, PointWriteTiming, SnapshotLeaseInfo, StoreNode } from './store-node.js';
import type { StoredRecord } from './record.js';
import { StoreError } from './store-errors.js';
import type { StoreRpcMetrics } from './store-metrics.js';
import { OperationService } from './operation-service.js';
import { MultiStreams } from './multi-stream.js';
import { recordWriteSpans, requestIdOf, requestIdTrailer, startServerSpan } from './request-tracing.js';

const EMPTY = Buffer.alloc(0);
/** The point RPCs whose server span the unary wrapper makes when the caller sends trace context. */
const POINT_SPAN_METHODS: ReadonlySet<string> = new Set(['Get', 'Put', 'Delete', 'Multi']);
/** As a plain call's status message (grpc-errors.ts). */
const MAX_SLOT_MESSAGE_CHARS = 2000;
const UNDECODABLE = Symbol('undecodable request');

/** A request the generated code could not decode, kept so the handler can say which field is wrong. */
interface Undecodable {
  [UNDECODABLE]: { bytes: Buffer; cause: unknown };
}

/**
 * The Store service definition to serve: the generated one, except that a request the generated
 * code cannot decode (an integer beyond 2^53 − 1, malformed bytes) reaches the handler, which
 * answers INVALID_ARGUMENT naming the field, instead of grpc-js's bare INTERNAL.
 */
export const STORE_SERVICE_DEFINITION: typeof StoreService = Object.fromEntries(
  Object.entries(StoreService).map(([name, method]) => {
    // MultiStream carries Multi's messages.
    const point = POINT_CODECS[(name === 'multiStream' ? 'multi' : name) as keyof typeof POINT_CODECS] as (typeof POINT_CODECS)[keyof typeof POINT_CODECS] | undefined;
    return [
      name,
      {
        ...method,
        requestDeserialize: (bytes: Buffer) => {
          try {
            // A packed batch is decoded into views of the received message, not copies.
            if (name === 'bulkInsert') return decodePackedBulkInsert(bytes) ?? method.requestDeserialize(bytes);
            // A forwarded batch too (store/forward-codec.ts): a replica passes it on as it came.
            if (name === 'forward') return decodeForwardRequest(bytes) ?? method.requestDeserialize(bytes);
            // Point messages by hand (store/point-codec.ts); the generated decoder takes what it does not.
            if (point !== undefined) return point.decodeRequest(bytes) ?? method.requestDeserialize(bytes);
            return method.requestDeserialize(bytes);
          } catch (cause) {
            return { [UNDECODABLE]: { bytes, cause } } satisfies Undecodable;
          }
        },
        ...(point === undefined ? {} : { responseSerialize: point.encodeResponse }),
        ...(name === 'forward' ? { responseSerialize: encodeForwardResponse } : {}),
      },
    ];
  }),
) as unknown as typeof StoreService;

/**
 * Checks a request against the documented field ranges (store/field-limits.ts) before the node
 * sees it; throws StoreError INVALID_ARGUMENT naming the field, the value and the range. Without
 * `checkFields` only decodability is checked (Multi checks each op in its own slot).
 */
function admit<Req>(method: string, request: Req, limits: FieldLimitContext, checkFields = true): Req {
  const desc = requestDescOf(method);
  const undecodable = (request as Partial<Undecodable>)[UNDECODABLE];
  if (undecodable !== undefined) throw undecodableRequestError(desc, undecodable.bytes, undecodable.cause, limits);
  if (checkFields) checkRequest(desc, request as object, limits);
  return request;
}

/** The gRPC handlers of the Store service, translating between messages and StoreNode calls. */
/** `operations`: the operation RPCs; default, as on a static-map node, refusing them (STORE_OPERATIONS_NEED_ETCD). */
/** `streams`: where the node keeps its open MultiStream calls (StoreServer ends them when it stops). */
export function createStoreHandlers(
  node: StoreNode,
  logger: Logger,
  metrics?: StoreRpcMetrics,
  operations: OperationService = new OperationService(undefined, node.address),
  streams: MultiStreams = new MultiStreams(),
): StoreHandlers {
  const limits: FieldLimitContext = { maxKeyBytes: node.maxKeyBytes, maxValueBytes: node.maxValueBytes };
  const unary =
    <Req, Res>(method: string, fn: (request: Req, call: ServerUnaryCall<Req, Res>, requestId: string) => Res | Promise<Res>, checkFields = true) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
      const done = metrics?.start(method);
      const requestId = requestIdOf(call.metadata);
      // Point calls get their server span here (BulkInsert makes its own, with the write phases).
      const span = POINT_SPAN_METHODS.has(method) ? startServerSpan(method, call.metadata, requestId) : undefined;
      const answered = (response: Res): void => {
        done?.(grpcStatus.OK);
        span?.end();
        callback(null, response, requestIdTrailer(requestId));
      };
      const failed = (err: unknown): void => {
        const status = toGrpcStatus(err);
        done?.(status.code);
        if (span !== undefined) {
          span.recordException(err as Error);
          span.end();
        }
        logFailure(logger, method, status.code, err, requestId);
        if (status.metadata) requestIdTrailer(requestId, status.metadata);
        callback(status, null);
      };
      // A handler that answers without waiting (Get) is answered in this turn: grpc-js then sends
      // the reply with the frames it is writing anyway, which costs both sides less than a reply a
      // turn later. Every other handler is async and answers when its promise settles.
      let response: Res | Promise<Res>;
      try {
        response = fn(admit(method, call.request, limits, checkFields), call, requestId);
      } catch (err) {
        failed(err);
        return;
      }
      if (response instanceof Promise) response.then(answered, failed);
      else answered(response);
    };

  return {
    get: unary('Get', (req) => {
      return getResponse(req.key, node.getNow(req.mapVersion, req.key, req.fields));
    }),
    put: unary('Put', async (req) => {
      const timing = newPointTiming();
      const record = await node.put(req.mapVersion, req.key, req.value, { expectedEtag: req.expectedEtag, ttlMs: req.ttlMs }, timing);
      return { etag: record.etag, updatedAtMs: record.updatedAtMs, expiresAtMs: record.expiresAtMs, timing: toServerTiming(timing) };
    }),
    delete: unary('Delete', async (req) => {
      const timing = newPointTiming();
      const deleted = await node.delete(req.mapVersion, req.key, req.expectedEtag, timing);
      return { deleted, timing: toServerTiming(timing) };
    }),
    patch: unary('Patch', async (req) => {
      const timing = newPointTiming();
      const record = await node.patch(req.mapVersion, req.key, req.patch, { mode: PATCH_MODES[req.mode]!, ifEtag: req.ifEtag, ttlMs: req.ttlMs }, timing);
      return { etag: record.etag, updatedAtMs: record.updatedAtMs, expiresAtMs: record.expiresAtMs, document: req.returnDocument ? record.value : EMPTY, timing: toServerTiming(timing) };
    }),
    scanPage: unary('ScanPage', async (req) => {
      const pageSize = req.batchSize > 0 ? req.batchSize : 1000;
      const limit = req.limit > 0 ? Math.min(req.limit, pageSize) : pageSize;
      const range = node.clampRange(req.mapVersion, req.start, req.end);
      const entries: StoredEntry[] = [];
      // A page is bounded by bytes as well as entries; when the bytes run out, the next page starts at the entry left over.
      let bytes = 0;
      let leftOver: Buffer | undefined;
      pages: for await (const batch of node.scan(range, { limit, batchSize: limit, snapshotId: req.snapshotId })) {
        for (const e of batch) {
          const size = scanEntryBytes(e);
          if (entries.length > 0 && bytes + size > node.scanBatchMaxBytes) {
            leftOver = e.key;
            break pages;
          }
          entries.push(e);
          bytes += size;
        }
      }
      const full = entries.length >= limit;
      const next = leftOver ?? (full ? successor(entries[entries.length - 1]!.key) : range.next);
      return req.packed === true ? { entries: [], last: true, next, packed: packEntries(entries) } : { entries: entries.map(toEntry), last: true, next };
    }),
    scan: (call: ServerWritableStream<ScanRequest, ScanBatch>) => {
      const done = metrics?.start('Scan');
      const requestId = requestIdOf(call.metadata);
      const span = startServerSpan('Scan', call.metadata, requestId);
      streamScan(node, call, limits, requestId).then(() => done?.(grpcStatus.OK), (err: unknown) => {
        const status = toGrpcStatus(err);
        done?.(call.cancelled ? grpcStatus.CANCELLED : status.code);
        logFailure(logger, 'Scan', status.code, err, requestId);
        span?.recordException(err as Error);
        if (status.metadata) requestIdTrailer(requestId, status.metadata);
        if (!call.cancelled) call.emit('error', status);
      }).finally(() => span?.end());
    },
    changedKeys: (call: ServerWritableStream<ChangedKeysRequest, ChangedKeysBatch>) => {
      const done = metrics?.start('ChangedKeys');
      const requestId = requestIdOf(call.metadata);
      streamChangedKeys(node, call, limits, requestId).then(() => done?.(grpcStatus.OK), (err: unknown) => {
        const status = toGrpcStatus(err);
        done?.(call.cancelled ? grpcStatus.CANCELLED : status.code);
        logFailure(logger, 'ChangedKeys', status.code, err, requestId);
        if (status.metadata) requestIdTrailer(requestId, status.metadata);
        if (!call.cancelled) call.emit('error', status);
      });
    },
    bulkInsert: unary('BulkInsert', async (req, call, requestId) => {
      const rows = req.packed === undefined ? req.rows : (checkedPackedRows(req.packed) ?? PackedRows.fromMessage(req.packed, 'BulkInsertRequest.packed'));
      const span = startServerSpan('BulkInsert', call.metadata, requestId);
      const startedAt = Date.now();
      try {
        const result = await node.bulkInsert(req.mapVersion, rows);
        if (span !== undefined) recordWriteSpans(span, result.timing, acceptedCounts(rows, result.accepted), startedAt, Date.now());
        const { queueMs, writeMs, fsyncMs, forwardMs = 0, hops = [] } = result.timing;
        return { accepted: result.accepted, nextKey: result.nextKey ?? EMPTY, timing: { queueMs, writeMs, fsyncMs, forwardMs, hops } };
      } catch (err) {
        span?.recordException(err as Error);
        throw err;
      } finally {
        span?.end();
      }
    }),
    partitionStats: unary('PartitionStats', async (req) => {
      const stats = await node.stats(req.partitionIds);
      return {
        mapVersion: node.map.version,
        node: node.address,
        partitions: stats.map(({ partition, stats: s }) => ({
          id: partition.id,
          start: partition.start,
          end: partition.end,
          approxCount: s.count,
          logicalBytes: s.logicalBytes,
          diskBytes: s.diskBytes,
          lastWriteMs: s.lastWriteMs,
          reads: s.reads,
          writes: s.writes,
        })),
        replicas: replicaStats(node),
      };
    }),
    checksum: unary('Checksum', async (req) => {
      if (req.replica) {
        const r = await node.replicaChecksum(req.mapVersion, req.start, req.end, { includeEtag: req.includeEtag });
        return { digest: r.digest.toHex(), count: r.digest.count, next: r.next, replicaState: r.state, epoch: r.partition.epoch, chainStream: r.chain.stream, chainSeq: r.chain.seq };
      }
      const range = node.clampRange(req.mapVersion, req.start, req.end);
      const { digest, next } = await node.checksumPage(range, req.maxEntries, { includeEtag: req.includeEtag, snapshotId: req.snapshotId });
      return { digest: digest.toHex(), count: digest.count, next, replicaState: '', epoch: range.partition.epoch, chainStream: '', chainSeq: 0 };
    }),
    splitKeys: unary('SplitKeys', async (req) => {
      const range = node.clampRange(req.mapVersion, req.start, req.end);
      const split = await node.splitKeys(range, req.parts);
      return { keys: split.keys, approxCount: split.approxCount, next: range.next };
    }),
    openSnapshot: unary('OpenSnapshot', async (req) => {
      const takenAtMs = Date.now();
      const snapshots = await node.openSnapshots(req.mapVersion, req.partitionIds, req.leaseMs);
      return { mapVersion: node.map.version, takenAtMs, snapshots: snapshots.map(toSnapshotInfo) };
    }),
    renewSnapshot: unary('RenewSnapshot', async (req) => ({ snapshots: node.renewSnapshots(req.snapshotIds, req.leaseMs).map(toSnapshotInfo) })),
    releaseSnapshot: unary('ReleaseSnapshot', async (req) => ({ released: await node.releaseSnapshots(req.snapshotIds) })),
    multi: unary(
      'Multi',
      (req, call, requestId) => {
        const results = runMulti(node, req, grantedRole(call.metadata.get(METADATA_GRANTED_ROLE)[0]), limits, { logger, requestId });
        return results instanceof Promise ? results.then((r) => ({ results: r })) : { results };
      },
      false,
    ),
    multiStream: (call: ServerDuplexStream<MultiRequest, MultiResponse>) => {
      // The role is granted once, when the stream opens (store-auth.ts); each put or delete in it is checked against it, as in Multi.
      const role = grantedRole(call.metadata.get(METADATA_GRANTED_ROLE)[0]);
      const log: RequestLog = { logger, requestId: requestIdOf(call.metadata) };
      streams.serve(call, {
        answer: (req) => {
          const done = metrics?.start('MultiStream');
          let results: MultiResult[] | Promise<MultiResult[]>;
          try {
            results = runMulti(node, admit('Multi', req, limits, false), role, limits, log, true);
          } catch (err) {
            done?.(toGrpcStatus(err).code);
            throw err;
          }
          if (!(results instanceof Promise)) {
            done?.(grpcStatus.OK);
            return { results };
          }
          return results.then((r) => (done?.(grpcStatus.OK), { results: r }));
        },
        failAll: (req, err) => {
          const slot = failedSlot(err, log);
          return { results: (req.ops ?? []).map(() => slot) };
        },
      });
    },
    forward: unary('Forward', async (req) => forwardAcksToProto(await node.receiveForwards(forwardsFromProto(req)))),
    getPartitionMap: unary('GetPartitionMap', async () => node.map.toProto()),
    setPartitionMap: unary('SetPartitionMap', async (req) => {
      if (req.map === undefined) throw new StoreError('STORE_INVALID_MAP', 'SetPartitionMap needs a map');
      const installed = await node.setMap(PartitionMap.fromProto(req.map), { force: req.force });
      return { version: node.map.version, installed };
    }),
    submitOperation: unary('SubmitOperation', async (req, call) => operations.submit(req, call.getPeer())),
    listOperations: unary('ListOperations', async (req) => operations.list(req)),
    getOperation: unary('GetOperation', async (req) => operations.get(req)),
    cancelOperation: unary('CancelOperation', async (req, call) => operations.cancel(req, call.getPeer())),
  };
}

/**
 * Answers a Multi slot by slot. The request's shape (op count, exactly one kind per op) is the
 * caller's contract and fails the whole call; everything about one op — its field ranges, its role,
 * routing, CAS, the write itself — is answered in its own slot, as its plain call would be. A Multi
 * of gets only is answered without a promise (StoreNode.multiGetsNow).
 */
function runMulti(node: StoreNode, req: MultiRequest, role: Role | undefined, limits: FieldLimitContext, log: RequestLog, plainNames = false): MultiResult[] | Promise<MultiResult[]> {
  const opsLimit = FIELD_LIMITS.MultiRequest!.ops!;
  if (req.ops.length < 1 || req.ops.length > MAX_MULTI_OPS) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `MultiRequest.ops has ${req.ops.length} items, out of range: allowed 1–${MAX_MULTI_OPS}`, {
      context: { field: 'MultiRequest.ops', value: String(req.ops.length), allowed: opsLimit.kind === 'list' ? `${opsLimit.minItems ?? 0}–${opsLimit.maxItems} items` : undefined },
    });
  }
  const results: Array<MultiResult | undefined> = new Array(req.ops.length);
  const ops: PointOp[] = [];
  const slots: number[] = [];
  const mayWrite = role !== undefined && roleAllows(role, 'write');
  for (let i = 0; i < req.ops.length; i++) {
    const op = req.ops[i]!;
    const kinds = (op.get ? 1 : 0) + (op.put ? 1 : 0) + (op.delete ? 1 : 0);
    if (kinds !== 1) throw new StoreError('STORE_INVALID_ARGUMENT', `MultiRequest.ops[${i}] sets ${kinds} of get, put, delete: exactly one is needed`, { context: { field: `MultiRequest.ops[${i}]` } });
    try {
      const point = admitOp(op, i, limits, plainNames);
      if (point.kind !== 'get' && !mayWrite) throw new StoreError('STORE_PERMISSION_DENIED', `${point.kind === 'put' ? 'Put' : 'Delete'} needs role write; the token has role ${role ?? 'none'}`);
      ops.push(point);
      slots.push(i);
    } catch (err) {
      results[i] = failedSlot(err, log, POINT_METHODS[op.get ? 'get' : op.put ? 'put' : 'delete']);
    }
  }
  const fill = (outcomes: readonly PointOutcome[]): MultiResult[] => {
    outcomes.forEach((outcome, j) => (results[slots[j]!] = answeredSlot(outcome, ops[j]!, log)));
    return results as MultiResult[];
  };
  if (ops.length === 0) return fill([]);
  const now = node.multiGetsNow(ops);
  return now === undefined ? node.multi(ops).then(fill) : fill(now);
}

/**
 * One op of a Multi as a node operation, after the field checks of its plain call's request.
 * `plainNames` (MultiStream, whose every op is a client's own get, put or delete): errors name
 * fields as the plain request's (`PutRequest.ttl_ms`), not by their place in the batch.
 */
function admitOp(op: MultiOp, i: number, limits: FieldLimitContext, plainNames: boolean): PointOp {
  const at = (kind: string): string | undefined => (plainNames ? undefined : `MultiRequest.ops[${i}].${kind}`);
  if (op.get) {
    checkRequest(requestDescOf('Get'), op.get, limits, at('get'));
    return { kind: 'get', mapVersion: op.get.mapVersion, key: op.get.key, fields: op.get.fields };
  }
  if (op.put) {
    checkRequest(requestDescOf('Put'), op.put, limits, at('put'));
    return { kind: 'put', mapVersion: op.put.mapVersion, key: op.put.key, value: op.put.value, options: { expectedEtag: op.put.expectedEtag, ttlMs: op.put.ttlMs } };
  }
  checkRequest(requestDescOf('Delete'), op.delete!, limits, at('delete'));
  return { kind: 'delete', mapVersion: op.delete!.mapVersion, key: op.delete!.key, expectedEtag: op.delete!.expectedEtag };
}

function answeredSlot(outcome: PointOutcome, op: PointOp, log: RequestLog): MultiResult {
  const key = op.key;
  if (!outcome.ok) return failedSlot(outcome.error, log, POINT_METHODS[op.kind]);
  switch (outcome.kind) {
    case 'get':
      return okSlot(getResponse(key, outcome.record), undefined, undefined);
    case 'put':
      return okSlot(undefined, { etag: outcome.record.etag, updatedAtMs: outcome.record.updatedAtMs, expiresAtMs: outcome.record.expiresAtMs, timing: toServerTiming(outcome.timing) }, undefined);
    case 'delete':
      return okSlot(undefined, undefined, { deleted: outcome.deleted, timing: toServerTiming(outcome.timing) });
  }
}

/**
 * A slot's result with every field in one order, as failedSlot and the client's decoder make them:
 * the codec reads the same fields of every slot, which stays fast only while all have one shape.
 */
function okSlot(get: GetResponse | undefined, put: PutResponse | undefined, del: DeleteResponse | undefined): MultiResult {
  return { code: grpcStatus.OK, errorCode: '', message: '', currentEtag: undefined, mapVersion: undefined, get, put, delete: del, retryAfterMs: undefined };
}

/** A Get's answer (of a plain Get or a Multi slot): the record with its key, or not found. */
function getResponse(key: Buffer, record: StoredRecord | undefined): GetResponse {
  return record === undefined
    ? { found: false, entry: undefined }
    : { found: true, entry: { key, value: record.value, etag: record.etag, updatedAtMs: record.updatedAtMs, expiresAtMs: record.expiresAtMs } };
}

/** A failed op's slot: what toGrpcStatus would put in a plain call's status and trailers. */
/** The plain call each kind of op stands for: a failed slot is logged and reported under it (the op that failed, not the batch that carried it). */
const POINT_METHODS = { get: 'Get', put: 'Put', delete: 'Delete' } as const;

/** A failed slot's answer; `method` names the failed op's plain call, or Multi for a request that failed whole. */
function failedSlot(err: unknown, log: RequestLog, method = 'Multi'): MultiResult {
  const status = toGrpcStatus(err);
  logFailure(log.logger, method, status.code, err, log.requestId);
  const error = err instanceof StoreError ? err : undefined;
  return {
    code: status.code ?? grpcStatus.INTERNAL,
    errorCode: error?.code ?? 'STORE_INTERNAL',
    message: truncateForMessage(status.details ?? '', MAX_SLOT_MESSAGE_CHARS),
    currentEtag: error?.currentEtag,
    mapVersion: error?.mapVersion,
    get: undefined,
    put: undefined,
    delete: undefined,
    retryAfterMs: error?.retryAfterMs,
  };
}

function grantedRole(value: unknown): Role | undefined {
  return value === 'read' || value === 'write' || value === 'admin' ? value : undefined;
}

/** Streams one partition's part of the range from one snapshot, waiting for the client to drain. */
async function streamScan(node: StoreNode, call: ServerWritableStream<ScanRequest, ScanBatch>, limits: FieldLimitContext, requestId: string): Promise<void> {
  const req = admit('Scan', call.request, limits);
  const abort = new AbortController();
  call.once('cancelled', () => abort.abort());
  const range = node.clampRange(req.mapVersion, req.start, req.end);
  let sent = 0;
  let lastKey: Buffer | undefined;
  for await (const batch of node.scan(range, { limit: req.limit, batchSize: req.batchSize || 1000, signal: abort.signal, snapshotId: req.snapshotId })) {
    sent += batch.length;
    lastKey = batch[batch.length - 1]!.key;
    const message: ScanBatch = req.packed === true ? { entries: [], last: false, next: EMPTY, packed: packEntries(batch) } : { entries: batch.map(toEntry), last: false, next: EMPTY };
    if (!call.write(message)) {
      await once(call, 'drain', { signal: abort.signal });
    }
  }
  const limitReached = req.limit > 0 && sent >= req.limit;
  call.write({ entries: [], last: true, next: limitReached && lastKey ? successor(lastKey) : range.next });
  call.end(requestIdTrailer(requestId));
}

/** Streams a fast sync's changed keys from one held snapshot (store/changed-keys.ts), waiting for the caller to drain. */
async function streamChangedKeys(node: StoreNode, call: ServerWritableStream<ChangedKeysRequest, ChangedKeysBatch>, limits: FieldLimitContext, requestId: string): Promise<void> {
  const req = admit('ChangedKeys', call.request, limits);
  const abort = new AbortController();
  call.once('cancelled', () => abort.abort());
  const batches = node.changedKeys(req.snapshotId, { after: { stream: req.afterStream, seq: req.afterSeq }, keys: req.keys, batchSize: req.batchSize }, abort.signal);
  for await (const batch of batches) {
    if (!call.write(batch)) await once(call, 'drain', { signal: abort.signal });
  }
  call.end(requestIdTrailer(requestId));
}

/** What an entry counts against a scan batch's byte bound (as PartitionStore.scan counts it). */
function scanEntryBytes(e: StoredEntry): number {
  return e.key.length + e.value.length + SCAN_ENTRY_OVERHEAD_BYTES;
}

function toSnapshotInfo(s: SnapshotLeaseInfo): SnapshotInfo {
  return { partitionId: s.partitionId, snapshotId: s.snapshotId, count: s.count, expiresAtMs: s.expiresAtMs, chainStream: s.chain.stream, chainSeq: s.chain.seq };
}

function toEntry(e: StoredEntry): Entry {
  return { key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs };
}

function logFailure(logger: Logger, method: string, code: number | undefined, err: unknown, requestId: string): void {
  // Client mistakes and routine retries are the caller's to report; bugs and I/O failures are ours.
  const ours = !(err instanceof StoreError) || err.code === 'STORE_INTERNAL';
  if (ours) logger.error({ err, method, grpcCode: code, requestId }, 'request failed');
  else logger.debug({ method, grpcCode: code, requestId, message: (err as Error).message }, 'request refused');
}

/** Where a call's failures are logged, with its request id. */
interface RequestLog {
  logger: Logger;
  requestId: string;
}

/** Rows and key + value bytes of the first `accepted` rows (the part a BulkInsert wrote). */
function acceptedCounts(rows: readonly { key: Uint8Array; value: Uint8Array }[] | PackedRows, accepted: number): { rows: number; bytes: number } {
  let bytes = 0;
  for (let i = 0; i < accepted; i++) bytes += rows instanceof PackedRows ? rows.keyLength(i) + rows.valueLength(i) : rows[i]!.key.length + rows[i]!.value.length;
  return { rows: accepted, bytes };
}

/** PartitionStatsResponse.replicas: every replica the node holds, its place in its chain's write stream and a sync's progress. */
function replicaStats(node: StoreNode): ReplicaStat[] {
  const progress = new Map(node.chainProgress().map((p) => [p.partitionId, p]));
  const epochs = new Map(node.map.replicasOf(node.address).map((p) => [p.id, p.epoch]));
  return node.replicaStates().map((r) => {
    const chain = progress.get(r.partitionId);
    return {
      partitionId: r.partitionId,
      state: r.state,
      epoch: chain?.epoch ?? epochs.get(r.partitionId) ?? 0,
      lastSeq: chain?.lastSeq ?? 0,
      unacked: chain?.unacked ?? 0,
      syncRows: r.sync?.rows ?? 0,
      syncBytes: r.sync?.bytes ?? 0,
      syncTotalRows: r.sync?.totalRows ?? 0,
    };
  });
}

function newPointTiming(): PointWriteTiming {
  return { writeMs: 0, forwardMs: 0, hops: [] };
}

/** A point write's reply timing: the head's write (queued to durable) in write_ms, then the chain's part. */
function toServerTiming(t: PointWriteTiming): ServerTiming {
  return { queueMs: 0, writeMs: t.writeMs, fsyncMs: 0, forwardMs: t.forwardMs, hops: t.hops };
}
