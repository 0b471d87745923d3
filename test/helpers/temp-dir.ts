import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh directory under the OS temp dir; `remove()` deletes it and everything in it. */
export interface TempDir {
  readonly path: string;
  /** A path inside the directory (not created). */
  sub(name: string): string;
  remove(): Promise<void>;
}

export async function makeTempDir(prefix = 'shardpipe-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    sub: (name: string) => join(path, name),
    remove: () => rm(path, { recursive: true, force: true, maxRetries: 3 }),
  };
}
