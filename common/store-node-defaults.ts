// A store node's defaults that the CLI shows in `store start --help`: here rather than in store/, so
// building the command tree (every command's start, --help) does not load the store's modules.
// store/ re-exports them where they apply (store-server.ts, partition-store.ts, http2-window.ts).

/** Request bytes a node holds at once over all calls (the in-flight budget, store/inflight-budget.ts). */
export const DEFAULT_MAX_INFLIGHT_BYTES = 256 * 1024 * 1024;

/**
 * Default LevelDB memtable size per partition. Twice LevelDB's 4 MiB default: bulk loads write
 * about 1.8× faster (fewer memtable switches and level-0 files under the same rows), for up to
 * 2 × 4 MiB more memory per partition (the memtable and the one being flushed). 16 MiB gained
 * nothing more in bench:store and cost memory.
 */
export const DEFAULT_WRITE_BUFFER_BYTES = 8 * 1024 * 1024;

/**
 * The window a node advertises unless `store start --flow-control-window` says otherwise: 16 MiB,
 * so a peer sends a 1 MiB BulkInsert in one round trip (at 1 ms of delay HTTP/2's 64 KiB caps a
 * stream at ~32 MB/s). Node's http2 grants a stream's window as soon as it opens and keeps receiving
 * into it while grpc-js has not read it, so the in-flight budget admits a call by the length its
 * first DATA frame announces, charges a waiting call the window it may fill, and resets a refused
 * stream (store/budget-interceptor.ts): a 40 × 15 MiB burst stays inside its bound with this window.
 */
export const DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024;
