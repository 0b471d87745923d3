import type { RestError } from '@azure/storage-blob';
import { IngestError, describeCause, type IngestErrorContext } from './ingest-errors.js';

/**
 * A resettable deadline for Azure calls: `signal` aborts once `timeoutMs` pass after the last `arm()`
 * (or when `parent` aborts). Armed per request and re-armed per received chunk, it bounds how long a
 * silent connection can hold a scan, without bounding how long a large download may take.
 */
export class StallWatchdog {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private firedFlag = false;

  constructor(
    readonly timeoutMs: number,
    parent?: AbortSignal,
  ) {
    this.signal = parent ? AbortSignal.any([parent, this.controller.signal]) : this.controller.signal;
  }

  /** True once the deadline passed (as opposed to the parent signal aborting). */
  get fired(): boolean {
    return this.firedFlag;
  }

  arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.firedFlag = true;
      this.controller.abort(new Error(`no answer from storage within ${this.timeoutMs} ms`));
    }, this.timeoutMs);
  }

  disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * Translates a failed Azure call into an IngestError (once, at this boundary). `what` says what was
 * being done ("listing az://c/p/"). The caller's abort is passed through as its reason.
 */
export function fromAzureError(err: unknown, what: string, context: IngestErrorContext, signals: { signal?: AbortSignal; watchdog?: StallWatchdog } = {}): unknown {
  if (err instanceof IngestError) return err;
  if (signals.signal?.aborted) return signals.signal.reason;
  if (signals.watchdog?.fired) {
    return new IngestError('INGEST_SOURCE_UNAVAILABLE', `${what}: no answer from storage within ${signals.watchdog.timeoutMs} ms; try again`, { cause: err, context });
  }
  if (isRestError(err) && err.statusCode !== undefined) {
    const status = err.statusCode;
    const detail = `HTTP ${status}${err.code ? ` ${err.code}` : ''}: ${firstLine(err.message)}`;
    if (status === 401 || status === 403) {
      return new IngestError(
        'INGEST_ACCESS_DENIED',
        `${what}: storage refused the credentials (${detail}); check that AZURE_STORAGE_CONNECTION_STRING is for this account and may list and read the container`,
        { cause: err, context },
      );
    }
    if (status === 404) return new IngestError('INGEST_SOURCE_NOT_FOUND', `${what}: not found (${detail})`, { cause: err, context });
    if (status === 412) return new IngestError('INGEST_INPUT_CHANGED', `${what}: the blob was overwritten while it was being copied (${detail}); scan the drop again`, { cause: err, context });
    if (status === 408 || status === 429 || status >= 500) {
      return new IngestError('INGEST_SOURCE_UNAVAILABLE', `${what}: storage is unavailable (${detail}); try again`, { cause: err, context });
    }
    return new IngestError('INGEST_INVALID_SOURCE', `${what}: storage rejected the request (${detail})`, { cause: err, context });
  }
  // No HTTP answer at all: refused, reset, DNS, TLS — after the client's own retries.
  return new IngestError('INGEST_SOURCE_UNAVAILABLE', `${what}: storage cannot be reached (${redact(describeCause(err))}); try again`, { cause: err, context });
}

/** By name, not instanceof: the SDK is loaded lazily (see azure-drop.ts) and this module must not load it. */
function isRestError(err: unknown): err is RestError {
  return err instanceof Error && err.name === 'RestError';
}

function firstLine(text: string): string {
  return redact(text.split('\n', 1)[0]!.trim());
}

/** A SAS token's signature must not reach a log line through an error message. */
function redact(text: string): string {
  return text.replace(/([?&]sig=)[^&\s]+/gi, '$1REDACTED');
}
