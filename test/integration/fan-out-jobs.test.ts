import { randomUUID } from 'node:crypto';
import { Job, Queue, type ConnectionOptions } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupError } from '../../backup/index.js';
import { createLogger, ShardpipeError } from '../../common/index.js';
import { IngestError } from '../../ingest/index.js';
import {
  FanOutWorkers,
  JobsError,
  PrivateRedis,
  addFanOut,
  childState,
  connectionFromUrl,
  decodeJobFailure,
  watchFlow,
  type FanOutProcessor,
  type JobFailure,
} from '../../jobs/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const logger = createLogger({ level: 'silent', pretty: false });

interface ChildData {
  /** What the child does: succeed with `value`, or throw the named error. */
  outcome: 'ok' | 'unrecoverable' | 'retryable' | 'untyped';
  value: number;
}
interface ParentReport {
  sum: number;
  failures: Array<{ key: string } & JobFailure>;
}

/** A job family made of the skeleton alone: children add up numbers or throw, the parent reports. */
class TestWorkers extends FanOutWorkers<ChildData, number, { parentFails?: boolean }, ParentReport> {
  static start(connection: ConnectionOptions, queues: { parent: string; child: string }, resources: Array<{ close(): Promise<void> | void }> = []): TestWorkers {
    const child: FanOutProcessor<ChildData, number> = async (job) => {
      switch (job.data.outcome) {
        case 'ok':
          return job.data.value;
        case 'unrecoverable':
          throw new IngestError('INGEST_TOO_MANY_REJECTS', `rejects over the budget in ${job.id}`, { context: { file: `part-${job.data.value}.parquet`, row: 7, rowGroup: 2 } });
        case 'retryable':
          throw new BackupError('BACKUP_TARGET_UNAVAILABLE', 'the target did not answer', { context: { shard: job.data.value, target: 'az://c/p' } });
        case 'untyped':
          throw new RangeError(`value ${job.data.value} is out of range`);
      }
    };
    return new TestWorkers(
      { connection, lockDurationMs: 5000, concurrency: 4, logger },
      {
        kind: 'test',
        resources,
        children: { queue: queues.child, process: child },
        parents: {
          queue: queues.parent,
          concurrency: 1,
          process: async (job) => {
            if (job.data.parentFails) throw new BackupError('BACKUP_SHARD_FAILED', 'two shards failed', { context: { backupId: String(job.id) } });
            const values = Object.values(await job.getChildrenValues<number>());
            const failures = Object.entries(await job.getIgnoredChildrenFailures()).map(([key, reason]) => ({ key, ...decodeJobFailure(reason) }));
            return { sum: values.reduce((s, v) => s + v, 0), failures: failures.sort((a, b) => (a.key < b.key ? -1 : 1)) };
          },
        },
      },
    );
  }
}

function names(): { parent: string; child: string } {
  const id = randomUUID();
  return { parent: `test-${id}-parent`, child: `test-${id}-child` };
}

async function submit(connection: ConnectionOptions, queues: { parent: string; child: string }, id: string, children: ChildData[], parentData: { parentFails?: boolean } = {}, attempts = 2): Promise<string[]> {
  const ids = children.map((_, i) => `${id}-c${i}`);
  await addFanOut(connection, {
    parent: { name: 'test-parent', queue: queues.parent, id, data: parentData },
    children: { name: 'test-child', queue: queues.child, attempts, jobs: children.map((data, i) => ({ id: ids[i]!, data })) },
  });
  return ids;
}

describe('the fan-out skeleton on a real Redis', () => {
  let dir: TempDir;
  let redis: PrivateRedis;
  let connection: ConnectionOptions;

  beforeAll(async () => {
    dir = await makeTempDir();
    redis = await PrivateRedis.start({ dataDir: dir.sub('redis') });
    connection = connectionFromUrl(redis.url);
  });

  afterAll(async () => {
    await redis?.stop();
    await dir?.remove();
  });

  it('carries code, message, retryable and context of a failed child through BullMQ; non-retryable failures are not retried', async () => {
    const queues = names();
    const workers = TestWorkers.start(connection, queues);
    try {
      await workers.waitUntilReady();
      const ids = await submit(connection, queues, 'codec', [
        { outcome: 'ok', value: 5 },
        { outcome: 'unrecoverable', value: 1 },
        { outcome: 'retryable', value: 2 },
        { outcome: 'untyped', value: 3 },
      ]);
      const report = await watchFlow<{ parentFails?: boolean }, ParentReport, ChildData>(connection, { kind: 'test', parentQueue: queues.parent, childQueue: queues.child, parentId: 'codec' }, { pollMs: 50 });
      expect(report.sum).toBe(5);
      expect(report.failures.map(({ key: _key, ...f }) => f)).toEqual([
        { code: 'INGEST_TOO_MANY_REJECTS', message: 'rejects over the budget in codec-c1', retryable: false, context: { file: 'part-1.parquet', row: 7, rowGroup: 2 } },
        { code: 'BACKUP_TARGET_UNAVAILABLE', message: 'the target did not answer', retryable: true, context: { shard: 2, target: 'az://c/p' } },
        { code: 'JOBS_PROCESSOR_ERROR', message: 'value 3 is out of range', retryable: true, context: {} },
      ]);
      const children = new Queue(queues.child, { connection });
      try {
        const jobs = await Promise.all(ids.map((id) => Job.fromId(children, id)));
        // UnrecoverableError: one attempt of the two allowed; retryable ones used both.
        expect(jobs.map((j) => j?.attemptsMade)).toEqual([1, 1, 2, 2]);
        expect(jobs.map((j) => childState(j))).toEqual(['done', 'failed', 'failed', 'failed']);
        // The job itself holds the same failure: whoever reads failedReason decodes it alike.
        expect(decodeJobFailure(jobs[1]!.failedReason)).toMatchObject({ code: 'INGEST_TOO_MANY_REJECTS', retryable: false, context: { row: 7 } });
      } finally {
        await children.close();
      }
    } finally {
      await workers.close();
    }
  });

  it('the watch loop resolves the report of a completed flow and shows every child on the way', async () => {
    const queues = names();
    await submit(connection, queues, 'done', [
      { outcome: 'ok', value: 1 },
      { outcome: 'ok', value: 2 },
      { outcome: 'ok', value: 3 },
    ]);
    const seen: Array<Array<Job | undefined>> = [];
    let workers: TestWorkers | undefined;
    const report = await watchFlow<{ parentFails?: boolean }, ParentReport, ChildData>(
      connection,
      {
        kind: 'test',
        parentQueue: queues.parent,
        childQueue: queues.child,
        parentId: 'done',
        childIds: () => ['done-c0', 'done-c1', 'done-c2'],
        onChildren: (jobs) => {
          seen.push([...jobs]);
          // Workers start only once the watcher has seen the children waiting.
          workers ??= TestWorkers.start(connection, queues);
        },
      },
      { pollMs: 50 },
    ).finally(() => workers?.close());
    expect(report).toEqual({ sum: 6, failures: [] });
    expect(seen[0]!.map((j) => j?.id)).toEqual(['done-c0', 'done-c1', 'done-c2']);
    expect(seen[0]!.map((j) => childState(j))).toEqual(['waiting', 'waiting', 'waiting']);
  });

  it('the watch loop rejects with the failed parent’s typed failure, rebuilt by errorOf or as JOBS_FAILED', async () => {
    const queues = names();
    const workers = TestWorkers.start(connection, queues);
    try {
      await submit(connection, queues, 'bad-a', [{ outcome: 'ok', value: 1 }], { parentFails: true });
      await submit(connection, queues, 'bad-b', [{ outcome: 'ok', value: 1 }], { parentFails: true });
      const watch = { kind: 'test', parentQueue: queues.parent, childQueue: queues.child };
      const rebuilt = await watchFlow(
        connection,
        { ...watch, parentId: 'bad-a', errorOf: (f: JobFailure) => (f.code.startsWith('BACKUP_') ? new ShardpipeError(f.code, f.message, { retryable: f.retryable, context: f.context }) : undefined) },
        { pollMs: 50 },
      ).catch((e: unknown) => e);
      expect(rebuilt).toBeInstanceOf(ShardpipeError);
      expect(rebuilt).toMatchObject({ code: 'BACKUP_SHARD_FAILED', message: 'two shards failed', context: { backupId: 'bad-a' } });
      const plain = await watchFlow(connection, { ...watch, parentId: 'bad-b' }, { pollMs: 50 }).catch((e: unknown) => e);
      expect(plain).toBeInstanceOf(JobsError);
      expect(plain).toMatchObject({ code: 'JOBS_FAILED', context: { jobId: 'bad-b', failureCode: 'BACKUP_SHARD_FAILED' } });
      expect((plain as Error).message).toBe('test bad-b failed: BACKUP_SHARD_FAILED: two shards failed');
    } finally {
      await workers.close();
    }
  });

  it('the watch loop rejects with JOBS_NOT_FOUND when the flow is removed while it is watched', async () => {
    const queues = names();
    await submit(connection, queues, 'gone', [{ outcome: 'ok', value: 1 }]);
    const parents = new Queue(queues.parent, { connection });
    try {
      let polls = 0;
      const err = await watchFlow(
        connection,
        {
          kind: 'test',
          parentQueue: queues.parent,
          childQueue: queues.child,
          parentId: 'gone',
          onChildren: () => {
            // No worker runs: the flow waits until it is removed after the first poll.
            if (++polls === 1) void Job.fromId(parents, 'gone').then((job) => job?.remove({ removeChildren: true }));
          },
        },
        { pollMs: 50 },
      ).catch((e: unknown) => e);
      expect(polls).toBeGreaterThanOrEqual(1);
      expect(err).toBeInstanceOf(JobsError);
      expect(err).toMatchObject({ code: 'JOBS_NOT_FOUND', context: { jobId: 'gone' } });
      expect((err as Error).message).toContain('test gone is not in Redis');
    } finally {
      await parents.close();
    }
  });

  it('the watch loop looks at the parent rarely while it runs and wakes at its completed or failed event, not at the next look', { timeout: 60_000 }, async () => {
    const queues = names();
    await submit(connection, queues, 'woken', [{ outcome: 'ok', value: 4 }]);
    await submit(connection, queues, 'woken-bad', [{ outcome: 'ok', value: 1 }], { parentFails: true });
    const redisClient = new Redis(connection as RedisOptions);
    // Every look at the parent is one EVALSHA (getState); nothing else runs on this Redis meanwhile.
    const lookups = async (): Promise<number> => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await redisClient.info('commandstats'))?.[1] ?? 0);
    let workers: TestWorkers | undefined;
    try {
      const watch = { kind: 'test', parentQueue: queues.parent, childQueue: queues.child };
      const started = performance.now();
      const done = watchFlow<{ parentFails?: boolean }, ParentReport, ChildData>(connection, { ...watch, parentId: 'woken' }, { pollMs: 20_000 });
      const failed = watchFlow(connection, { ...watch, parentId: 'woken-bad' }, { pollMs: 20_000 }).catch((e: unknown) => e);
      // No worker runs for 2 s: a look every 50 ms would be about 80 over both watches. With the
      // events followed there are only the 50 ms looks until their connection is ready, and one more.
      const before = await lookups();
      await new Promise((resolve) => setTimeout(resolve, 2000));
      expect((await lookups()) - before).toBeLessThanOrEqual(20);
      workers = TestWorkers.start(connection, queues);
      expect(await done).toEqual({ sum: 4, failures: [] });
      expect(await failed).toMatchObject({ code: 'JOBS_FAILED', context: { jobId: 'woken-bad' } });
      // Both well before their next look (20 s after the first).
      expect(performance.now() - started).toBeLessThan(15_000);
    } finally {
      await workers?.close();
      redisClient.disconnect();
    }
  });

  it('the watch loop stops when its signal aborts', async () => {
    const queues = names();
    await submit(connection, queues, 'stopped', [{ outcome: 'ok', value: 1 }]);
    const stop = new AbortController();
    const reason = new Error('interrupted');
    const err = await watchFlow(
      connection,
      { kind: 'test', parentQueue: queues.parent, childQueue: queues.child, parentId: 'stopped', onChildren: () => stop.abort(reason) },
      { pollMs: 10_000, signal: stop.signal },
    ).catch((e: unknown) => e);
    // Node's AbortError from the poll's sleep, with the signal's reason as its cause.
    expect(err).toMatchObject({ name: 'AbortError', cause: reason });
  });

  it('close stops both workers, then closes every resource in order even when one fails, once however often it is called', async () => {
    const queues = names();
    const closed: string[] = [];
    const workers = TestWorkers.start(connection, queues, [
      { close: () => void closed.push('first') },
      {
        close: async () => {
          closed.push('second');
          throw new Error('second failed to close');
        },
      },
      { close: () => void closed.push('third') },
    ]);
    await workers.waitUntilReady();
    const [a, b] = [workers.close(), workers.close()];
    expect(a).toBe(b);
    const err = await a.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AggregateError);
    expect((err as AggregateError).message).toBe('closing test workers failed');
    expect((err as AggregateError).errors.map((e: Error) => e.message)).toEqual(['second failed to close']);
    expect(closed).toEqual(['first', 'second', 'third']);
  });
});
