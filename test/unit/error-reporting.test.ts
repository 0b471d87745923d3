import { describe, expect, it } from 'vitest';
import { ShardpipeError, createLogger, isUnexpectedError, scrubSecrets } from '../../common/index.js';

describe('scrubSecrets', () => {
  it('blanks secret fields, bearer and basic credentials, URL passwords, Azure keys and known secrets anywhere in an event', () => {
    const event = {
      message: 'connect redis://:redis-pw-77aa@10.0.0.2:6379 failed; sent Authorization: Bearer tok-1234567890abcdef',
      exception: { values: [{ type: 'Error', value: 'GET https://user:hunter2-secret@host/x?sv=1&sig=abcDEF123%3D failed', stacktrace: { frames: [{ vars: { token: 'tok-1234567890abcdef' } }] } }] },
      request: { headers: { Authorization: 'Basic dXNlcjpodW50ZXIy', 'x-ok': 'fine' } },
      extra: {
        azure: 'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0S2V5PT0=;EndpointSuffix=core.windows.net',
        note: 'the worker token is plain-known-secret-99 here',
        redisPassword: 'x',
        word: 'abc stays',
        list: ['plain-known-secret-99', 42, null],
      },
    };
    const out = scrubSecrets(event, ['plain-known-secret-99', 'abc']);
    const text = JSON.stringify(out);
    for (const secret of ['redis-pw-77aa', 'tok-1234567890abcdef', 'hunter2-secret', 'abcDEF123', 'dXNlcjpodW50ZXIy', 'c2VjcmV0S2V5PT0=', 'plain-known-secret-99']) {
      expect(text).not.toContain(secret);
    }
    expect(out.message).toBe('connect redis://***@10.0.0.2:6379 failed; sent Authorization: Bearer ***');
    expect(out.exception.values[0]!.value).toBe('GET https://***@host/x?sv=1&sig=REDACTED failed');
    expect(out.exception.values[0]!.stacktrace.frames[0]!.vars.token).toBe('***');
    expect(out.request.headers).toEqual({ Authorization: '***', 'x-ok': 'fine' });
    expect(out.extra.azure).toContain('AccountName=acct;AccountKey=REDACTED;');
    expect(out.extra.note).toBe('the worker token is *** here');
    expect(out.extra.redisPassword).toBe('***');
    expect(out.extra.list).toEqual(['***', 42, null]);
    // Secrets shorter than 4 characters are not searched for (they would blank ordinary words).
    expect(out.extra.word).toBe('abc stays');
    // The input is left alone.
    expect(event.extra.note).toContain('plain-known-secret-99');
  });

  it('copes with cycles', () => {
    const a: Record<string, unknown> = { password: 'p4ss-word', name: 'a' };
    a.self = a;
    const out = scrubSecrets(a);
    expect(out.password).toBe('***');
    expect((out.self as Record<string, unknown>).name).toBe('a');
  });
});

describe('isUnexpectedError', () => {
  it('is true for bugs and *_INTERNAL / *_UNKNOWN codes, false for stable user-facing codes and aborts', () => {
    expect(isUnexpectedError(new TypeError('x is undefined'))).toBe(true);
    expect(isUnexpectedError('a thrown string')).toBe(true);
    expect(isUnexpectedError(new ShardpipeError('STORE_INTERNAL', 'unreadable record'))).toBe(true);
    expect(isUnexpectedError(new ShardpipeError('STORE_UNKNOWN', '?'))).toBe(true);
    expect(isUnexpectedError(new ShardpipeError('INGEST_INCOMPLETE_DROP', 'no _SUCCESS'))).toBe(false);
    expect(isUnexpectedError(new ShardpipeError('STORE_UNAVAILABLE', 'down', { retryable: true }))).toBe(false);
    expect(isUnexpectedError(new DOMException('aborted', 'AbortError'))).toBe(false);
  });
});

describe('createLogger onError', () => {
  it('hands error and fatal lines with an err to onError with their bound and plain fields; other lines and loggers without a hook are untouched', () => {
    const seen: Array<[unknown, Record<string, unknown>]> = [];
    const logger = createLogger({ level: 'error', pretty: false, onError: (err, fields) => seen.push([err, fields]) });
    const boom = new TypeError('boom');
    logger.child({ module: 'store', partition: 3 }).error({ err: boom, jobId: 'j-1', nested: { no: 1 } }, 'request failed');
    logger.error({ code: 'X' }, 'an error line without err');
    logger.warn({ err: boom }, 'a warning');
    logger.fatal({ err: 'a string' }, 'fatal');
    expect(seen).toEqual([
      [boom, { module: 'store', partition: 3, jobId: 'j-1' }],
      ['a string', {}],
    ]);
    // Without a hook, pino's own defaults stay (passing `hooks: undefined` would break every log call).
    expect(() => createLogger({ level: 'error', pretty: false }).error({ err: boom }, 'plain')).not.toThrow();
  });
});

describe('error lines reach the reporter whatever the log level', () => {
  it('at --log-level fatal and silent, error and fatal lines with an err still call onError (the output stays as quiet as asked)', () => {
    for (const level of ['fatal', 'silent'] as const) {
      const heard: string[] = [];
      const logger = createLogger({ level, pretty: false, onError: (err) => heard.push((err as Error).message) });
      logger.child({ module: 'x' }).error({ err: new Error(`error at ${level}`) }, 'failed');
      logger.warn({ err: new Error('a warning is no report') }, 'warned');
      expect(heard, level).toEqual([`error at ${level}`]);
    }
  });
});
