import { Metadata, credentials, type CallOptions, type ChannelCredentials, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
import type { TlsMaterial } from '../common/index.js';
import {
  StoreClient as GeneratedStoreClient,
  type BulkInsertRequest,
  type BulkInsertResponse,
  type ChecksumRequest,
  type ChecksumResponse,
  type DeleteRequest,
  type DeleteResponse,
  type GetPartitionMapRequest,
  type GetRequest,
  type GetResponse,
  type PartitionMapProto,
  type PartitionStatsRequest,
  type PartitionStatsResponse,
  type PutRequest,
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
  type SplitKeysResponse,
  type SetPartitionMapRequest,
  type SetPartitionMapResponse,
  type StoreClient as GeneratedStoreClientType,
} from './proto/gen/shardpipe/store/v1/store.js';
import { fromGrpcError } from './grpc-errors.js';
import { MAX_RESPONSE_MESSAGE_BYTES } from './message-limits.js';
import { StoreError } from './store-errors.js';

type Callback<Res> = (error: ServiceError | null, response: Res) => void;

/** The unary RPCs with their request and response messages. */
interface UnaryMethods {
  get: [GetRequest, GetResponse];
  put: [PutRequest, PutResponse];
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
}
type UnaryMethodName = keyof UnaryMethods;
type RequestOf<K extends UnaryMethodName> = UnaryMethods[K][0];
type ResponseOf<K extends UnaryMethodName> = UnaryMethods[K][1];

export interface CallLimits {
  /** Absolute deadline (Date.now() based). */
  deadline: number;
  signal?: AbortSignal;
}

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

/** One channel to one store node, with typed promise calls. Errors arrive as StoreError. */
export class NodeConnection {
  readonly address: string;
  private readonly client: GeneratedStoreClientType;
  private readonly token: string | undefined;

  constructor(address: string, creds: StoreCredentials = {}) {
    this.address = address;
    this.token = creds.token;
    // Requests are bounded by each node's own receive limit (it answers RESOURCE_EXHAUSTED, and the
    // bulk writer splits); responses by the nodes' scan batch bound.
    this.client = new GeneratedStoreClient(address, channelCredentials(creds.tls), {
      'grpc.max_send_message_length': -1,
      'grpc.max_receive_message_length': MAX_RESPONSE_MESSAGE_BYTES,
    });
  }

  /** Call metadata: the token, plus `extra` headers of this call. */
  private metadata(extra?: Readonly<Record<string, string>>): Metadata {
    const md = new Metadata();
    if (this.token !== undefined) md.set('authorization', `Bearer ${this.token}`);
    for (const [k, v] of Object.entries(extra ?? {})) md.set(k, v);
    return md;
  }

  /** One unary call; `headers` go along as request metadata. */
  unary<K extends UnaryMethodName>(method: K, request: RequestOf<K>, limits: CallLimits, headers?: Readonly<Record<string, string>>): Promise<ResponseOf<K>> {
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
      const onAbort = (): void => call.cancel();
      const call = fn.call(this.client, request, this.metadata(headers), { deadline: limits.deadline }, (err, response) => {
        limits.signal?.removeEventListener('abort', onAbort);
        if (err) reject(fromGrpcError(err, { node: this.address, method }));
        else resolve(response);
      });
      limits.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The streaming scan, as an async iterable of batches (back-pressure by pulling). */
  async *scan(request: ScanRequest, limits: CallLimits): AsyncGenerator<ScanBatch> {
    const call = this.client.scan(request, this.metadata(), { deadline: limits.deadline });
    const onAbort = (): void => call.cancel();
    limits.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const batch of call as AsyncIterable<ScanBatch>) yield batch;
    } catch (err) {
      throw fromGrpcError(err, { node: this.address, method: 'scan' });
    } finally {
      limits.signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  close(): void {
    this.client.close();
  }
}
