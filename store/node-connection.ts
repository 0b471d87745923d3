import { Metadata, credentials, makeGenericClientConstructor, type CallOptions, type ChannelCredentials, type ClientDuplexStream, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { SpanKind, SpanStatusCode, type Link, type Span } from '@opentelemetry/api';
import { contextOf, inSpan, parseTraceparent, tracer, traceparentOf, tracingActive, type TlsMaterial } from '../common/index.js';
import type { CallLimits } from './call-limits.js';
import { MultiStreamChannel } from './multi-stream-channel.js';
import { PointCoalescer, type PointKind, type PointMethods } from './point-coalescer.js';
import { POINT_CODECS } from './point-codec.js';
import {
  StoreClient as GeneratedStoreClient,
  StoreService,
  type BulkInsertRequest,
  type BulkInsertResponse,
  type ChecksumRequest,
  type ChecksumResponse,
  type DeleteRequest,
  type DeleteResponse,
  type GetPartitionMapRequest,
  type GetRequest,
  type GetResponse,
  type MultiRequest,
  type MultiResponse,
  type ForwardRequest,
  type ForwardResponse,
  type PartitionMapProto,
  type PartitionStatsRequest,
  type PartitionStatsResponse,
  type PutRequest,
  type PatchRequest,
  type PatchResponse,
  type PutResponse,
  type OpenSnapshotRequest,
  type OpenSnapshotResponse,
  type ReleaseSnapshotRequest,
  type ReleaseSnapshotResponse,
  type RenewSnapshotRequest,
  type RenewSnapshotResponse,
  type ScanBatch,
  type ScanRequest,
  type SplitKeysRequest,
  type ChangedKeysBatch,
  type ChangedKeysRequest,
  type SplitKeysResponse,
  type SetPartitionMapRequest,
  type SetPartitionMapResponse,
  type StoreClient as GeneratedStoreClientType,
  type CancelOperationRequest,
  type GetOperationRequest,
  type ListOperationsRequest,
  type ListOperationsResponse,
  type OperationReply,
  type SubmitOperationRequest,
} from './proto/gen/shardpipe/store/v1/store.js';
import { encodeBulkInsert } from './bulk-insert-codec.js';
import { decodeForwardResponse, encodeForwardRequest } from './forward-codec.js';
import { decodePackedScanBatch } from './scan-batch-codec.js';
import { fromGrpcError } from './grpc-errors.js';
import { DEFAULT_FLOW_CONTROL_WINDOW_BYTES, FLOW_CONTROL_WINDOW_OPTION } from './http2-window.js';
import { MAX_RESPONSE_MESSAGE_BYTES } from './message-limits.js';
import { StoreError } from './store-errors.js';

type Callback<Res> = (error: ServiceError | null, response: Res) => void;

/**
 * The generated client, with the hot messages written and read by hand — the same bytes on the wire,
 * less CPU per call: BulkInsert requests (bulk-insert-codec.ts: sized first and written once instead
 * of copied about five times), the point messages Get, Put, Multi (point-codec.ts), the chain's
 * Forward (forward-codec.ts) and packed Scan batches (scan-batch-codec.ts: views instead of copies).
 */
/** Reconnect back-off of a channel to a node (grpc-js doubles-ish it per failed attempt, with jitter). */
const RECONNECT_BACKOFF_INITIAL_MS = 100;
const RECONNECT_BACKOFF_MAX_MS = 1000;

const FastStoreClient = makeGenericClientConstructor(
  Object.fromEntries(
    Object.entries(StoreService).map(([name, method]) => {
      if (name === 'bulkInsert') return [name, { ...method, requestSerialize: encodeBulkInsert }];
      if (name === 'forward') return [name, { ...method, requestSerialize: encodeForwardRequest, responseDeserialize: (bytes: Buffer) => decodeForwardResponse(bytes) ?? method.responseDeserialize(bytes) }];
      if (name === 'scan' || name === 'scanPage') return [name, { ...method, responseDeserialize: (bytes: Buffer) => decodePackedScanBatch(bytes) ?? method.responseDeserialize(bytes) }];
      // MultiStream carries Multi's messages.
      const point = POINT_CODECS[(name === 'multiStream' ? 'multi' : name) as keyof typeof POINT_CODECS] as (typeof POINT_CODECS)[keyof typeof POINT_CODECS] | undefined;
      if (point === undefined) return [name, method];
      return [
        name,
        {
          ...method,
          requestSerialize: point.encodeRequest,
          responseDeserialize: (bytes: Buffer) => point.decodeResponse(bytes) ?? method.responseDeserialize(bytes),
        },
      ];
    }),
  ) as unknown as typeof StoreService,
  'shardpipe.store.v1.Store',
) as unknown as typeof GeneratedStoreClient;

/** The unary RPCs with their request and response messages. */
interface UnaryMethods {
  get: [GetRequest, GetResponse];
  put: [PutRequest, PutResponse];
  patch: [PatchRequest, PatchResponse];
  delete: [DeleteRequest, DeleteResponse];
  scanPage: [ScanRequest, ScanBatch];
  bulkInsert: [BulkInsertRequest, BulkInsertResponse];
  partitionStats: [PartitionStatsRequest, PartitionStatsResponse];
  checksum: [ChecksumRequest, ChecksumResponse];
  getPartitionMap: [GetPartitionMapRequest, PartitionMapProto];
  setPartitionMap: [SetPartitionMapRequest, SetPartitionMapResponse];
  openSnapshot: [OpenSnapshotRequest, OpenSnapshotResponse];
  renewSnapshot: [RenewSnapshotRequest, RenewSnapshotResponse];
  releaseSnapshot: [ReleaseSnapshotRequest, ReleaseSnapshotResponse];
  splitKeys: [SplitKeysRequest, SplitKeysResponse];
  multi: [MultiRequest, MultiResponse];
  forward: [ForwardRequest, ForwardResponse];
  submitOperation: [SubmitOperationRequest, OperationReply];
  listOperations: [ListOperationsRequest, ListOperationsResponse];
  getOperation: [GetOperationRequest, OperationReply];
  cancelOperation: [CancelOperationRequest, OperationReply];
}
type UnaryMethodName = keyof UnaryMethods;
type RequestOf<K extends UnaryMethodName> = UnaryMethods[K][0];
type ResponseOf<K extends UnaryMethodName> = UnaryMethods[K][1];

export type { CallLimits } from './call-limits.js';

/** How a client proves who it is to store nodes, and how it checks them. */
export interface StoreCredentials {
  /** Sent as `authorization: Bearer TOKEN` on every call (SHARDPIPE_TOKEN / --token). Default: none. */
  token?: string;
  /**
   * TLS to the nodes: `ca` is trusted for the nodes' certificates (default: the system's CAs);
   * `cert` + `key` are presented for mutual TLS. Absent: plaintext.
   */
  tls?: TlsMaterial;
}

/** gRPC channel credentials of `tls` (plaintext when absent). */
export function channelCredentials(tls: TlsMaterial | undefined): ChannelCredentials {
  if (tls === undefined) return credentials.createInsecure();
  return credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
}

/** Options of one node's channel. */
export interface NodeConnectionOptions {
  /** Point RPCs in flight on the channel before concurrent Get/Put/Delete are merged into Multi calls (see PointCoalescer). Default 2. */
  pointCallsInFlight?: number;
  /** Gather Get/Put/Delete until the end of the event loop's I/O phase before sending (see PointCoalescerOptions.gatherIo). Default false. */
  gatherPointCalls?: boolean;
  /** Send untraced Get/Put/Delete as messages of the node's MultiStream rather than calls (see PointCoalescer). Default true. */
  pointStreams?: boolean;
}

/** One channel to one store node, with typed promise calls. Errors arrive as StoreError. */
export class NodeConnection {
  readonly address: string;
  private readonly client: GeneratedStoreClientType;
  private readonly token: string | undefined;
  // grpc-js copies a call's metadata before adding to it, so calls without extra headers share one.
  private readonly plainMetadata: Metadata;
  private readonly points: PointCoalescer;
  // Reads and writes on streams of their own: a read is not answered behind a write's fsync.
  private readonly readStream: MultiStreamChannel;
  private readonly writeStream: MultiStreamChannel;

  constructor(address: string, creds: StoreCredentials = {}, options: NodeConnectionOptions = {}) {
    this.address = address;
    this.token = creds.token;
    this.plainMetadata = this.metadata();
    const openStream = (): ClientDuplexStream<MultiRequest, MultiResponse> => this.client.multiStream(this.plainMetadata);
    this.readStream = new MultiStreamChannel(address, openStream);
    this.writeStream = new MultiStreamChannel(address, openStream);
    this.points = new PointCoalescer(
      {
        address,
        plain: (kind, request, limits, traceparent) => this.unary(kind, request as never, limits, traceparent === undefined ? undefined : { traceparent }),
        multi: (request, limits, traceparents) => (traceparents === undefined ? this.unary('multi', request, limits) : this.tracedMulti(request, limits, traceparents)),
        ...(options.pointStreams === false ? {} : { stream: (request: MultiRequest, limits: CallLimits, writes: boolean) => (writes ? this.writeStream : this.readStream).send(request, limits) }),
      },
      { maxInFlight: options.pointCallsInFlight, gatherIo: options.gatherPointCalls },
    );
    // Requests are bounded by each node's own receive limit (it answers RESOURCE_EXHAUSTED, and the
    // bulk writer splits); responses by the nodes' scan batch bound.
    this.client = new FastStoreClient(address, channelCredentials(creds.tls), {
      'grpc.max_send_message_length': -1,
      'grpc.max_receive_message_length': MAX_RESPONSE_MESSAGE_BYTES,
      // Scan pages and Multi answers are not throttled to 64 KiB per round trip (http2-window.ts).
      [FLOW_CONTROL_WINDOW_OPTION]: DEFAULT_FLOW_CONTROL_WINDOW_BYTES,
      // A node that restarts is connected to again within a second. grpc-js's defaults (1 s, ×1.6
      // per failed attempt, up to 120 s) left a channel to a node that had been down 25 s waiting
      // another ~17 s after it was back: a restore after the demo's wipe wrote nothing for seconds.
      'grpc.initial_reconnect_backoff_ms': RECONNECT_BACKOFF_INITIAL_MS,
      'grpc.max_reconnect_backoff_ms': RECONNECT_BACKOFF_MAX_MS,
    });
  }

  /** Call metadata: the token, plus `extra` headers of this call. */
  private metadata(extra?: Readonly<Record<string, string>>): Metadata {
    const md = new Metadata();
    if (this.token !== undefined) md.set('authorization', `Bearer ${this.token}`);
    for (const [k, v] of Object.entries(extra ?? {})) md.set(k, v);
    return md;
  }

  /**
   * A Get, Put or Delete, merged with concurrent ones to this node into one Multi call when
   * others are in flight (see PointCoalescer); answered exactly as the plain call would be.
   */
  point<K extends PointKind>(kind: K, request: PointMethods[K][0], limits: CallLimits): Promise<PointMethods[K][1]> {
    // Off, the op keeps the shared metadata; exporting, it gets a client span whose context goes with its call.
    if (!tracingActive()) return this.points.call(kind, request, limits);
    const method = POINT_METHOD_NAMES[kind];
    return inSpan(method, { 'rpc.system': 'grpc', 'rpc.method': method, 'server.address': this.address }, undefined, (span) => this.points.call(kind, request, limits, traceparentOf(span)));
  }

  /**
   * A Multi carrying ops of callers that trace: its client span is a child of the first op's span
   * and links the others' (a batch serves several traces), and its context goes to the node.
   */
  private tracedMulti(request: MultiRequest, limits: CallLimits, traceparents: ReadonlyArray<string | undefined>): Promise<MultiResponse> {
    const links: Link[] = [];
    for (const tp of traceparents.slice(1)) {
      const linked = parseTraceparent(tp);
      if (linked !== undefined) links.push({ context: linked });
    }
    const attributes = { 'rpc.system': 'grpc', 'rpc.method': 'Multi', 'server.address': this.address, 'shardpipe.ops': request.ops.length };
    const span = tracer().startSpan('Multi', { kind: SpanKind.CLIENT, attributes, links }, contextOf(traceparents[0]));
    return this.unary('multi', request, limits, { traceparent: traceparentOf(span) }).then(
      (response) => {
        span.end();
        return response;
      },
      (err: unknown) => {
        endFailed(span, err);
        throw err;
      },
    );
  }

  /** One unary call; `headers` go along as request metadata. */
  unary<K extends UnaryMethodName>(method: K, request: RequestOf<K>, limits: CallLimits, headers?: Readonly<Record<string, string>>): Promise<ResponseOf<K>> {
    // Exporting, each BulkInsert gets a client span whose context the node joins; otherwise calls keep the shared metadata.
    if (method === 'bulkInsert' && tracingActive() && headers?.traceparent === undefined) {
      const req = request as BulkInsertRequest;
      const attributes = { 'rpc.system': 'grpc', 'rpc.method': 'BulkInsert', 'server.address': this.address, 'shardpipe.rows': req.packed?.count ?? req.rows.length, 'shardpipe.bytes': req.packed?.data.length ?? 0 };
      return inSpan('BulkInsert', attributes, undefined, (span) => this.unary(method, request, limits, { ...headers, traceparent: traceparentOf(span) }));
    }
    return new Promise((resolve, reject) => {
      if (limits.signal?.aborted) {
        reject(new StoreError('STORE_CANCELLED', `${method} to ${this.address} cancelled`, { cause: limits.signal.reason }));
        return;
      }
      const fn = this.client[method] as unknown as (
        req: RequestOf<K>,
        md: Metadata,
        opts: Partial<CallOptions>,
        cb: Callback<ResponseOf<K>>,
      ) => ClientUnaryCall;
      const signal = limits.signal;
      const onAbort = signal && ((): void => call.cancel());
      const call = fn.call(this.client, request, headers === undefined ? this.plainMetadata : this.metadata(headers), { deadline: limits.deadline }, (err, response) => {
        if (onAbort) signal.removeEventListener('abort', onAbort);
        if (err) reject(fromGrpcError(err, { node: this.address, method }));
        else resolve(response);
      });
      if (onAbort) signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The streaming scan, as an async iterable of batches (back-pressure by pulling). */
  async *scan(request: ScanRequest, limits: CallLimits): AsyncGenerator<ScanBatch> {
    const span = tracingActive() ? tracer().startSpan('Scan', { kind: SpanKind.CLIENT, attributes: { 'rpc.system': 'grpc', 'rpc.method': 'Scan', 'server.address': this.address } }) : undefined;
    const call = this.client.scan(request, this.metadata(span && { traceparent: traceparentOf(span) }), { deadline: limits.deadline });
    const onAbort = (): void => call.cancel();
    limits.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const batch of call as AsyncIterable<ScanBatch>) yield batch;
    } catch (err) {
      throw fromGrpcError(err, { node: this.address, method: 'scan' });
    } finally {
      limits.signal?.removeEventListener('abort', onAbort);
      call.cancel();
      span?.end();
    }
  }

  /** A fast sync's ChangedKeys stream (role `replica`: these credentials must hold a replica token when the node has tokens). */
  async *changedKeys(request: ChangedKeysRequest, limits: CallLimits): AsyncGenerator<ChangedKeysBatch> {
    const call = this.client.changedKeys(request, this.plainMetadata, { deadline: limits.deadline });
    const onAbort = (): void => call.cancel();
    limits.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const batch of call as AsyncIterable<ChangedKeysBatch>) yield batch;
    } catch (err) {
      throw fromGrpcError(err, { node: this.address, method: 'changedKeys' });
    } finally {
      limits.signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  close(): void {
    this.readStream.close();
    this.writeStream.close();
    this.client.close();
  }
}

/** The RPC name of each point op, as its spans are named. */
const POINT_METHOD_NAMES: Readonly<Record<PointKind, string>> = { get: 'Get', put: 'Put', delete: 'Delete' };

function endFailed(span: Span, err: unknown): void {
  span.recordException(err as Error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
  span.end();
}
