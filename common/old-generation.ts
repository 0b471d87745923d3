import { setFlagsFromString } from 'node:v8';

// A store node's JS heap is small (about 20 MiB live: its rows sit in LevelDB and in Buffers
// outside the heap) while it allocates fast, and V8 then keeps the old generation's limit some
// 20 MiB above the live size and starts marking again right after each full collection
// (`--trace-incremental-marking`: "Start (task): 21MB / 44MB"): an RF=3 node under a bulk load ran
// a mark-compact every ~200 ms (14–21 per 1M-row load, against 1–5 at RF=1), marked partly on its
// four V8 helper threads. A fixed growth factor of 3 (V8's own dynamic one ranges from 1.1 to 4)
// brought that to 4–6 and the RF=3 nodes' CPU per row down by 8 %, for 25–60 MiB more peak RSS
// (README "Store nodes' old generation"). V8 reads the flag at every limit it computes, so it can
// be set once the process runs. A worker thread's start sets V8's flags back to the command
// line's (young-generation.ts); a store node starts none.

/** The `--heap-growing-percent` a store node runs with: the old generation may grow to 3× what survived. */
export const STORE_HEAP_GROWING_PERCENT = 200;

const HEAP_GROWTH_FLAG = /^--heap[-_]growing[-_]percent\b/;

/** Whether node's own command line sets the growth factor (Node refuses it in NODE_OPTIONS): then it wins. */
export function heapGrowthFlagGiven(execArgv: readonly string[]): boolean {
  return execArgv.some((arg) => HEAP_GROWTH_FLAG.test(arg));
}

/**
 * Sets a store node's old-generation growth factor (STORE_HEAP_GROWING_PERCENT) unless node's
 * command line gave one; returns whether it did. Call it in the process that serves the store.
 */
export function widenOldGenerationGrowth(execArgv: readonly string[] = process.execArgv): boolean {
  if (heapGrowthFlagGiven(execArgv)) return false;
  setFlagsFromString(`--heap-growing-percent=${STORE_HEAP_GROWING_PERCENT}`);
  return true;
}
