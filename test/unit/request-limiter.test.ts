import { describe, expect, it } from 'vitest';
import { RequestLimiter } from '../../gateway/index.js';

describe('RequestLimiter', () => {
  it('runs at most maxInFlight at once, queues maxWaiting more, refuses the rest with GATEWAY_OVERLOADED', async () => {
    const limiter = new RequestLimiter({ maxInFlight: 2, maxWaiting: 1 });
    const gates: Array<() => void> = [];
    let running = 0;
    let peak = 0;
    const job = (): Promise<void> =>
      limiter.run(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((release) => gates.push(release));
        running--;
      });
    const calls = [job(), job(), job()];
    await expect(job()).rejects.toMatchObject({ code: 'GATEWAY_OVERLOADED', message: expect.stringContaining('--max-in-flight 2') });
    expect(limiter.inFlight).toBe(2);
    // Releasing one lets the waiting call take its slot.
    while (gates.length < 2) await Promise.resolve();
    gates.shift()!();
    while (gates.length < 2) await new Promise((r) => setImmediate(r));
    gates.splice(0).forEach((g) => g());
    await Promise.all(calls);
    expect(peak).toBe(2);
    expect(limiter.inFlight).toBe(0);
  });

  it('rejects bad bounds at once', () => {
    expect(() => new RequestLimiter({ maxInFlight: 0 })).toThrow(RangeError);
    expect(() => new RequestLimiter({ maxWaiting: -1 })).toThrow(RangeError);
  });
});
