import { once } from 'node:events';
import { status as grpcStatus, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import type { Logger } from '../common/index.js';
import { StoreService, type Entry, type ScanBatch, type ScanRequest, type SnapshotInfo, type StoreServer as StoreHandlers } from './proto/gen/shardpipe/store/v1/store.js';
import type { FieldLimitContext } from './field-limits.js';
import { toGrpcStatus } from './grpc-errors.js';
import { checkRequest, requestDescOf, undecodableRequestError } from './request-check.js';
import { successor } from './key.js';
import { PackedRows } from './packed-rows.js';
import { PartitionMap } from './partition-map.js';
import { SCAN_ENTRY_OVERHEAD_BYTES, type StoredEntry } from './partition-store.js';
import type { SnapshotLeaseInfo, StoreNode } from './store-node.js';
import { StoreError } from './store-errors.js';
import type { StoreRpcMetrics } from './store-metrics.js';

const EMPTY = Buffer.alloc(0);
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
  Object.entries(StoreService).map(([name, method]) => [
    name,
    {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch (cause) {
          return { [UNDECODABLE]: { bytes, cause } } satisfies Undecodable;
        }
      },
    },
  ]),
) as unknown as typeof StoreService;

/**
 * Checks a request against the documented field ranges (store/field-limits.ts) before the node
 * sees it; throws StoreError INVALID_ARGUMENT naming the field, the value and the range.
 */
function admit<Req>(method: string, request: Req, limits: FieldLimitContext): Req {
  const desc = requestDescOf(method);
  const undecodable = (request as Partial<Undecodable>)[UNDECODABLE];
  if (undecodable !== undefined) throw undecodableRequestError(desc, undecodable.bytes, undecodable.cause, limits);
  checkRequest(desc, request as object, limits);
  return request;
}

/** The gRPC handlers of the Store service, translating between messages and StoreNode calls. */
export function createStoreHandlers(node: StoreNode, logger: Logger, metrics?: StoreRpcMetrics): StoreHandlers {
  const limits: FieldLimitContext = { maxKeyBytes: node.maxKeyBytes, maxValueBytes: node.maxValueBytes };
  const unary =
    <Req, Res>(method: string, fn: (request: Req) => Promise<Res>) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
      const done = metrics?.start(method);
      Promise.resolve()
        .then(() => fn(admit(method, call.request, limits)))
        .then(
        (response) => {
          done?.(grpcStatus.OK);
          callback(null, response);
        },
        (err: unknown) => {
          const status = toGrpcStatus(err);
          done?.(status.code);
          logFailure(logger, method, status.code, err);
          callback(status, null);
        },
      );
    };

  return {
    get: unary('Get', async (req) => {
      const record = await node.get(req.mapVersion, req.key);
      return record === undefined ? { found: false } : { found: true, entry: toEntry({ key: req.key, ...record }) };
    }),
    put: unary('Put', async (req) => {
      const record = await node.put(req.mapVersion, req.key, req.value, { expectedEtag: req.expectedEtag, ttlMs: req.ttlMs });
      return { etag: record.etag, updatedAtMs: record.updatedAtMs, expiresAtMs: record.expiresAtMs };
    }),
    delete: unary('Delete', async (req) => ({ deleted: await node.delete(req.mapVersion, req.key, req.expectedEtag) })),
    scanPage: unary('ScanPage', async (req) => {
      const pageSize = req.batchSize > 0 ? req.batchSize : 1000;
      const limit = req.limit > 0 ? Math.min(req.limit, pageSize) : pageSize;
      const range = node.clampRange(req.mapVersion, req.start, req.end);
      const entries: Entry[] = [];
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
          entries.push(toEntry(e));
          bytes += size;
        }
      }
      const full = entries.length >= limit;
      const next = leftOver ?? (full ? successor(entries[entries.length - 1]!.key) : range.next);
      return { entries, last: true, next };
    }),
    scan: (call: ServerWritableStream<ScanRequest, ScanBatch>) => {
      const done = metrics?.start('Scan');
      streamScan(node, call, limits).then(() => done?.(grpcStatus.OK), (err: unknown) => {
        const status = toGrpcStatus(err);
        done?.(call.cancelled ? grpcStatus.CANCELLED : status.code);
        logFailure(logger, 'Scan', status.code, err);
        if (!call.cancelled) call.emit('error', status);
      });
    },
    bulkInsert: unary('BulkInsert', async (req) => {
      const rows = req.packed === undefined ? req.rows : PackedRows.fromMessage(req.packed, 'BulkInsertRequest.packed');
      const result = await node.bulkInsert(req.mapVersion, rows);
      return { accepted: result.accepted, nextKey: result.nextKey ?? EMPTY, timing: result.timing };
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
      };
    }),
    checksum: unary('Checksum', async (req) => {
      const range = node.clampRange(req.mapVersion, req.start, req.end);
      const digest = await node.checksum(range, { includeEtag: req.includeEtag, snapshotId: req.snapshotId });
      return { digest: digest.toHex(), count: digest.count, next: range.next };
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
    getPartitionMap: unary('GetPartitionMap', async () => node.map.toProto()),
    setPartitionMap: unary('SetPartitionMap', async (req) => {
      if (req.map === undefined) throw new StoreError('STORE_INVALID_MAP', 'SetPartitionMap needs a map');
      const installed = await node.setMap(PartitionMap.fromProto(req.map), { force: req.force });
      return { version: node.map.version, installed };
    }),
  };
}

/** Streams one partition's part of the range from one snapshot, waiting for the client to drain. */
async function streamScan(node: StoreNode, call: ServerWritableStream<ScanRequest, ScanBatch>, limits: FieldLimitContext): Promise<void> {
  const req = admit('Scan', call.request, limits);
  const abort = new AbortController();
  call.once('cancelled', () => abort.abort());
  const range = node.clampRange(req.mapVersion, req.start, req.end);
  let sent = 0;
  let lastKey: Buffer | undefined;
  for await (const batch of node.scan(range, { limit: req.limit, batchSize: req.batchSize || 1000, signal: abort.signal, snapshotId: req.snapshotId })) {
    sent += batch.length;
    lastKey = batch[batch.length - 1]!.key;
    if (!call.write({ entries: batch.map(toEntry), last: false, next: EMPTY })) {
      await once(call, 'drain', { signal: abort.signal });
    }
  }
  const limitReached = req.limit > 0 && sent >= req.limit;
  call.write({ entries: [], last: true, next: limitReached && lastKey ? successor(lastKey) : range.next });
  call.end();
}

/** What an entry counts against a scan batch's byte bound (as PartitionStore.scan counts it). */
function scanEntryBytes(e: StoredEntry): number {
  return e.key.length + e.value.length + SCAN_ENTRY_OVERHEAD_BYTES;
}

function toSnapshotInfo(s: SnapshotLeaseInfo): SnapshotInfo {
  return { partitionId: s.partitionId, snapshotId: s.snapshotId, count: s.count, expiresAtMs: s.expiresAtMs };
}

function toEntry(e: StoredEntry): Entry {
  return { key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs };
}

function logFailure(logger: Logger, method: string, code: number | undefined, err: unknown): void {
  // Client mistakes and routine retries are the caller's to report; bugs and I/O failures are ours.
  const ours = !(err instanceof StoreError) || err.code === 'STORE_INTERNAL';
  if (ours) logger.error({ err, method, grpcCode: code }, 'request failed');
  else logger.debug({ method, grpcCode: code, message: (err as Error).message }, 'request refused');
}
