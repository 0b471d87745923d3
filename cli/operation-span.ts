import { startRootSpan, traceparentOf } from '../common/index.js';
import type { CliContext } from './cli-context.js';

/** The root span of one user operation of this command, and what its jobs and report carry of it. */
export interface OperationSpan {
  /** W3C `traceparent`: put in every job's data, so the workers' spans are its children. */
  traceparent: string;
  /** 32 hex characters, never all zeros; the `traceId` of the command's `--json` report. */
  traceId: string;
  /** Names the operation on the span once it has an id (ingest id, backup id, restore id). */
  setAttribute(key: string, value: string | number): void;
}

/**
 * Starts the command's operation span (`name`, e.g. `shardpipe ingest`); it ends when the command
 * closes its components, after a failure too. Without an exporter it records nothing but still
 * names a fresh trace id.
 */
export function operationSpan(ctx: CliContext, name: string): OperationSpan {
  const span = ctx.lifecycle.add('operation span', startRootSpan(name), (s) => s.end());
  return { traceparent: traceparentOf(span), traceId: span.spanContext().traceId, setAttribute: (key, value) => void span.setAttribute(key, value) };
}
