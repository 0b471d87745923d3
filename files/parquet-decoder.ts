import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describeCause, reapplyYoungGenerationCap, youngGenerationCapFlags } from '../common/index.js';
import type { DataFile } from './data-file.js';
import { FileError } from './file-errors.js';
import { repairLegacyChunkSizes, type FooterPatch } from './legacy-chunk-sizes.js';
import { PARQUET_DECODER_WORKER_SOURCE } from './parquet-decoder-worker.js';

/** Row count and uncompressed size (bytes) of one row group, from the file's footer. */
export interface ParquetRowGroupInfo {
  rows: number;
  bytes: number;
}

/** Options of `ParquetDecoder.open`. */
export interface ParquetDecoderOptions {
  /** Aborting drops a queued request, or stops (and replaces) the thread running it; the pending call rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * How long a thread running this file's request may go without a message before it is declared hung
   * and terminated (FILE_CORRUPT; the pool replaces it). Time spent queued does not count. Decoding one row group must produce a message within this time. Default 60,000 ms.
   */
  stallTimeoutMs?: number;
  /**
   * Rows per decoded Arrow batch: a row group comes back as batches of at most this many rows. The
   * decoder's wasm memory holds one batch's arrays (plus the row group's compressed pages) rather than
   * the whole row group decoded, and the reader hands on smaller pieces. Default 8192.
   */
  batchRows?: number;
}

/** Options of `configureParquetDecoderPool`. */
export interface ParquetDecoderPoolOptions {
  /**
   * Decoder threads shared by every Parquet file the process reads. Each costs 70–160 MiB RSS (a V8
   * isolate plus parquet-wasm memory that never shrinks), and one decodes 2 M+ rows/s, far faster
   * than the ingest maps and writes. Default 1.
   */
  threads?: number;
  /** An idle thread is stopped after this long (ms); the next request starts one again. Default 30,000. */
  idleCloseMs?: number;
}

type Reply =
  | { op: 'opened'; rowGroups: ParquetRowGroupInfo[]; memoryBytes: number }
  | { op: 'batch'; rowGroup: number; ipc: Uint8Array }
  | { op: 'done'; rowGroup: number; memoryBytes: number }
  | { op: 'error'; rowGroup?: number; message: string }
  | { op: 'changed'; message: string };

const DEFAULT_STALL_TIMEOUT_MS = 60_000;
/**
 * Measured with bench/ingest-memory-bench.ts on a 1 GB file of 62,500-row groups: whole row groups as
 * one batch peaked at ~500 MiB RSS, 8192-row batches at ~390 MiB (wasm memory 59 → 23 MiB, smaller
 * short-lived objects on the main thread), 4096 at ~380 MiB but slower, 16,384 at ~420 MiB.
 */
const DEFAULT_BATCH_ROWS = 8192;
/**
 * WebAssembly memory only grows: a thread that decoded a huge row group keeps that much memory for
 * its life. A thread above this size (bytes) after a request is stopped; the next one starts fresh.
 */
const MAX_RETAINED_WASM_BYTES = 256 * 1024 * 1024;
/**
 * The decoder thread's V8 heap. It holds only small objects (row groups live in wasm memory, decoded
 * batches in transferred ArrayBuffers, neither counted here), but an uncapped isolate grows its young
 * generation to V8's default 3 × 16 MiB like a busy main thread. Measured with
 * bench/ingest-memory-bench.ts (see README "Performance"). A thread over the cap dies, which the pool
 * reports like any other decoder crash: the old generation is left far above what decoding uses.
 */
const DECODER_RESOURCE_LIMITS = { maxYoungGenerationSizeMb: 6, maxOldGenerationSizeMb: 128 };
let wasmUrl: string | undefined;

function parquetWasmUrl(): string {
  // Resolved here, not in the worker: an eval'd worker has no module location to resolve from.
  wasmUrl ??= pathToFileURL(createRequire(import.meta.url).resolve('parquet-wasm')).href;
  return wasmUrl;
}

/** Why a thread stopped answering: a trap, an exit or a stall. */
class WorkerFailure extends Error {}

/** One file as the decoder threads know it: any thread can (re)open it from this. */
interface FileRef {
  readonly id: number;
  readonly path: string;
  readonly patch: FooterPatch | undefined;
  closed: boolean;
}

type JobResult = { rowGroups: ParquetRowGroupInfo[] } | { buffers: Uint8Array[] };

/** One request (open or read one row group), queued until a thread is free, then run alone on it. */
interface Job {
  readonly file: FileRef;
  readonly message: { op: 'open' | 'read'; rowGroup?: number; batchSize?: number };
  readonly rowGroup: number | undefined;
  readonly stallTimeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly buffers: Uint8Array[];
  readonly resolve: (result: JobResult) => void;
  readonly reject: (err: unknown) => void;
  thread: DecoderThread | undefined;
  settled: boolean;
  /** What changed, when the thread found the file changed since it opened it (size or mtime). */
  changed: string | undefined;
  onAbort: (() => void) | undefined;
}

/** One worker thread running parquet-wasm, running one job at a time. */
class DecoderThread {
  readonly worker: Worker;
  /** Files this thread has open (so closing one reaches the right threads). */
  readonly openFiles = new Set<number>();
  job: Job | undefined;
  dead = false;
  stallTimer: NodeJS.Timeout | undefined;
  idleTimer: NodeJS.Timeout | undefined;

  constructor(readonly pool: DecoderPool) {
    this.worker = new Worker(PARQUET_DECODER_WORKER_SOURCE, { eval: true, workerData: { wasmUrl: parquetWasmUrl(), youngGenerationFlags: youngGenerationCapFlags() }, resourceLimits: DECODER_RESOURCE_LIMITS });
    this.worker.unref();
    // A worker's start sets V8's flags back to the command line's, the main thread's young-generation
    // cap too: the thread sets it again as its first statement, and again here once it runs.
    this.worker.once('online', reapplyYoungGenerationCap);
    this.worker.on('message', (reply: Reply) => pool.onReply(this, reply));
    this.worker.on('error', (err) => pool.onFailure(this, new WorkerFailure(`${err.name}: ${err.message}`)));
    this.worker.on('messageerror', (err) => pool.onFailure(this, new WorkerFailure(`unreadable message: ${err.message}`)));
    this.worker.on('exit', (code) => pool.onFailure(this, new WorkerFailure(`decoder thread exited with code ${code}`)));
  }
}

/**
 * The process's decoder threads and one FIFO queue of requests. Each reader has at most one request
 * outstanding, so FIFO serves readers in turn. A thread runs one request at a time: a trap, an exit
 * or a stall fails exactly the request it was running. Queued requests were never given to a thread,
 * so they simply run on the replacement (which reopens their files): nothing else fails.
 */
class DecoderPool {
  threads = 1;
  idleCloseMs = 30_000;
  readonly #live: DecoderThread[] = [];
  readonly #queue: Job[] = [];
  #nextFileId = 1;

  newFile(path: string, patch: FooterPatch | undefined): FileRef {
    return { id: this.#nextFileId++, path, patch, closed: false };
  }

  run(file: FileRef, message: Job['message'], stallTimeoutMs: number, signal: AbortSignal | undefined): Promise<JobResult> {
    return new Promise<JobResult>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const job: Job = {
        file, message, rowGroup: message.rowGroup, stallTimeoutMs, signal, buffers: [], resolve, reject,
        thread: undefined, settled: false, onAbort: undefined, changed: undefined,
      };
      if (signal !== undefined) {
        job.onAbort = () => this.#abort(job);
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.#queue.push(job);
      this.#pump();
    });
  }

  /** Starts idle threads up to `threads` (each stops after idleCloseMs without a request, like any idle thread). */
  prestart(): void {
    while (this.#live.length < this.threads) {
      const thread = new DecoderThread(this);
      this.#live.push(thread);
      this.#goIdle(thread);
    }
  }

  /** A request nobody waits for any more: dropped if queued; if running, it finishes and is discarded. */
  abandon(job: Promise<JobResult>, file: FileRef): void {
    void job.catch(() => {});
    const queued = this.#queue.findIndex((j) => j.file === file);
    if (queued >= 0) this.#settle(this.#queue.splice(queued, 1)[0]!, new Error('abandoned'));
  }

  /** Frees `file` in every thread that has it open (after whatever that thread is running). */
  close(file: FileRef): void {
    file.closed = true;
    for (const thread of this.#live) {
      if (thread.openFiles.delete(file.id)) thread.worker.postMessage({ op: 'close', id: file.id });
    }
  }

  onReply(thread: DecoderThread, reply: Reply): void {
    const job = thread.job;
    if (thread.dead || job === undefined) return;
    this.#armStall(thread, job);
    if (reply.op === 'batch' && reply.rowGroup === job.rowGroup && job.message.op === 'read') {
      job.buffers.push(reply.ipc);
      return;
    }
    if (reply.op === 'changed') job.changed = reply.message;
    let outcome: JobResult | Error;
    let retire = false;
    if (reply.op === 'opened' && job.message.op === 'open') {
      outcome = { rowGroups: reply.rowGroups };
      retire = reply.memoryBytes > MAX_RETAINED_WASM_BYTES;
    } else if (reply.op === 'done' && reply.rowGroup === job.rowGroup && job.message.op === 'read') {
      outcome = { buffers: job.buffers };
      retire = reply.memoryBytes > MAX_RETAINED_WASM_BYTES;
    } else if (reply.op === 'changed') {
      outcome = changedError(job);
      // The thread waits on a read that never ends: stop it.
      retire = true;
    } else if (reply.op === 'error') {
      outcome = job.rowGroup === undefined
        ? corrupt(job.file.path, `cannot read the Parquet footer: ${reply.message}`)
        : corrupt(job.file.path, `cannot decode row group ${job.rowGroup}: ${reply.message}`, job.rowGroup);
      // A wasm instance that failed a request is not trusted with the next one.
      retire = true;
    } else {
      const what = job.rowGroup === undefined ? 'to open' : `while reading row group ${job.rowGroup}`;
      outcome = corrupt(job.file.path, `unexpected decoder reply "${reply.op}" ${what}`, job.rowGroup);
      retire = true;
    }
    this.#release(thread);
    if (!(outcome instanceof Error)) {
      if (job.file.closed) thread.worker.postMessage({ op: 'close', id: job.file.id });
      else thread.openFiles.add(job.file.id);
    }
    if (retire) this.#kill(thread);
    else this.#goIdle(thread);
    this.#settle(job, outcome);
    this.#pump();
  }

  onFailure(thread: DecoderThread, failure: WorkerFailure): void {
    if (thread.dead) return;
    const job = thread.job;
    this.#kill(thread);
    if (job !== undefined) this.#settle(job, failure);
    this.#pump();
  }

  #pump(): void {
    for (;;) {
      const job = this.#queue[0];
      if (job === undefined) break;
      let thread = this.#live.find((t) => t.job === undefined);
      if (thread === undefined && this.#live.length < this.threads) {
        thread = new DecoderThread(this);
        this.#live.push(thread);
      }
      if (thread === undefined) break;
      this.#queue.shift();
      clearTimeout(thread.idleTimer);
      thread.job = job;
      job.thread = thread;
      thread.worker.ref();
      this.#armStall(thread, job);
      const { id, path, patch } = job.file;
      thread.worker.postMessage({ ...job.message, id, path, patch });
    }
    // Threads beyond a lowered `threads` go when idle.
    for (const t of this.#live.filter((t) => t.job === undefined).slice(0, Math.max(0, this.#live.length - this.threads))) this.#kill(t);
  }

  #armStall(thread: DecoderThread, job: Job): void {
    clearTimeout(thread.stallTimer);
    thread.stallTimer = setTimeout(() => {
      this.onFailure(thread, new WorkerFailure(`decoder made no progress for ${job.stallTimeoutMs} ms`));
    }, job.stallTimeoutMs);
    thread.stallTimer.unref();
  }

  #release(thread: DecoderThread): void {
    clearTimeout(thread.stallTimer);
    thread.job = undefined;
  }

  #goIdle(thread: DecoderThread): void {
    thread.worker.unref();
    thread.idleTimer = setTimeout(() => {
      if (thread.job === undefined) this.#kill(thread);
    }, this.idleCloseMs);
    thread.idleTimer.unref();
  }

  #kill(thread: DecoderThread): void {
    if (thread.dead) return;
    thread.dead = true;
    clearTimeout(thread.stallTimer);
    clearTimeout(thread.idleTimer);
    thread.job = undefined;
    const at = this.#live.indexOf(thread);
    if (at >= 0) this.#live.splice(at, 1);
    void thread.worker.terminate();
  }

  #abort(job: Job): void {
    if (job.settled) return;
    const queued = this.#queue.indexOf(job);
    if (queued >= 0) this.#queue.splice(queued, 1);
    // wasm cannot be interrupted: a thread running the aborted request is stopped (and replaced).
    if (job.thread !== undefined && job.thread.job === job) this.#kill(job.thread);
    this.#settle(job, job.signal!.reason);
    this.#pump();
  }

  #settle(job: Job, outcome: JobResult | unknown): void {
    if (job.settled) return;
    job.settled = true;
    if (job.onAbort !== undefined) job.signal?.removeEventListener('abort', job.onAbort);
    if (outcome !== null && typeof outcome === 'object' && ('rowGroups' in outcome || 'buffers' in outcome)) job.resolve(outcome as JobResult);
    else job.reject(outcome);
  }
}

const pool = new DecoderPool();

/**
 * Sets the size of the decoder thread pool shared by every Parquet read of the process (default 1
 * thread). Takes effect for the next requests.
 */
export function configureParquetDecoderPool(options: ParquetDecoderPoolOptions): void {
  if (options.threads !== undefined) {
    if (!Number.isInteger(options.threads) || options.threads < 1) throw new RangeError(`threads must be an integer ≥ 1, got ${options.threads}`);
    pool.threads = options.threads;
  }
  if (options.idleCloseMs !== undefined) {
    if (!Number.isFinite(options.idleCloseMs) || options.idleCloseMs < 0) throw new RangeError(`idleCloseMs must be ≥ 0, got ${options.idleCloseMs}`);
    pool.idleCloseMs = options.idleCloseMs;
  }
}

/**
 * Starts the decoder threads now, idle, instead of at the first request: a thread's start (its
 * isolate, compiling parquet-wasm: ~0.3 s here) then runs beside the caller's own start-up (a CLI
 * loading its modules, connecting, planning) rather than before the first row group. Threads that
 * get no request stop after the pool's idle time. Never blocks; a thread that fails to start is
 * replaced at the first request, which then reports its failure as usual.
 */
export function prestartParquetDecoders(): void {
  pool.prestart();
}

/**
 * Decodes one Parquet file with parquet-wasm on the shared decoder threads, one row group at a time,
 * handing back each row group as Arrow IPC stream bytes. Memory: a thread holds at most the row group
 * it is decoding; each decoder has at most one row group requested; the caller decides how many it keeps.
 */
export class ParquetDecoder {
  readonly file: DataFile;
  readonly rowGroups: readonly ParquetRowGroupInfo[];
  readonly #ref: FileRef;
  readonly #stallTimeoutMs: number;
  readonly #batchRows: number;
  readonly #signal: AbortSignal | undefined;
  #pending: { rowGroup: number; result: Promise<JobResult> } | undefined;
  #closed = false;

  private constructor(file: DataFile, ref: FileRef, rowGroups: ParquetRowGroupInfo[], stallTimeoutMs: number, options: ParquetDecoderOptions) {
    this.file = file;
    this.#ref = ref;
    this.rowGroups = rowGroups;
    this.#stallTimeoutMs = stallTimeoutMs;
    this.#batchRows = options.batchRows ?? DEFAULT_BATCH_ROWS;
    this.#signal = options.signal;
  }

  /** Reads the footer on a pool thread. Throws FILE_CORRUPT naming the file. */
  static async open(file: DataFile, options: ParquetDecoderOptions = {}): Promise<ParquetDecoder> {
    const stallTimeoutMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    if (!Number.isInteger(stallTimeoutMs) || stallTimeoutMs < 1) throw new RangeError(`stallTimeoutMs must be an integer ≥ 1, got ${stallTimeoutMs}`);
    const batchRows = options.batchRows ?? DEFAULT_BATCH_ROWS;
    if (!Number.isInteger(batchRows) || batchRows < 1) throw new RangeError(`batchRows must be an integer ≥ 1, got ${batchRows}`);
    options.signal?.throwIfAborted();
    let patch: FooterPatch | undefined;
    try {
      const handle = await open(file.path, 'r');
      try {
        patch = await repairLegacyChunkSizes(handle, file.sizeBytes);
      } finally {
        await handle.close();
      }
    } catch (err) {
      throw new FileError('FILE_NOT_FOUND', `${file.path} cannot be read any more: ${describeCause(err)}`, {
        cause: err,
        context: { file: file.path },
      });
    }
    const ref = pool.newFile(file.path, patch);
    try {
      const result = await pool.run(ref, { op: 'open' }, stallTimeoutMs, options.signal);
      if (!('rowGroups' in result)) throw corrupt(file.path, 'unexpected decoder reply to open');
      return new ParquetDecoder(file, ref, result.rowGroups, stallTimeoutMs, options);
    } catch (err) {
      pool.close(ref);
      throw translate(err, file, undefined, options.signal);
    }
  }

  /** Queues the decoding of `rowGroup` (at most one request outstanding). */
  request(rowGroup: number): void {
    if (this.#closed) throw new Error(`the decoder of ${this.file.path} is closed`);
    if (this.#pending !== undefined) throw new Error(`row group ${this.#pending.rowGroup} is still being decoded`);
    const info = this.rowGroups[rowGroup];
    if (info === undefined) throw new RangeError(`row group ${rowGroup} does not exist in ${this.file.path} (${this.rowGroups.length} row groups)`);
    // Batches come in row order, so the reader knows each one's row offset within the group.
    const result = pool.run(this.#ref, { op: 'read', rowGroup, batchSize: Math.max(1, Math.min(info.rows, this.#batchRows)) }, this.#stallTimeoutMs, this.#signal);
    result.catch(() => {}); // collect() reports it; a request never collected must not be unhandled
    this.#pending = { rowGroup, result };
  }

  /** Waits for the requested row group: its Arrow IPC stream buffers, in order. */
  async collect(): Promise<Uint8Array[]> {
    const pending = this.#pending;
    if (pending === undefined) throw new Error('collect() without request()');
    try {
      const result = await pending.result;
      if (!('buffers' in result)) throw corrupt(this.file.path, `unexpected decoder reply while reading row group ${pending.rowGroup}`, pending.rowGroup);
      return result.buffers;
    } catch (err) {
      throw translate(err, this.file, pending.rowGroup, this.#signal);
    } finally {
      this.#pending = undefined;
    }
  }

  /** Drops any uncollected request and frees the file in the pool's threads. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#pending !== undefined) pool.abandon(this.#pending.result, this.#ref);
    this.#pending = undefined;
    pool.close(this.#ref);
  }
}

function changedError(job: Job): FileError {
  return new FileError('FILE_CHANGED', `${job.file.path} changed while it was being read (${job.changed})`, { context: { file: job.file.path, rowGroup: job.rowGroup } });
}

function corrupt(path: string, problem: string, rowGroup?: number): FileError {
  return new FileError('FILE_CORRUPT', `${path}: ${problem}`, { context: { file: path, rowGroup } });
}

function translate(err: unknown, file: DataFile, rowGroup: number | undefined, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted) return signal.reason;
  if (err instanceof FileError) return err;
  if (err instanceof WorkerFailure) {
    const where = rowGroup === undefined ? 'reading the footer' : `decoding row group ${rowGroup}`;
    // A WebAssembly trap is how a Rust panic surfaces: arrow-rs hit data it did not expect.
    const what = err.message.includes('unreachable') ? `${err.message}: arrow-rs panicked on the data` : err.message;
    return new FileError(
      'FILE_CORRUPT',
      `${file.path}: the Parquet decoder failed ${where} (${what}); the file is corrupt or uses a layout the decoder cannot read`,
      { cause: err, context: { file: file.path, rowGroup } },
    );
  }
  return err;
}
