import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ForwardRetryLog } from '../../store/forward-retry-log.js';
import { StoreError } from '../../store/store-errors.js';

/** A real pino logger whose JSON lines are kept. */
function capture(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, out), lines };
}

describe('ForwardRetryLog', () => {
  it('logs the first failure per successor with its error (no stack for a StoreError), then at most one summary per 5 s with the count and last error; an answer starts a new episode', () => {
    const { logger, lines } = capture();
    let now = 1_000_000;
    const log = new ForwardRetryLog(logger, () => now);
    const down = new StoreError('STORE_UNAVAILABLE', 'connect ECONNREFUSED 127.0.0.1:1');
    const ctx = { partition: 3, seq: 10, writes: 2 };

    // 20 failures a second for 12 s (a successor down), one other successor failing once.
    for (let i = 0; i < 240; i++) {
      log.failed('a:1', i === 239 ? new StoreError('STORE_UNAVAILABLE', 'last one') : down, ctx);
      now += 50;
    }
    log.failed('b:2', down, ctx);

    const forA = lines.filter((l) => l.successor === 'a:1');
    expect(forA.length).toBe(3);
    expect(forA[0]!.msg).toBe('forward failed; sending it again to the current successor');
    expect(forA[0]!.code).toBe('STORE_UNAVAILABLE');
    expect(forA[0]!.error).toBe('connect ECONNREFUSED 127.0.0.1:1');
    expect(JSON.stringify(forA)).not.toContain('stack');
    expect(forA.slice(1).map((l) => l.msg)).toEqual(['forwards to this successor keep failing; sending them again', 'forwards to this successor keep failing; sending them again']);
    // The first summary covers the failures of the first 5 s after the first line.
    expect(forA[1]!.failures).toBe(100);
    expect(forA[2]!.failures).toBe(100);
    expect(lines.filter((l) => l.successor === 'b:2').length).toBe(1);

    // Answered: the next failure is logged at once again, with its own error.
    log.answered('a:1');
    log.failed('a:1', new StoreError('STORE_STALE_EPOCH', 'epoch moved'), ctx);
    expect(lines.at(-1)!.msg).toBe('forward failed; sending it again to the current successor');
    expect(lines.at(-1)!.error).toBe('epoch moved');
  });

  it('an unexpected error (not a StoreError) keeps its stack', () => {
    const { logger, lines } = capture();
    new ForwardRetryLog(logger).failed('a:1', new TypeError('boom'), { partition: 1, seq: 1, writes: 1 });
    expect((lines[0]!.err as { stack?: string }).stack).toContain('TypeError: boom');
  });
});
