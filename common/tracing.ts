import { randomBytes } from 'node:crypto';
import { ROOT_CONTEXT, SpanStatusCode, TraceFlags, context, trace, type Attributes, type Context, type Span, type SpanContext } from '@opentelemetry/api';

/**
 * OpenTelemetry tracing, off unless an exporter is configured. Off, nothing but the API is loaded:
 * spans are the API's no-op ones, and a root span still gets a random trace id, so reports and logs
 * name one trace whether or not it is exported. On, the Node SDK (loaded on demand) exports what
 * the standard `OTEL_*` variables say (endpoint, protocol, headers, sampler, service name).
 */

/** Whether this process exports spans; set once by startTracing. */
let exporting = false;

/** The processes' tracer (the no-op one until the SDK is started). */
export function tracer(): ReturnType<typeof trace.getTracer> {
  return trace.getTracer('shardpipe');
}

/** True once startTracing has started the SDK in this process. */
export function tracingActive(): boolean {
  return exporting;
}

/**
 * Whether `env` asks for traces: an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or an exporter (`OTEL_TRACES_EXPORTER` other than `none`),
 * and not `OTEL_SDK_DISABLED=true`.
 */
export function tracingWanted(env: Readonly<Record<string, string | undefined>>): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  const exporter = env.OTEL_TRACES_EXPORTER?.trim();
  if (exporter === 'none') return false;
  return Boolean(exporter || env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/** A started SDK; `shutdown` flushes the spans still queued. */
export interface TracingHandle {
  shutdown(): Promise<void>;
}

/**
 * Starts the Node SDK (W3C trace context propagation, batch export; no auto-instrumentation) as
 * `serviceName` (it wins over OTEL_SERVICE_NAME: the entry passes that one when set). Call once,
 * from a process's entry, when tracingWanted says so.
 */
export async function startTracing(options: { serviceName: string }): Promise<TracingHandle> {
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const sdk = new NodeSDK({ serviceName: options.serviceName, instrumentations: [] });
  sdk.start();
  exporting = true;
  return { shutdown: () => sdk.shutdown() };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** `span`'s context as a W3C `traceparent` header value (version 00). */
export function traceparentOf(span: Span): string {
  const sc = span.spanContext();
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** The remote span context a W3C `traceparent` names; undefined when absent or malformed (all-zero ids included). */
export function parseTraceparent(value: string | undefined): SpanContext | undefined {
  const m = value === undefined ? null : TRACEPARENT.exec(value.trim());
  if (m === null || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return undefined;
  return { traceId: m[1]!, spanId: m[2]!, traceFlags: Number.parseInt(m[3]!, 16), isRemote: true };
}

/** A context whose parent span is the one `traceparent` names (the root context when it names none). */
export function contextOf(traceparent: string | undefined): Context {
  const sc = parseTraceparent(traceparent);
  return sc === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, sc);
}

/**
 * The root span of one user operation (an ingest, a backup, a restore). Exporting, a real span;
 * otherwise a non-recording span with a fresh random trace id, so the operation's report and
 * logs still carry one.
 */
export function startRootSpan(name: string, attributes?: Attributes): Span {
  if (exporting) return tracer().startSpan(name, { root: true, attributes });
  return trace.wrapSpanContext({ traceId: randomHex(16), spanId: randomHex(8), traceFlags: TraceFlags.NONE });
}

/**
 * Runs `fn` in a span named `name`, child of `parent` (default: the active span), active while
 * `fn` runs; the span ends when `fn` settles, with an error status if it throws.
 */
export async function inSpan<T>(name: string, attributes: Attributes | undefined, parent: Context | undefined, fn: (span: Span) => Promise<T>): Promise<T> {
  const span = tracer().startSpan(name, { attributes }, parent ?? context.active());
  try {
    return await context.with(trace.setSpan(parent ?? context.active(), span), () => fn(span));
  } catch (err) {
    span.recordException(err as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
    throw err;
  } finally {
    span.end();
  }
}

/** The `traceparent` of the active span while exporting; undefined otherwise (nothing to propagate). */
export function activeTraceparent(): string | undefined {
  if (!exporting) return undefined;
  const span = trace.getSpan(context.active());
  return span === undefined ? undefined : traceparentOf(span);
}

/** The trace id of the active span while exporting, for error reports; undefined otherwise. */
export function activeTraceId(): string | undefined {
  if (!exporting) return undefined;
  return trace.getSpan(context.active())?.spanContext().traceId;
}

function randomHex(bytes: number): string {
  for (;;) {
    const hex = randomBytes(bytes).toString('hex');
    if (!/^0+$/.test(hex)) return hex;
  }
}
