// glibc's malloc gives threads that allocate at once arenas of their own (up to 8 per core) and
// keeps what a thread freed in its arena for that arena's next allocation, so a Node process whose
// thread pool, V8 helper threads and LevelDB threads all allocate holds freed memory in several
// arenas at once. Two arenas bound that. Measured with bench:ingest-memory (one 1 GB file, 3 nodes;
// README "glibc malloc arenas"): the memory the ingest child holds after its first tenth fell from
// 234–242 to 214–216 MiB in one run; its early peak is not reliably lower (259 → 247 and 253 → 255
// MiB in two runs); a store node's peak in bench:store fell 10–20 MiB; throughput within the noise.
// glibc reads the variable only when a process starts and Node 20 cannot replace itself in place
// (process.execve needs Node ≥ 23.11), so it is set for the processes shardpipe starts (`up`,
// `demo`, the Docker image) and the README asks for it where users start processes themselves.

/** The arena cap shardpipe's own child processes get unless the environment sets one. */
export const DEFAULT_MALLOC_ARENA_MAX = '2';

/**
 * The environment for a shardpipe process this one starts: this process's, with MALLOC_ARENA_MAX
 * defaulted to DEFAULT_MALLOC_ARENA_MAX when it is not set, then `extra`.
 */
export function childProcessEnv(extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
  return { MALLOC_ARENA_MAX: DEFAULT_MALLOC_ARENA_MAX, ...process.env, ...extra };
}
