/**
 * Counts the modules a Node process loads (a measurement aid for cli-start-bench, not a bench).
 *
 * Preload it with `node --import <this file's URL>` and SHARDPIPE_BENCH_CENSUS_OUT=FILE: in the
 * main thread it registers itself as module hooks and, at exit, appends `cjs PATH` for every
 * module in the CommonJS cache; in the hooks thread its `load` hook appends `FORMAT URL` for every
 * `file:` module the ESM loader loads (format `module` = an ES module, `commonjs` = a CommonJS
 * module imported from ESM, which also lands in the CommonJS cache). Without the variable it does
 * nothing.
 */
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { isMainThread } from 'node:worker_threads';

/** Pass to `node --import`. */
export const MODULE_CENSUS_URL = import.meta.url;

/** What one census file says: ES modules loaded, and CommonJS modules in the cache at exit. */
export interface ModuleCensus {
  esm: string[];
  cjs: string[];
}

/** Reads a census file. */
export function parseCensus(text: string): ModuleCensus {
  const esm: string[] = [];
  const cjs: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('module ')) esm.push(line.slice('module '.length));
    else if (line.startsWith('cjs ')) cjs.push(line.slice('cjs '.length));
  }
  return { esm, cjs };
}

let out: string | undefined;

/** Hooks thread: where to append. */
export function initialize(data: { out: string }): void {
  out = data.out;
}

type NextLoad = (url: string, context: unknown) => Promise<{ format?: string | null }>;

/** Hooks thread: records every file the ESM loader loads. */
export async function load(url: string, context: unknown, nextLoad: NextLoad): Promise<{ format?: string | null }> {
  const result = await nextLoad(url, context);
  if (out !== undefined && url.startsWith('file:')) appendFileSync(out, `${result.format ?? 'unknown'} ${url}\n`);
  return result;
}

const target = isMainThread ? process.env.SHARDPIPE_BENCH_CENSUS_OUT : undefined;
if (target !== undefined && target !== '') {
  register(MODULE_CENSUS_URL, { data: { out: target } });
  const cache = createRequire(import.meta.url).cache;
  process.on('exit', () => appendFileSync(target, Object.keys(cache).map((p) => `cjs ${p}\n`).join('')));
}
