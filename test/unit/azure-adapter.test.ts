import { RestError } from '@azure/storage-blob';
import { describe, expect, it } from 'vitest';
import { StallWatchdog, classifyAzureFailure, describeCause, isRestError, parseAzureUrl, redact } from '../../common/index.js';
import { BackupError, parseBackupUrl } from '../../backup/index.js';
import { IngestError } from '../../ingest/index.js';

const SAS_URL = 'https://acct.blob.core.windows.net/c/b?sv=2022-11-02&se=2030-01-01&sp=r&sig=AbC%2Bdef123%3D&x=1';

describe('redact', () => {
  it('hides SAS signatures and account keys, keeps the rest readable', () => {
    expect(redact(SAS_URL)).toBe('https://acct.blob.core.windows.net/c/b?sv=2022-11-02&se=2030-01-01&sp=r&sig=REDACTED&x=1');
    const cs = 'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0a2V5PT0=;EndpointSuffix=core.windows.net';
    expect(redact(`bad ${cs}`)).toBe('bad DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=REDACTED;EndpointSuffix=core.windows.net');
    const sasCs = 'BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=2022-11-02&sp=r&sig=s3cr3t';
    expect(redact(sasCs)).toBe('BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=REDACTED');
    expect(redact('no secrets here')).toBe('no secrets here');
  });
});

describe('classifyAzureFailure', () => {
  const rest = (statusCode: number, message = `failed\nsecond line ${SAS_URL}`): RestError => new RestError(message, { statusCode, code: 'SomeCode' });

  it('maps HTTP statuses to kinds with a redacted one-line detail', () => {
    const kinds = [401, 403, 404, 412, 408, 429, 500, 503, 400, 409].map((s) => classifyAzureFailure(rest(s)).kind);
    expect(kinds).toEqual(['denied', 'denied', 'not-found', 'changed', 'unavailable', 'unavailable', 'unavailable', 'unavailable', 'rejected', 'rejected']);
    const withSecret = classifyAzureFailure(rest(403, `denied for ${SAS_URL}\nmore`));
    expect(withSecret).toMatchObject({ kind: 'denied', status: 403 });
    expect(withSecret.kind === 'denied' && withSecret.detail).toBe(`HTTP 403 SomeCode: denied for ${redact(SAS_URL)}`);
  });

  it('a failure without an HTTP answer is unreachable, redacted; the caller abort and a fired watchdog come first', async () => {
    const reset = Object.assign(new Error(`read ECONNRESET ${SAS_URL}`), { code: 'ECONNRESET' });
    expect(classifyAzureFailure(reset)).toEqual({ kind: 'unreachable', detail: `read ECONNRESET ${redact(SAS_URL)}` });
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    expect(classifyAzureFailure(rest(500), { signal: controller.signal })).toEqual({ kind: 'aborted', reason: controller.signal.reason });
    const watchdog = new StallWatchdog(5);
    watchdog.arm();
    await new Promise((resolve) => watchdog.signal.addEventListener('abort', resolve, { once: true }));
    expect(watchdog.fired).toBe(true);
    expect(classifyAzureFailure(reset, { watchdog })).toEqual({ kind: 'stalled', timeoutMs: 5 });
  });

  it('recognises the SDK error by name only', () => {
    expect(isRestError(rest(500))).toBe(true);
    expect(isRestError(new Error('x'))).toBe(false);
    expect(isRestError({ name: 'RestError' })).toBe(false);
  });
});

describe('parseAzureUrl: one parser, each module its own error', () => {
  it('parses literally, or as a folder, and refuses through the caller’s factory', () => {
    expect(parseAzureUrl('az://drops/2026/11')).toEqual({ container: 'drops', prefix: '2026/11' });
    expect(parseAzureUrl('az://drops/2026/11', { asFolder: true })).toEqual({ container: 'drops', prefix: '2026/11/' });
    expect(parseAzureUrl('az://$root/x')).toEqual({ container: '$root', prefix: 'x' });
    for (const bad of ['s3://x/y', 'az://Drops/x', 'az://ab/x', 'az://my--drops/x', 'az://drops//x', 'az://drops/a/../b', 'az://drops/./a', `az://drops/${'p'.repeat(1025)}`]) {
      expect(() => parseAzureUrl(bad), bad).toThrowError(RangeError);
      expect(() => parseAzureUrl(bad, { invalid: (reason) => new IngestError('INGEST_INVALID_SOURCE', reason) }), bad).toThrowError(IngestError);
    }
    // backup leaves room for its own names under the prefix
    expect(() => parseBackupUrl(`az://backups/${'p'.repeat(900)}`)).toThrowError(BackupError);
    expect(parseBackupUrl(`az://backups/${'p'.repeat(899)}`)).toEqual({ kind: 'az', container: 'backups', prefix: `${'p'.repeat(899)}/` });
  });
});

describe('describeCause', () => {
  it('gives the message, else the name, else the text', () => {
    expect(describeCause(new Error('boom'))).toBe('boom');
    expect(describeCause(new TypeError())).toBe('TypeError');
    expect(describeCause(42)).toBe('42');
  });
});
