import { describe, expect, it } from 'vitest';
import { WritePause } from '../../store/write-pause.js';

describe('WritePause', () => {
  it('holds writes of a partition until released, measures the pause from the hold, and counts the writes held', async () => {
    const pause = new WritePause();
    const seen: number[] = [];
    pause.onRelease((r) => seen.push(r.ms));
    expect(pause.active).toBe(false);
    expect(pause.wait(1)).toBeUndefined();
    pause.hold(1, 1000);
    pause.hold(1, 1500);
    expect(pause.heldSince(1)).toBe(1000);
    expect(pause.wait(2)).toBeUndefined();
    let released = 0;
    const waits = [pause.wait(1)!, pause.wait(1)!].map((w) => w.then(() => released++));
    await Promise.resolve();
    expect(released).toBe(0);
    expect(pause.release(1, 'the map changed', 1080)).toEqual({ partitionId: 1, ms: 80, held: 2, reason: 'the map changed' });
    await Promise.all(waits);
    expect(released).toBe(2);
    expect(seen).toEqual([80]);
    expect(pause.release(1, 'again')).toBeUndefined();
    expect(pause.active).toBe(false);
  });
});
