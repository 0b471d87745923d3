import { UnrecoverableError } from './commonjs-libraries.js';
import { z } from 'zod';
import { ShardpipeError, type ErrorContext } from '../common/index.js';

/** Why a job failed, as it crosses BullMQ: the thrower's code, message, retryability and context. */
export interface JobFailure {
  /** The stable code (`INGEST_CORRUPT_FILE`, `BACKUP_SNAPSHOT_LOST`, …). */
  code: string;
  message: string;
  /** Whether the thrower held that repeating the job may succeed (BullMQ retried it if so). */
  retryable: boolean;
  context: ErrorContext;
}

/**
 * The envelope in a job's `failedReason`. BullMQ stores the thrown error's message as the reason in
 * the same Redis script that moves the job to failed, and hands that reason to the parent
 * (`getIgnoredChildrenFailures`) and to `QueueEvents`: so the failure is carried there, as JSON,
 * rather than in job data written by a second call that may not land.
 */
const Envelope = z.object({
  jobFailure: z.literal(1),
  code: z.string().regex(/^[A-Z][A-Z0-9_]*$/),
  message: z.string(),
  retryable: z.boolean(),
  context: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
});

/**
 * The failure an error thrown by a processor stands for. A ShardpipeError keeps its own code,
 * retryability and context; anything else (a bug, a library's own error) is JOBS_PROCESSOR_ERROR,
 * retryable, with the error's message.
 */
export function jobFailureOf(err: unknown): JobFailure {
  if (err instanceof ShardpipeError) return { code: err.code, message: err.message, retryable: err.retryable, context: definedOnly(err.context) };
  return { code: 'JOBS_PROCESSOR_ERROR', message: err instanceof Error ? err.message : String(err), retryable: true, context: {} };
}

/** The `failedReason` that carries `failure` (see decodeJobFailure). */
export function encodeJobFailure(failure: JobFailure): string {
  return JSON.stringify({ jobFailure: 1, code: failure.code, message: failure.message, retryable: failure.retryable, context: definedOnly(failure.context) });
}

/**
 * The failure a job's `failedReason` carries. A reason that is not an envelope was written by
 * BullMQ itself (a job stalled too often, a lost lock) or by a processor from before the codec: it
 * becomes JOBS_FAILED, not retryable, with the reason as its message — never parsed for a code.
 */
export function decodeJobFailure(reason: string | undefined | null): JobFailure {
  if (reason === undefined || reason === null || reason === '') return { code: 'JOBS_FAILED', message: 'no reason recorded', retryable: false, context: {} };
  if (reason.startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(reason);
    } catch {
      parsed = undefined;
    }
    const envelope = Envelope.safeParse(parsed);
    if (envelope.success) return { code: envelope.data.code, message: envelope.data.message, retryable: envelope.data.retryable, context: envelope.data.context };
  }
  return { code: 'JOBS_FAILED', message: reason, retryable: false, context: {} };
}

/** The failure as an error again, to throw where it is known before any work (a file unreadable at planning). */
export function jobFailureError(failure: JobFailure): ShardpipeError {
  return new ShardpipeError(failure.code, failure.message, { retryable: failure.retryable, context: failure.context });
}

/** A failure for people and reports: `CODE: message`. */
export function formatJobFailure(failure: JobFailure): string {
  return `${failure.code}: ${failure.message}`;
}

/**
 * What a processor throws to BullMQ for `err`: the failure's envelope as the message, as an
 * UnrecoverableError when it is not retryable (BullMQ then does not try again), else as an Error
 * that keeps `err` as its cause; either with `err`'s stack.
 */
export function toBullmqError(err: unknown): Error {
  const failure = jobFailureOf(err);
  const wrapped = failure.retryable ? new Error(encodeJobFailure(failure), { cause: err }) : new UnrecoverableError(encodeJobFailure(failure));
  // BullMQ keeps the thrown error's stack in the job (`stacktrace`): keep the one of where it failed.
  if (err instanceof Error && err.stack !== undefined) wrapped.stack = err.stack;
  return wrapped;
}

/** JSON keeps neither `undefined` nor NaN and ±Infinity: drop the one, spell the others. */
function definedOnly(context: ErrorContext): ErrorContext {
  return Object.fromEntries(
    Object.entries(context)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, typeof v === 'number' && !Number.isFinite(v) ? String(v) : v]),
  );
}
