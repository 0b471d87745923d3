import { setFlagsFromString } from 'node:v8';

// V8 grows a busy isolate's young generation to 2 × 16 MiB semi-spaces, 32 MiB resident in a
// long-running process. A path that allocates few objects per row (rows travel in packed buffers)
// loses little CPU to a small one, and frees short-lived large buffers sooner (a young ArrayBuffer
// that dies is freed at the next scavenge). Node cannot cap the semi-space once the process runs,
// but V8 reads the growth factor at every growth: at 1 the semi-space stays at the size it has
// (1 MiB at start; loading the entry's modules, before its first statement runs, grows it to about
// 4 MiB). Measured with bench:ingest-memory and bench:store (README "Memory").

const CAP_FLAGS = '--semi-space-growth-factor=1';
let capped = false;

/**
 * Keeps the main thread's young generation at its current size from now on. Call it first thing
 * in a process's entry. A worker thread's start sets V8's flags back to the process's command line:
 * whoever starts one calls `reapplyYoungGenerationCap` on its 'online' event.
 */
export function capYoungGeneration(): void {
  capped = true;
  setFlagsFromString(CAP_FLAGS);
}

/** The V8 flags of the cap once `capYoungGeneration` ran (undefined before): a worker thread sets them again as its first statement. */
export function youngGenerationCapFlags(): string | undefined {
  return capped ? CAP_FLAGS : undefined;
}

/** Sets the cap again after a worker thread started (a no-op unless `capYoungGeneration` ran). */
export function reapplyYoungGenerationCap(): void {
  if (capped) setFlagsFromString(CAP_FLAGS);
}
