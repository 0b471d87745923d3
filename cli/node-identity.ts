import { randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The file in a node's --data folder that names the folder (etcd registrations carry it). */
export const NODE_IDENTITY_FILE = 'node-identity';

/**
 * The identity of a node's data folder: read from `<dataDir>/node-identity`, or made (a random
 * UUID) and written there on first use. It tells a node's own etcd registration from an earlier
 * run (taken over at once) from another process started with the same --node (refused).
 */
export async function nodeIdentity(dataDir: string): Promise<string> {
  const path = join(dataDir, NODE_IDENTITY_FILE);
  const existing = (await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  }))?.trim();
  if (existing) return existing;
  await mkdir(dataDir, { recursive: true });
  const identity = randomUUID();
  // 'wx': two processes starting on one new folder at once do not both write one.
  await writeFile(path, `${identity}\n`, { flag: 'wx', mode: 0o600 }).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  return (await readFile(path, 'utf8')).trim();
}
