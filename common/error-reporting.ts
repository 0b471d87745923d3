import { redact } from './azure/redact.js';
import type { Logger } from './logger.js';
import { activeTraceId } from './tracing.js';
import { ShardpipeError, type ErrorContext } from './shardpipe-error.js';

/** Sends unexpected errors to a Sentry-compatible endpoint (or nowhere: `NO_ERROR_REPORTER`). */
export interface ErrorReporter {
  /** False for the reporter that sends nothing. */
  readonly enabled: boolean;
  /** Sends `err` with `context` (job, partition, node, file…) when `isUnexpectedError(err)`; otherwise nothing. */
  report(err: unknown, context?: ErrorContext): void;
  /** Adds context to every later report of this process (e.g. the node's address). */
  setContext(context: ErrorContext): void;
  /** Waits up to `timeoutMs` (default 2000) for queued reports to be sent. */
  flush(timeoutMs?: number): Promise<void>;
}

/** Reports nothing; what every process uses without SENTRY_DSN. */
export const NO_ERROR_REPORTER: ErrorReporter = Object.freeze({
  enabled: false,
  report: () => undefined,
  setContext: () => undefined,
  flush: async () => undefined,
});

export interface ErrorReportingOptions {
  /** Sentry DSN (`https://KEY@HOST/PROJECT`). Required. */
  dsn: string;
  /** Sent as the event's release, e.g. `shardpipe@0.1.0`. Default: none. */
  release?: string;
  /** Strings never to send (tokens, passwords), replaced by `***` wherever they appear; asked for each event. */
  secrets?: () => readonly string[];
  /** Where failures of the reporter itself go; asked when needed. Default: nowhere. */
  logger?: () => Logger;
}

/**
 * True for errors nobody planned for: anything that is not a ShardpipeError (a bug, an unexpected
 * library or OS failure) and ShardpipeErrors whose code ends in `_INTERNAL` or `_UNKNOWN` (a failure
 * no code describes, such as STORE_UNKNOWN). A ShardpipeError with
 * any other stable code is a user error or an expected condition the user is told about, and an
 * abort (shutdown, Ctrl-C) is not an error at all.
 */
export function isUnexpectedError(err: unknown): boolean {
  if (err instanceof ShardpipeError) return err.code.endsWith('_INTERNAL') || err.code.endsWith('_UNKNOWN');
  return !(err instanceof Error && err.name === 'AbortError');
}

/** Field names whose values are secrets wherever they appear in an event. */
const SECRET_FIELD = /^(?:.*token.*|.*password.*|.*secret.*|authorization|cookie|set-cookie|dsn|.*connectionstring.*|accountkey|sig)$/i;

/** Secret-bearing patterns in free text, with what stays visible before each. */
const SECRET_TEXT: ReadonlyArray<[RegExp, string]> = [
  [/(\bbearer\s+)[^\s"',;]+/gi, '$1***'],
  [/(\bbasic\s+)[A-Za-z0-9+/=]{8,}/gi, '$1***'],
  // user:password@ (or a lone user name, as Redis ACL passwords may be) in any URL
  [/(\b[a-z][a-z0-9+.-]*:\/\/)[^\s/@"']+@/gi, '$1***@'],
];

/**
 * `value` with every secret blanked: fields named like secrets (token, password, authorization,
 * connection strings…), bearer and basic credentials, credentials in URLs, Azure keys and SAS
 * signatures, and each string of `secrets` (at least 4 characters) wherever it occurs.
 * Returns a copy; the input is not changed.
 */
export function scrubSecrets<T>(value: T, secrets: readonly string[] = []): T {
  const known = secrets.filter((s) => typeof s === 'string' && s.length >= 4).sort((a, b) => b.length - a.length);
  const text = (s: string): string => {
    let out = redact(s);
    for (const [pattern, replacement] of SECRET_TEXT) out = out.replace(pattern, replacement);
    for (const secret of known) out = out.split(secret).join('***');
    return out;
  };
  const seen = new WeakMap<object, unknown>();
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return text(v);
    if (typeof v !== 'object' || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    if (Array.isArray(v)) {
      const out: unknown[] = [];
      seen.set(v, out);
      for (const item of v) out.push(walk(item));
      return out;
    }
    const out: Record<string, unknown> = {};
    seen.set(v, out);
    for (const [k, item] of Object.entries(v)) out[text(k)] = SECRET_FIELD.test(k) && item !== null && item !== undefined && item !== '' ? '***' : walk(item);
    return out;
  };
  return walk(value) as T;
}

/** Context values as Sentry tags: strings, searchable in the UI. */
function tagsOf(context: ErrorContext): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const [k, v] of Object.entries(context)) if (v !== undefined) tags[k] = String(v);
  return tags;
}

/**
 * Starts error reporting to `dsn`: loads `@sentry/node-core` (only here, so a process without a DSN
 * never loads it) and returns a reporter. Without default integrations, so nothing is instrumented
 * or patched: only uncaught exceptions and unhandled rejections are reported besides `report()`
 * (the process still exits on them, as it would without Sentry). No tracing of its own
 * (`skipOpenTelemetrySetup`: spans come from the process's OpenTelemetry set-up), no breadcrumbs,
 * no local variables, no personal data; every event is scrubbed of secrets before it leaves.
 */
export async function startErrorReporting(options: ErrorReportingOptions): Promise<ErrorReporter> {
  const Sentry = await import('@sentry/node-core');
  Sentry.init({
    dsn: options.dsn,
    release: options.release,
    skipOpenTelemetrySetup: true,
    registerEsmLoaderHooks: false,
    defaultIntegrations: false,
    integrations: [
      Sentry.inboundFiltersIntegration(),
      Sentry.functionToStringIntegration(),
      Sentry.linkedErrorsIntegration(),
      Sentry.nodeContextIntegration(),
      Sentry.dedupeIntegration(),
      Sentry.onUncaughtExceptionIntegration(),
      Sentry.onUnhandledRejectionIntegration({ mode: 'strict' }),
    ],
    sendDefaultPii: false,
    maxBreadcrumbs: 0,
    sendClientReports: false,
    beforeSend: (event) => scrubSecrets(event, options.secrets?.() ?? []),
  });
  return {
    enabled: true,
    report(err, context = {}) {
      if (!isUnexpectedError(err)) return;
      const own = err instanceof ShardpipeError ? { code: err.code, ...err.context } : {};
      // A job's log lines bind its traceId; elsewhere the active span's (when exporting) names the trace.
      const traceId = activeTraceId();
      const tags = tagsOf({ ...(traceId === undefined ? {} : { traceId }), ...own, ...context });
      Sentry.captureException(err, { tags, contexts: { shardpipe: tags } });
    },
    setContext(context) {
      Sentry.setTags(tagsOf(context));
    },
    async flush(timeoutMs = 2000) {
      if (!(await Sentry.flush(timeoutMs))) options.logger?.().warn({ timeoutMs }, 'error reports not all sent before the timeout');
    },
  };
}
