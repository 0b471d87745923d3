import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_MALLOC_ARENA_MAX, childProcessEnv } from '../../common/index.js';

describe('childProcessEnv (MALLOC_ARENA_MAX for the processes shardpipe starts)', () => {
  const saved = process.env.MALLOC_ARENA_MAX;
  afterEach(() => {
    if (saved === undefined) delete process.env.MALLOC_ARENA_MAX;
    else process.env.MALLOC_ARENA_MAX = saved;
  });

  it('defaults MALLOC_ARENA_MAX when the environment has none, and keeps the rest of the environment', () => {
    delete process.env.MALLOC_ARENA_MAX;
    const env = childProcessEnv({ SHARDPIPE_TOKEN: 't' });
    expect(env.MALLOC_ARENA_MAX).toBe(DEFAULT_MALLOC_ARENA_MAX);
    expect(env.PATH).toBe(process.env.PATH);
    expect(env.SHARDPIPE_TOKEN).toBe('t');
  });

  it("keeps the environment's own MALLOC_ARENA_MAX, and the caller's extra variables win over both", () => {
    process.env.MALLOC_ARENA_MAX = '8';
    expect(childProcessEnv().MALLOC_ARENA_MAX).toBe('8');
    expect(childProcessEnv({ MALLOC_ARENA_MAX: '1' }).MALLOC_ARENA_MAX).toBe('1');
  });
});
