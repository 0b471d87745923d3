import { Metadata, credentials, type CallOptions, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
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

/** One channel to one store node, with typed promise calls. Errors arrive as StoreError. */
export class NodeConnection {
  readonly address: string;
  private readonly client: GeneratedStoreClientType;

  constructor(address: string) {
    this.address = address;
    // Requests are bounded by each node's own receive limit (it answers RESOURCE_EXHAUSTED, and the
    // bulk writer splits); responses by the nodes' scan batch bound.
    this.client = new GeneratedStoreClient(address, credentials.createInsecure(), {
      'grpc.max_send_message_length': -1,
      'grpc.max_receive_message_length': MAX_RESPONSE_MESSAGE_BYTES,
    });
  }

  unary<K extends UnaryMethodName>(method: K, request: RequestOf<K>, limits: CallLimits): Promise<ResponseOf<K>> {
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
      const call = fn.call(this.client, request, new Metadata(), { deadline: limits.deadline }, (err, response) => {
        limits.signal?.removeEventListener('abort', onAbort);
        if (err) reject(fromGrpcError(err, { node: this.address, method }));
        else resolve(response);
      });
      limits.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The streaming scan, as an async iterable of batches (back-pressure by pulling). */
  async *scan(request: ScanRequest, limits: CallLimits): AsyncGenerator<ScanBatch> {
    const call = this.client.scan(request, new Metadata(), { deadline: limits.deadline });
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
