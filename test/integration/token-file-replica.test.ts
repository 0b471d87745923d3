import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureTokenFile } from '../../cli/token-file.js';
import { AuthTokens } from '../../common/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

let dir: TempDir | undefined;
afterEach(async () => {
  await dir?.remove();
  dir = undefined;
});

describe('embedded token files and the replica role', () => {
  it('a fresh file has a replica token; a file from before it keeps its client tokens and gains one', async () => {
    dir = await makeTempDir('shardpipe-tokens-');
    const fresh = await ensureTokenFile(join(dir.path, 'fresh'));
    expect(AuthTokens.parse(await readFile(join(dir.path, 'fresh'), 'utf8')).replicaToken).toBe(fresh.replica);

    const old = join(dir.path, 'old');
    const [r, w, a] = ['r', 'w', 'a'].map((c) => c.repeat(32));
    await writeFile(old, `read ${r}\nwrite ${w}\nadmin ${a}\n`);
    const kept = await ensureTokenFile(old);
    expect([kept.read, kept.write, kept.admin]).toEqual([r, w, a]);
    expect(kept.replica).toMatch(/^[0-9a-f]{64}$/);
    const parsed = AuthTokens.parse(await readFile(old, 'utf8'));
    expect(parsed.replicaToken).toBe(kept.replica);
    expect(parsed.check(kept.replica)).toEqual({ ok: true, role: 'replica' });
    // Run again: nothing changes.
    expect(await ensureTokenFile(old)).toEqual(kept);
  });
});
