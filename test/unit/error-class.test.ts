import { describe, expect, it } from 'vitest';
import { ShardpipeError, errorClass } from '../../common/index.js';
import { BackupError } from '../../backup/index.js';
import { IngestError } from '../../ingest/index.js';
import { JobsError } from '../../jobs/index.js';
import { MetricsError } from '../../metrics-server/index.js';
import { RestoreError } from '../../restore/index.js';
import { StoreError } from '../../store/index.js';

describe('errorClass: one declaration for every module error', () => {
  it('takes retryability from the table, freezes a copy of the context, keeps its name and instanceof per module', () => {
    const CODES = { DEMO_FINAL: { retryable: false }, DEMO_AGAIN: { retryable: true } } as const;
    class DemoError extends errorClass<typeof CODES, { file?: string }>('DemoError', CODES) {}
    const context = { file: 'a.parquet' };
    const cause = new Error('root');
    const err = new DemoError('DEMO_AGAIN', 'try again', { context, cause });
    expect(err).toBeInstanceOf(DemoError);
    expect(err).toBeInstanceOf(ShardpipeError);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ name: 'DemoError', code: 'DEMO_AGAIN', retryable: true, message: 'try again', cause });
    expect(err.context).toEqual({ file: 'a.parquet' });
    expect(Object.isFrozen(err.context)).toBe(true);
    context.file = 'changed';
    expect(err.context.file).toBe('a.parquet');
    expect(new DemoError('DEMO_FINAL', 'no').retryable).toBe(false);
  });

  it('each module keeps its class, codes and extras', () => {
    const errors = [
      new IngestError('INGEST_SOURCE_UNAVAILABLE', 'x', { context: { file: 'f' } }),
      new BackupError('BACKUP_TARGET_UNAVAILABLE', 'x'),
      new RestoreError('RESTORE_TARGET_UNAVAILABLE', 'x'),
      new JobsError('JOBS_REDIS_UNAVAILABLE', 'x'),
      new MetricsError('METRICS_NOT_READY', 'x'),
      new StoreError('STORE_STALE_MAP', 'x', { mapVersion: 7 }),
    ];
    expect(errors.map((e) => [e.name, e.retryable])).toEqual([
      ['IngestError', true],
      ['BackupError', true],
      ['RestoreError', true],
      ['JobsError', true],
      ['MetricsError', true],
      ['StoreError', true],
    ]);
    expect(errors[0]).not.toBeInstanceOf(BackupError);
    expect((errors[4] as MetricsError).httpStatus).toBe(503);
    const store = errors[5] as StoreError;
    expect([store.mapVersion, store.currentEtag, store.grpcStatus]).toEqual([7, undefined, 9]);
    expect(new StoreError('STORE_INVALID_KEY', 'x').retryable).toBe(false);
  });
});
