import { UnrecoverableError } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { ShardpipeError } from '../../common/index.js';
import { IngestError } from '../../ingest/index.js';
import { StoreError } from '../../store/index.js';
import { decodeJobFailure, encodeJobFailure, formatJobFailure, jobFailureError, jobFailureOf, toBullmqError } from '../../jobs/index.js';

describe('job failure codec', () => {
  it('round-trips code, message, retryable and context of a typed error', () => {
    const err = new IngestError('INGEST_CORRUPT_FILE', 'part-1.parquet: row group 3 is truncated: "quotes", newlines\nand ünïcode', { context: { file: 'part-1.parquet', rowGroup: 3 } });
    const failure = decodeJobFailure(encodeJobFailure(jobFailureOf(err)));
    expect(failure).toEqual({ code: 'INGEST_CORRUPT_FILE', message: err.message, retryable: false, context: { file: 'part-1.parquet', rowGroup: 3 } });
    expect(formatJobFailure(failure)).toBe(`INGEST_CORRUPT_FILE: ${err.message}`);
  });

  it('keeps a retryable code retryable, and a thrown error of another kind is JOBS_PROCESSOR_ERROR', () => {
    expect(jobFailureOf(new StoreError('STORE_UNAVAILABLE', 'node n1 is down'))).toMatchObject({ code: 'STORE_UNAVAILABLE', retryable: true });
    expect(jobFailureOf(new TypeError('x is not a function'))).toEqual({ code: 'JOBS_PROCESSOR_ERROR', message: 'x is not a function', retryable: true, context: {} });
    expect(jobFailureOf('a string')).toMatchObject({ code: 'JOBS_PROCESSOR_ERROR', message: 'a string' });
  });

  it('turns non-retryable failures into UnrecoverableError and keeps the cause of retryable ones', () => {
    const empty = new IngestError('INGEST_EMPTY_FILE', 'a.parquet is 0 bytes');
    const fatal = toBullmqError(empty);
    expect(fatal).toBeInstanceOf(UnrecoverableError);
    expect(decodeJobFailure(fatal.message).code).toBe('INGEST_EMPTY_FILE');
    const cause = new StoreError('STORE_UNAVAILABLE', 'down');
    const retry = toBullmqError(cause);
    expect(retry).not.toBeInstanceOf(UnrecoverableError);
    expect(retry.cause).toBe(cause);
    expect(retry.stack).toBe(cause.stack);
    expect(fatal.stack).toBe(empty.stack);
    expect(decodeJobFailure(retry.message)).toMatchObject({ code: 'STORE_UNAVAILABLE', retryable: true });
  });

  it('drops undefined context values and spells non-finite numbers, so the envelope stays valid JSON', () => {
    const err = new ShardpipeError('BACKUP_SHARD_FAILED', 'm', { context: { shard: 1, rate: Number.NaN, top: Number.POSITIVE_INFINITY, file: undefined } });
    expect(decodeJobFailure(encodeJobFailure(jobFailureOf(err))).context).toEqual({ shard: 1, rate: 'NaN', top: 'Infinity' });
  });

  it('reads reasons that are not its envelope as JOBS_FAILED with the reason as message, without looking for a code in the text', () => {
    expect(decodeJobFailure('job stalled more than allowable limit')).toEqual({ code: 'JOBS_FAILED', message: 'job stalled more than allowable limit', retryable: false, context: {} });
    expect(decodeJobFailure('INGEST_CORRUPT_FILE: looks like a code')).toMatchObject({ code: 'JOBS_FAILED', message: 'INGEST_CORRUPT_FILE: looks like a code' });
    expect(decodeJobFailure('{"not":"an envelope"}')).toMatchObject({ code: 'JOBS_FAILED', message: '{"not":"an envelope"}' });
    expect(decodeJobFailure('{"jobFailure":1,"code":"lower case","message":"m","retryable":false,"context":{}}').code).toBe('JOBS_FAILED');
    expect(decodeJobFailure('{truncated')).toMatchObject({ code: 'JOBS_FAILED', message: '{truncated' });
    expect(decodeJobFailure(undefined)).toMatchObject({ code: 'JOBS_FAILED', message: 'no reason recorded' });
  });

  it('rebuilds the failure as a ShardpipeError to throw', () => {
    const err = jobFailureError({ code: 'INGEST_CORRUPT_FILE', message: 'bad footer', retryable: false, context: { file: 'a' } });
    expect(err).toBeInstanceOf(ShardpipeError);
    expect(err).toMatchObject({ code: 'INGEST_CORRUPT_FILE', message: 'bad footer', retryable: false, context: { file: 'a' } });
  });
});
