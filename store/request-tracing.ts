import { randomBytes } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import { SpanKind, context, trace, type Span } from '@opentelemetry/api';
import { contextOf, tracer, tracingActive } from '../common/index.js';
import type { WriteTiming } from './partition-store.js';

/**
 * Request metadata naming the call for logs, and the trailing metadata that returns it: the
 * caller's id when it sends a usable one (1–128 printable ASCII characters), else one the node makes.
 */
export const METADATA_REQUEST_ID = 'x-request-id';
/** W3C trace context of the caller's span (request metadata). */
export const METADATA_TRACEPARENT = 'traceparent';

const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;
// A process prefix and a counter: unique enough to match a client error with a log line, and no
// random bytes per call.
const PREFIX = randomBytes(6).toString('hex');
let counter = 0;

/** The call's request id: the caller's (when usable) or a new one. */
export function requestIdOf(metadata: Metadata): string {
  const sent = metadata.get(METADATA_REQUEST_ID)[0];
  return typeof sent === 'string' && REQUEST_ID.test(sent) ? sent : `${PREFIX}-${(++counter).toString(36)}`;
}

/** Trailing metadata carrying the request id (added to `metadata` when given, e.g. an error status's). */
export function requestIdTrailer(requestId: string, metadata: Metadata = new Metadata()): Metadata {
  metadata.set(METADATA_REQUEST_ID, requestId);
  return metadata;
}

/**
 * The node's span of a traced call (BulkInsert, Scan): child of the caller's `traceparent`;
 * undefined when this process does not export or the caller sent none (nothing to join).
 */
export function startServerSpan(method: string, metadata: Metadata, requestId: string): Span | undefined {
  if (!tracingActive()) return undefined;
  const traceparent = metadata.get(METADATA_TRACEPARENT)[0];
  if (typeof traceparent !== 'string') return undefined;
  return tracer().startSpan(`store.${method}`, { kind: SpanKind.SERVER, attributes: { 'rpc.system': 'grpc', 'rpc.method': method, 'shardpipe.request_id': requestId } }, contextOf(traceparent));
}

/**
 * The partition write's phases as children of `parent`, from the timing the partition store
 * measured for the call's write group (queue wait, batch build, write + fsync), laid end to end
 * from `startedAt` to `endedAt` (epoch ms); the write ends at `endedAt`.
 */
export function recordWriteSpans(parent: Span, timing: WriteTiming | undefined, counts: { rows: number; bytes: number }, startedAt: number, endedAt: number): void {
  if (timing === undefined) return;
  const ctx = trace.setSpan(context.active(), parent);
  const attributes = { 'shardpipe.rows': counts.rows, 'shardpipe.bytes': counts.bytes };
  const phase = (name: string, from: number, to: number): void => tracer().startSpan(name, { startTime: from, attributes }, ctx).end(to);
  const queued = startedAt + timing.queueMs;
  phase('partition.queue_wait', startedAt, queued);
  phase('partition.batch_build', queued, queued + timing.writeMs);
  phase('partition.write_fsync', Math.max(queued + timing.writeMs, endedAt - timing.fsyncMs), endedAt);
}
