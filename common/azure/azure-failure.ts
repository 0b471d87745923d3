import type { RestError } from '@azure/storage-blob';
import { describeCause } from '../describe-cause.js';
import { redact } from './redact.js';
import type { StallWatchdog } from './stall-watchdog.js';

/**
 * What a failed Azure call means, for a module to turn into its own error code. `detail` is
 * redacted and fit for a message: `HTTP 403 AuthorizationFailure: …` or the network error.
 */
export type AzureFailure =
  /** The caller's signal aborted: pass its reason on. */
  | { kind: 'aborted'; reason: unknown }
  /** The call's StallWatchdog fired: nothing arrived for `timeoutMs`. */
  | { kind: 'stalled'; timeoutMs: number }
  /** 401/403: the credentials were refused. */
  | { kind: 'denied'; status: number; detail: string }
  /** 404: no such blob or container. */
  | { kind: 'not-found'; status: number; detail: string }
  /** 412: a condition (an etag) no longer holds — the blob changed. */
  | { kind: 'changed'; status: number; detail: string }
  /** 408, 429, 5xx: timed out, throttled or failed on the service side; worth a retry. */
  | { kind: 'unavailable'; status: number; detail: string }
  /** Any other HTTP answer: the service refused the request as made. */
  | { kind: 'rejected'; status: number; detail: string }
  /** No HTTP answer at all (refused, reset, DNS, TLS) after the SDK's own retries; worth a retry. */
  | { kind: 'unreachable'; detail: string };

/** Classifies a failed Azure SDK call once; each module maps the kinds to its codes. */
export function classifyAzureFailure(err: unknown, signals: { signal?: AbortSignal | undefined; watchdog?: StallWatchdog | undefined } = {}): AzureFailure {
  if (signals.signal?.aborted) return { kind: 'aborted', reason: signals.signal.reason };
  if (signals.watchdog?.fired) return { kind: 'stalled', timeoutMs: signals.watchdog.timeoutMs };
  if (isRestError(err) && err.statusCode !== undefined) {
    const status = err.statusCode;
    const detail = `HTTP ${status}${err.code ? ` ${err.code}` : ''}: ${redact(err.message.split('\n', 1)[0]!.trim())}`;
    if (status === 401 || status === 403) return { kind: 'denied', status, detail };
    if (status === 404) return { kind: 'not-found', status, detail };
    if (status === 412) return { kind: 'changed', status, detail };
    if (status === 408 || status === 429 || status >= 500) return { kind: 'unavailable', status, detail };
    return { kind: 'rejected', status, detail };
  }
  return { kind: 'unreachable', detail: redact(describeCause(err)) };
}

/** The SDK's HTTP failure, recognised by name, not instanceof: the SDK is loaded lazily and this module must not load it. */
export function isRestError(err: unknown): err is RestError {
  return err instanceof Error && err.name === 'RestError';
}
