import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { DropFile } from './drop-scanner.js';
import { IngestError, describeCause } from './ingest-errors.js';
import { repairLegacyChunkSizes, type FooterPatch } from './legacy-chunk-sizes.js';
import { PARQUET_DECODER_WORKER_SOURCE } from './parquet-decoder-worker.js';

/** Row count and uncompressed size (bytes) of one row group, from the file's footer. */
export interface ParquetRowGroupInfo {
  rows: number;
  bytes: number;
}

/** Options of `ParquetDecoder.open`. */
export interface ParquetDecoderOptions {
  /** Aborting terminates the worker; the pending call rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * How long to wait for the worker's next message before declaring it hung and terminating it
   * (INGEST_CORRUPT_FILE). Decoding one row group must produce a message within this time. Default 60,000 ms.
   */
  stallTimeoutMs?: number;
}

type Reply =
  | { op: 'opened'; rowGroups: ParquetRowGroupInfo[] }
  | { op: 'batch'; rowGroup: number; ipc: Uint8Array }
  | { op: 'done'; rowGroup: number }
  | { op: 'closed'; memoryBytes: number }
  | { op: 'error'; rowGroup?: number; message: string };

const DEFAULT_STALL_TIMEOUT_MS = 60_000;
/** Healthy workers kept for the next file: starting one compiles ~4 MB of WebAssembly (~100 ms). */
const MAX_IDLE_WORKERS = 1;
/**
 * WebAssembly memory only grows: a worker that decoded a huge row group keeps that much memory for
 * its life. Keep an idle worker only below this size (bytes).
 */
const MAX_IDLE_WASM_BYTES = 256 * 1024 * 1024;
const idleWorkers: DecoderWorker[] = [];
let wasmUrl: string | undefined;

function parquetWasmUrl(): string {
  // Resolved here, not in the worker: an eval'd worker has no module location to resolve from.
  wasmUrl ??= pathToFileURL(createRequire(import.meta.url).resolve('parquet-wasm')).href;
  return wasmUrl;
}

/** Why a worker stopped answering: a trap, an exit, a stall or an abort. */
class WorkerFailure extends Error {}

/** One worker thread and the replies it has sent that nobody has taken yet. */
class DecoderWorker {
  readonly #worker: Worker;
  readonly #replies: Reply[] = [];
  #wake: (() => void) | undefined;
  #failure: Error | undefined;
  #terminated = false;

  constructor() {
    this.#worker = new Worker(PARQUET_DECODER_WORKER_SOURCE, { eval: true, workerData: { wasmUrl: parquetWasmUrl() } });
    this.#worker.on('message', (reply: Reply) => {
      this.#replies.push(reply);
      this.#notify();
    });
    this.#worker.on('error', (err) => this.#fail(new WorkerFailure(`${err.name}: ${err.message}`)));
    this.#worker.on('messageerror', (err) => this.#fail(new WorkerFailure(`unreadable message: ${err.message}`)));
    this.#worker.on('exit', (code) => {
      if (!this.#terminated) this.#fail(new WorkerFailure(`decoder thread exited with code ${code}`));
      this.#terminated = true;
      const idle = idleWorkers.indexOf(this);
      if (idle >= 0) idleWorkers.splice(idle, 1);
    });
  }

  get healthy(): boolean {
    return this.#failure === undefined && !this.#terminated;
  }

  send(message: object): void {
    this.#worker.postMessage(message);
  }

  /** The next reply; rejects on a trap, an exit, the stall timeout or an abort (then the worker is gone). */
  async next(stallTimeoutMs: number, signal: AbortSignal | undefined): Promise<Reply> {
    for (;;) {
      const reply = this.#replies.shift();
      if (reply !== undefined) return reply;
      if (this.#failure !== undefined) throw this.#failure;
      signal?.throwIfAborted();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.#fail(new WorkerFailure(`decoder made no progress for ${stallTimeoutMs} ms`));
        }, stallTimeoutMs);
        const onAbort = (): void => this.#fail(new WorkerFailure('aborted'));
        signal?.addEventListener('abort', onAbort, { once: true });
        this.#wake = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
      });
    }
  }

  ref(): void {
    this.#worker.ref();
  }

  unref(): void {
    this.#worker.unref();
  }

  terminate(): void {
    if (this.#terminated) return;
    this.#terminated = true;
    void this.#worker.terminate();
  }

  #fail(err: Error): void {
    this.#failure ??= err;
    this.terminate();
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/**
 * Decodes one Parquet file with parquet-wasm in a worker thread, one row group at a time, handing
 * back each row group as Arrow IPC stream bytes. Memory: the worker holds at most the row group it is
 * decoding; the caller decides how many it keeps.
 */
export class ParquetDecoder {
  readonly file: DropFile;
  readonly rowGroups: readonly ParquetRowGroupInfo[];
  readonly #worker: DecoderWorker;
  readonly #stallTimeoutMs: number;
  readonly #signal: AbortSignal | undefined;
  #pending: number | undefined;
  #closed = false;

  private constructor(file: DropFile, worker: DecoderWorker, rowGroups: ParquetRowGroupInfo[], options: ParquetDecoderOptions) {
    this.file = file;
    this.#worker = worker;
    this.rowGroups = rowGroups;
    this.#stallTimeoutMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    this.#signal = options.signal;
  }

  /** Starts (or reuses) a worker and reads the footer. Throws INGEST_CORRUPT_FILE naming the file. */
  static async open(file: DropFile, options: ParquetDecoderOptions = {}): Promise<ParquetDecoder> {
    const stallTimeoutMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    if (!Number.isInteger(stallTimeoutMs) || stallTimeoutMs < 1) throw new RangeError(`stallTimeoutMs must be an integer ≥ 1, got ${stallTimeoutMs}`);
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
      throw new IngestError('INGEST_SOURCE_NOT_FOUND', `${file.path} cannot be read any more: ${describeCause(err)}`, {
        cause: err,
        context: { file: file.path },
      });
    }
    const worker = idleWorkers.pop() ?? new DecoderWorker();
    worker.ref();
    try {
      worker.send({ op: 'open', path: file.path, patch });
      const reply = await worker.next(stallTimeoutMs, options.signal);
      if (reply.op === 'opened') return new ParquetDecoder(file, worker, reply.rowGroups, options);
      if (reply.op === 'error') throw corrupt(file, `cannot read the Parquet footer: ${reply.message}`);
      throw corrupt(file, `unexpected decoder reply "${reply.op}" to open`);
    } catch (err) {
      worker.terminate();
      throw translate(err, file, undefined, options.signal);
    }
  }

  /** Asks the worker to start decoding `rowGroup` (at most one request outstanding). */
  request(rowGroup: number): void {
    if (this.#pending !== undefined) throw new Error(`row group ${this.#pending} is still being decoded`);
    const info = this.rowGroups[rowGroup];
    if (info === undefined) throw new RangeError(`row group ${rowGroup} does not exist in ${this.file.path} (${this.rowGroups.length} row groups)`);
    this.#pending = rowGroup;
    // One Arrow batch per row group, so row indexes within the batch are row indexes within the group.
    this.#worker.send({ op: 'read', rowGroup, batchSize: Math.max(1, info.rows) });
  }

  /** Waits for the requested row group: its Arrow IPC stream buffers, in order. */
  async collect(): Promise<Uint8Array[]> {
    const rowGroup = this.#pending;
    if (rowGroup === undefined) throw new Error('collect() without request()');
    const buffers: Uint8Array[] = [];
    try {
      for (;;) {
        const reply = await this.#worker.next(this.#stallTimeoutMs, this.#signal);
        if (reply.op === 'batch' && reply.rowGroup === rowGroup) buffers.push(reply.ipc);
        else if (reply.op === 'done' && reply.rowGroup === rowGroup) break;
        else if (reply.op === 'error') throw corrupt(this.file, `cannot decode row group ${rowGroup}: ${reply.message}`, rowGroup);
        else throw corrupt(this.file, `unexpected decoder reply "${reply.op}" while reading row group ${rowGroup}`, rowGroup);
      }
    } catch (err) {
      this.#worker.terminate();
      throw translate(err, this.file, rowGroup, this.#signal);
    } finally {
      this.#pending = undefined;
    }
    return buffers;
  }

  /** Frees the file in the worker and keeps a healthy worker for the next file. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const worker = this.#worker;
    if (!worker.healthy || this.#pending !== undefined || idleWorkers.length >= MAX_IDLE_WORKERS) {
      worker.terminate();
      return;
    }
    try {
      worker.send({ op: 'close' });
      const reply = await worker.next(this.#stallTimeoutMs, undefined);
      if (reply.op !== 'closed') throw new Error(`unexpected decoder reply "${reply.op}" to close`);
      if (reply.memoryBytes > MAX_IDLE_WASM_BYTES || idleWorkers.length >= MAX_IDLE_WORKERS) {
        worker.terminate();
        return;
      }
      worker.unref();
      idleWorkers.push(worker);
    } catch {
      // A worker that cannot even close cleanly is not worth keeping; the file was read already.
      worker.terminate();
    }
  }
}

function corrupt(file: DropFile, problem: string, rowGroup?: number): IngestError {
  return new IngestError('INGEST_CORRUPT_FILE', `${file.path}: ${problem}`, { context: { file: file.path, rowGroup } });
}

function translate(err: unknown, file: DropFile, rowGroup: number | undefined, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted) return signal.reason;
  if (err instanceof IngestError) return err;
  if (err instanceof WorkerFailure) {
    const where = rowGroup === undefined ? 'reading the footer' : `decoding row group ${rowGroup}`;
    // A WebAssembly trap is how a Rust panic surfaces: arrow-rs hit data it did not expect.
    const what = err.message.includes('unreachable') ? `${err.message}: arrow-rs panicked on the data` : err.message;
    return new IngestError(
      'INGEST_CORRUPT_FILE',
      `${file.path}: the Parquet decoder failed ${where} (${what}); the file is corrupt or uses a layout the decoder cannot read`,
      { cause: err, context: { file: file.path, rowGroup } },
    );
  }
  return err;
}
