import type { ServiceDefinition } from '@grpc/grpc-js';

// The no-op gRPC service of the transport-ceiling benchmark: one unary method, raw bytes both ways.

export const NOOP_METHOD_PATH = '/shardpipe.bench.Noop/Call';
const identity = (b: Buffer): Buffer => b;

export const NOOP_SERVICE: ServiceDefinition = {
  Call: { path: NOOP_METHOD_PATH, requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
};

/** The raw-buffer (de)serializer: no protobuf on either side. */
export const rawBytes = identity;
