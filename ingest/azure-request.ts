import { classifyAzureFailure, type StallWatchdog } from '../common/index.js';
import { IngestError, type IngestErrorCode, type IngestErrorContext } from './ingest-errors.js';

/**
 * Translates a failed Azure call into an IngestError (once, at this boundary). `what` says what was
 * being done ("listing az://c/p/"). The caller's abort is passed through as its reason.
 */
export function fromAzureError(err: unknown, what: string, context: IngestErrorContext, signals: { signal?: AbortSignal; watchdog?: StallWatchdog } = {}): unknown {
  if (err instanceof IngestError) return err;
  const failure = classifyAzureFailure(err, signals);
  const fail = (code: IngestErrorCode, message: string): IngestError => new IngestError(code, `${what}: ${message}`, { cause: err, context });
  switch (failure.kind) {
    case 'aborted':
      return failure.reason;
    case 'stalled':
      return fail('INGEST_SOURCE_UNAVAILABLE', `no answer from storage within ${failure.timeoutMs} ms; try again`);
    case 'denied':
      return fail(
        'INGEST_ACCESS_DENIED',
        `storage refused the credentials (${failure.detail}); check that AZURE_STORAGE_CONNECTION_STRING is for this account and may list and read the container`,
      );
    case 'not-found':
      return fail('INGEST_SOURCE_NOT_FOUND', `not found (${failure.detail})`);
    case 'changed':
      return fail('INGEST_INPUT_CHANGED', `the blob was overwritten while it was being copied (${failure.detail}); scan the drop again`);
    case 'unavailable':
      return fail('INGEST_SOURCE_UNAVAILABLE', `storage is unavailable (${failure.detail}); try again`);
    case 'rejected':
      return fail('INGEST_INVALID_SOURCE', `storage rejected the request (${failure.detail})`);
    case 'unreachable':
      return fail('INGEST_SOURCE_UNAVAILABLE', `storage cannot be reached (${failure.detail}); try again`);
  }
}
