import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';

/**
 * Joins the NDJSON rejects files in `partsDir` (in name order) into the one file `target`, then
 * removes `partsDir`. Streams, so memory does not depend on how many rows were rejected. Safe to run
 * again after a crash at any point: the join is written beside the target and renamed over it, and
 * the parts go only after that; once they are gone, an existing target is the finished join. With
 * neither, `target` is created empty, so a report can always point at it.
 */
export async function mergeRejects(partsDir: string, target: string, options: { signal?: AbortSignal } = {}): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(partsDir)).filter((n) => n.endsWith('.ndjson')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (await exists(target)) return;
    names = [];
  }
  await mkdir(dirname(target), { recursive: true });
  const partial = `${target}.partial`;
  const out = createWriteStream(partial);
  try {
    // One pipeline over all parts: a pipeline per part would leave its listeners on `out`.
    await pipeline(
      async function* () {
        for (const name of names) yield* createReadStream(join(partsDir, name));
      },
      out,
      { signal: options.signal },
    );
  } catch (err) {
    out.destroy();
    await rm(partial, { force: true });
    throw err;
  }
  // Durable before the parts go: they are the only other copy.
  const handle = await open(partial, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(partial, target);
  await rm(partsDir, { recursive: true, force: true });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
