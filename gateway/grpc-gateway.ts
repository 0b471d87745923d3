import { once } from 'node:events';
import { fromBinary, toBinary, type DescMessage, type DescService } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { Metadata, Server, ServerInterceptingCall, type ServerInterceptor, type ServiceDefinition, type UntypedServiceImplementation, type sendUnaryData, type ServerUnaryCall, type ServerWritableStream, type ServerReadableStream } from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { checkGatewayCall, type GatewayAuthOptions } from './gateway-auth.js';
import { toGatewayError } from './gateway-errors.js';
import type { GatewayMetrics } from './gateway-metrics.js';
import type { GatewayService } from './gateway-service.js';
import type { RequestLimiter } from './request-limiter.js';
import { decodeBulkPutRequest } from './bulk-put-codec.js';
import { decodeDeleteRequest, decodeGetRequest, decodePutRequest, encodeDeleteResponse, encodeGetResponse, encodePutResponse } from './point-codec.js';
import {
  BulkPutRequestSchema,
  DeleteRequestSchema,
  DeleteResponseSchema,
  GetRequestSchema,
  GetResponseSchema,
  Gateway,
  PutRequestSchema,
  PutResponseSchema,
  file_shardpipe_gateway_v1_gateway,
} from './proto/gen/shardpipe/gateway/v1/gateway_pb.js';

/** The grpc.health.v1 / reflection paths, open without a token (health) or with role read (reflection). */
const HEALTH_PREFIX = '/grpc.health.v1.Health/';

/**
 * A grpc-js server (not bound: connections are injected by the gateway's listener) serving the
 * Gateway service from its protobuf-es descriptor, plus grpc.health.v1 and server reflection
 * (v1 and v1alpha) so generic tools (grpcurl, Postman) discover the API.
 */
export function createGrpcGatewayServer(service: GatewayService, limiter: RequestLimiter, auth: GatewayAuthOptions, maxMessageBytes: number, metrics?: GatewayMetrics): { server: Server; health: HealthImplementation } {
  const server = new Server({ interceptors: [authInterceptor(auth)], 'grpc.max_receive_message_length': maxMessageBytes, 'grpc.max_send_message_length': maxMessageBytes });
  server.addService(serviceDefinition(Gateway), implementation(service, limiter, metrics));
  const health = new HealthImplementation({ '': 'SERVING', [Gateway.typeName]: 'SERVING' });
  health.addToServer(server);
  const fileBytes = Buffer.from(toBinary(FileDescriptorProtoSchema, file_shardpipe_gateway_v1_gateway.proto));
  // @grpc/reflection reads only `fileDescriptorProtos` of a proto-loader package definition.
  const pkg = { [Gateway.typeName]: { fileDescriptorProtos: [fileBytes] } } as unknown as ConstructorParameters<typeof ReflectionService>[0];
  new ReflectionService(pkg).addToServer(server);
  return { server, health };
}

/** A grpc-js service definition whose (de)serializers are protobuf-es's, from the descriptor (also for grpc-js clients). */
export function serviceDefinition(desc: DescService): ServiceDefinition {
  const def: Record<string, ServiceDefinition[string]> = {};
  for (const m of desc.methods) {
    def[m.name] = {
      path: `/${desc.typeName}/${m.name}`,
      requestStream: m.methodKind === 'client_streaming' || m.methodKind === 'bidi_streaming',
      responseStream: m.methodKind === 'server_streaming' || m.methodKind === 'bidi_streaming',
      requestSerialize: serializer(m.input),
      requestDeserialize: requestDecoder(m.input),
      responseSerialize: responseEncoder(m.output),
      responseDeserialize: deserializer(m.output),
      originalName: m.localName,
    };
  }
  return def as ServiceDefinition;
}

/** The hand decoders of the hot requests (bulk-put-codec.ts, point-codec.ts), protobuf-es for the rest. */
function requestDecoder(schema: DescMessage): (bytes: Buffer) => unknown {
  return HAND_DECODERS[schema.typeName] ?? deserializer(schema);
}

/** The hand encoders of the point responses (point-codec.ts), protobuf-es for the rest. */
function responseEncoder(schema: DescMessage): (message: unknown) => Buffer {
  return HAND_ENCODERS[schema.typeName] ?? (serializer(schema) as (message: unknown) => Buffer);
}

const HAND_DECODERS: Record<string, (bytes: Buffer) => unknown> = {
  [BulkPutRequestSchema.typeName]: decodeBulkPutRequest,
  [GetRequestSchema.typeName]: decodeGetRequest,
  [PutRequestSchema.typeName]: decodePutRequest,
  [DeleteRequestSchema.typeName]: decodeDeleteRequest,
};

const HAND_ENCODERS: Record<string, (message: unknown) => Buffer> = {
  [GetResponseSchema.typeName]: encodeGetResponse as (message: unknown) => Buffer,
  [PutResponseSchema.typeName]: encodePutResponse as (message: unknown) => Buffer,
  [DeleteResponseSchema.typeName]: encodeDeleteResponse as (message: unknown) => Buffer,
};

function serializer(schema: DescMessage) {
  return (message: Parameters<typeof toBinary>[1]): Buffer => Buffer.from(toBinary(schema, message));
}

function deserializer(schema: DescMessage) {
  return (bytes: Buffer): unknown => fromBinary(schema, bytes);
}

/* eslint-disable @typescript-eslint/no-explicit-any */
function implementation(service: GatewayService, limiter: RequestLimiter, metrics: GatewayMetrics | undefined): UntypedServiceImplementation {
  const track = metrics === undefined ? <T>(_method: string, call: Promise<T>): Promise<T> => call : <T>(method: string, call: Promise<T>): Promise<T> => metrics.track(method, call);
  const unary =
    (method: string, fn: (req: any, signal: AbortSignal) => Promise<any>) =>
    (call: ServerUnaryCall<any, any>, callback: sendUnaryData<any>): void => {
      const cancel = cancelSignal(call);
      track(method, limiter.run(() => fn(call.request, cancel.signal))).then(
        (response) => {
          cancel.done = true;
          callback(null, response);
        },
        (err: unknown) => {
          cancel.done = true;
          callback(toStatus(err));
        },
      );
    };
  const serverStream =
    (method: string, fn: (req: any, signal: AbortSignal) => AsyncGenerator<any>) =>
    (call: ServerWritableStream<any, any>): void => {
      const { signal } = cancelSignal(call);
      track(
        method,
        limiter.run(async () => {
          for await (const message of fn(call.request, signal)) {
            if (!call.write(message)) await once(call, 'drain', { signal });
          }
        }),
      ).then(
          () => call.end(),
          (err: unknown) => {
            if (!signal.aborted) call.emit('error', toStatus(err));
          },
        );
    };
  return {
    // Without a per-call AbortSignal (see callerBudgetMs).
    Get: (call: ServerUnaryCall<any, any>, callback: sendUnaryData<any>): void => {
      track('Get', limiter.run(() => service.get(call.request, undefined, callerBudgetMs(call)))).then(
        (response) => callback(null, response),
        (err: unknown) => callback(toStatus(err)),
      );
    },
    Put: unary('Put', (req, signal) => service.put(req, signal)),
    Delete: unary('Delete', (req, signal) => service.delete(req, signal)),
    Patch: unary('Patch', (req, signal) => service.patch(req, signal)),
    ScanPage: unary('ScanPage', (req, signal) => service.scanPage(req, signal)),
    Scan: serverStream('Scan', (req, signal) => service.scan(req, signal)),
    ScanAll: serverStream('ScanAll', (req, signal) => service.scanAll(req, signal)),
    BulkPut: (call: ServerReadableStream<any, any>, callback: sendUnaryData<any>): void => {
      const { signal } = cancelSignal(call);
      track('BulkPut', limiter.run(() => service.bulkPut(call, signal))).then(
        (response) => callback(null, response),
        (err: unknown) => callback(toStatus(err)),
      );
    },
  };
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/**
 * A signal aborted when the caller cancels. grpc-js emits 'cancelled' also when the stream of a
 * finished call closes: once `done` is set, that is ignored (an abort per call costs an event
 * dispatch to every listener the store client left on the signal).
 */
function cancelSignal(call: { on(event: 'cancelled', fn: () => void): unknown }): { signal: AbortSignal; done: boolean } {
  const controller = new AbortController();
  const cancel = { signal: controller.signal, done: false };
  call.on('cancelled', () => {
    if (!cancel.done) controller.abort(new Error('the caller cancelled the call'));
  });
  return cancel;
}

/**
 * What is left of the caller's deadline, ms (at least 1), or undefined without one: a Get's store
 * call ends by then. A Get takes no AbortSignal: creating one per call and the store client's
 * listener on it cost ~5 µs of CPU and ~1.4 KB that outlives a scavenge (of the ~4.7 KB a Get keeps
 * alive beyond the no-op's). So a Get whose caller cancels runs to its answer — at once normally,
 * within the retry budget or the caller's deadline while the store is held — and keeps its slot of
 * --max-in-flight until then; its answer is dropped. Writes and streams still stop on a cancel.
 */
function callerBudgetMs(call: { getDeadline(): Date | number }): number | undefined {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? Math.max(1, Math.ceil(at - Date.now())) : undefined;
}

/** A final outcome as a grpc-js status, our code and the current etag in trailing metadata. */
function toStatus(err: unknown): { code: number; details: string; metadata: Metadata } {
  const e = toGatewayError(err);
  const metadata = new Metadata();
  for (const [k, v] of Object.entries(e.metadata)) metadata.set(k, v);
  return { code: e.grpcStatus, details: e.message.slice(0, 2000), metadata };
}

function authInterceptor(auth: GatewayAuthOptions): ServerInterceptor {
  return (method, call) => {
    const intercepting: ServerInterceptingCall = new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, proceed) => {
            if (method.path.startsWith(HEALTH_PREFIX)) return proceed(metadata);
            const name = method.path.slice(method.path.lastIndexOf('/') + 1);
            const header = metadata.get('authorization')[0];
            const refusal = checkGatewayCall(name, typeof header === 'string' ? header : undefined, call.getConnectionInfo().remoteAddress, auth);
            if (refusal === undefined) return proceed(metadata);
            const status = toStatus(refusal);
            intercepting.sendStatus({ code: status.code, details: status.details, metadata: status.metadata });
          },
        }),
    });
    return intercepting;
  };
}
