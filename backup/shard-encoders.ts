import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { reapplyYoungGenerationCap } from '../common/index.js';
import { RangeDigest, type PackedRows } from '../store/index.js';
import type { ShardStreamStats } from './parquet-shard-stream.js';
import type { ShardFileMetadata } from './shard-format.js';

/** Messages to an encoder thread (shard-encoder-worker.ts); each names its session (one shard). */
export type EncoderRequest =
  | { op: 'start'; session: number; backupId: string; shard: number; rangeStart: string; rangeEnd: string; rowGroupRows: number | undefined }
  /** One packed batch in one transferred buffer: meta, then lengths, then data. */
  | { op: 'batch'; session: number; buffer: ArrayBuffer; count: number; metaBytes: number; lengthsBytes: number }
  | { op: 'end'; session: number }
  | { op: 'abort'; session: number }
  /** Output bytes the writer has taken. */
  | { op: 'ack'; session: number; bytes: number };

/** Messages from an encoder thread. */
export type EncoderReply =
  | { op: 'ready' }
  /** An input batch the encoder has taken (its bytes leave the writer's window). */
  | { op: 'taken'; session: number; bytes: number }
  | { op: 'chunk'; session: number; buffer: ArrayBuffer }
  | { op: 'done'; session: number; rows: number; digest: string; count: number; contentHash: string | undefined }
  | { op: 'error'; session: number; message: string; stack: string | undefined };

/** Options of `ShardEncoders`. */
export interface ShardEncodersOptions {
  /** Threads at most, one shard each at a time: the backup's parallelism (shard jobs at once). 1–64. */
  threads: number;
  /** The thread's script. Default: shard-encoder-worker.js beside this module. */
  workerUrl?: URL;
}

/** Packed batch bytes sent to a thread and not yet taken, beyond which the scan waits. */
const INPUT_WINDOW_BYTES = 16 * 1024 * 1024;
const DEFAULT_WORKER_URL = new URL('./shard-encoder-worker.js', import.meta.url);

/** One encoder thread; `ready` once its modules are loaded. */
class EncoderThread {
  readonly worker: Worker;
  readonly ready: Promise<void>;
  dead = false;

  constructor(url: URL) {
    this.worker = new Worker(url);
    this.worker.unref();
    // A worker's start sets V8's flags back to the command line's, the main thread's young-generation cap too.
    this.worker.once('online', reapplyYoungGenerationCap);
    this.ready = new Promise((resolve, reject) => {
      const onMessage = (m: EncoderReply): void => {
        if (m.op !== 'ready') return;
        this.worker.off('message', onMessage);
        resolve();
      };
      this.worker.on('message', onMessage);
      this.worker.once('error', reject);
      this.worker.once('exit', (code) => reject(new Error(`a backup encoder thread exited with code ${code} before it was ready`)));
    });
    this.ready.catch(() => undefined);
    this.worker.on('error', () => (this.dead = true));
    this.worker.on('exit', () => (this.dead = true));
  }
}

/**
 * Worker threads that encode backup shard files (zstd Parquet, parquet-wasm) off the main thread, so
 * shards written at once encode on as many cores while the main thread only receives the scan. A
 * shard's packed scan batches go to one thread in transferred buffers (one copy into each, none back);
 * the checksum is computed there from the same bytes. Bounded both ways: the scan waits while 16 MiB
 * of batches are not yet taken, the encoder while 16 MiB of file bytes are not yet written.
 */
export class ShardEncoders {
  private readonly threads: number;
  private readonly url: URL;
  private readonly idle: EncoderThread[] = [];
  private readonly waiting: Array<{ resolve: (thread: EncoderThread) => void; reject: (err: unknown) => void }> = [];
  private live = 0;
  private sessions = 0;
  private closed = false;

  constructor(options: ShardEncodersOptions) {
    if (!Number.isInteger(options.threads) || options.threads < 1 || options.threads > 64) throw new RangeError(`threads must be 1–64, got ${options.threads}`);
    this.threads = options.threads;
    this.url = options.workerUrl ?? DEFAULT_WORKER_URL;
  }

  /**
   * Whether the default thread script is there: it is in the built package (dist/), not beside the
   * TypeScript sources a test runner loads; without it, shards are encoded on the calling thread.
   */
  static available(): boolean {
    return existsSync(fileURLToPath(DEFAULT_WORKER_URL));
  }

  /**
   * The bytes of one shard file of `source`'s rows (as packedParquetShardStream writes it), encoded
   * on a thread of the pool (waiting for a free one). `stats` is final once the bytes have ended.
   * A failing source fails the stream with its own error; a consumer that stops early stops the thread's work.
   */
  encode(source: AsyncIterable<PackedRows>, metadata: ShardFileMetadata, stats: ShardStreamStats, options: { rowGroupRows?: number; signal?: AbortSignal } = {}): AsyncIterable<Uint8Array> {
    return { [Symbol.asyncIterator]: () => this.run(source, metadata, stats, options) };
  }

  /**
   * Starts every thread now, to wait idle: a thread's start-up (its modules and parquet-wasm,
   * 1.4–1.6 s measured on a busy 2-core machine) then runs while the caller plans and submits, not
   * before the first shard's scan. For a process that backs up right away; a long-running worker
   * starts them as shards come.
   */
  prestart(): void {
    while (!this.closed && this.live < this.threads) {
      this.live++;
      this.idle.push(new EncoderThread(this.url));
    }
  }

  /** Stops the idle threads and, as they come back, the busy ones. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const idle = this.idle.splice(0);
    this.live -= idle.length;
    await Promise.all(idle.map((t) => t.worker.terminate()));
  }

  private async *run(source: AsyncIterable<PackedRows>, metadata: ShardFileMetadata, stats: ShardStreamStats, options: { rowGroupRows?: number; signal?: AbortSignal }): AsyncGenerator<Uint8Array> {
    const thread = await this.acquire();
    const { worker } = thread;
    const session = ++this.sessions;
    const outbox: Uint8Array[] = [];
    let finished: Extract<EncoderReply, { op: 'done' }> | undefined;
    let failure: { error: unknown } | undefined;
    let sourceFailure: { error: unknown } | undefined;
    let inFlight = 0;
    let stopped = false;
    let wake: (() => void) | undefined;
    let wakePump: (() => void) | undefined;
    const notify = (): void => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    const onMessage = (m: EncoderReply): void => {
      if (m.op === 'ready' || m.session !== session) return;
      if (m.op === 'taken') {
        inFlight -= m.bytes;
        const w = wakePump;
        wakePump = undefined;
        w?.();
        return;
      }
      if (m.op === 'chunk') outbox.push(new Uint8Array(m.buffer));
      else if (m.op === 'done') finished = m;
      else failure ??= { error: new Error(`backup encoder thread: ${m.message}`) };
      notify();
    };
    const onExit = (code: number): void => {
      failure ??= { error: new Error(`a backup encoder thread exited with code ${code} while writing shard ${metadata.shard}`) };
      notify();
    };
    const onError = (err: Error): void => {
      failure ??= { error: err };
      notify();
    };
    worker.on('message', onMessage);
    worker.on('exit', onExit);
    worker.on('error', onError);
    worker.ref();
    const send = (request: EncoderRequest, transfer?: ArrayBuffer[]): void => {
      if (!thread.dead) worker.postMessage(request, transfer);
    };
    send({ op: 'start', session, backupId: metadata.backupId, shard: metadata.shard, rangeStart: metadata.rangeStart.toString('hex'), rangeEnd: metadata.rangeEnd.toString('hex'), rowGroupRows: options.rowGroupRows });
    const pump = (async () => {
      for await (const rows of source) {
        if (stopped) return;
        options.signal?.throwIfAborted();
        const batch = transferable(rows);
        inFlight += batch.buffer.byteLength;
        send({ op: 'batch', session, ...batch }, [batch.buffer]);
        while (inFlight > INPUT_WINDOW_BYTES && !stopped && !thread.dead) await new Promise<void>((resolve) => (wakePump = resolve));
        if (stopped) return;
      }
      send({ op: 'end', session });
    })().catch((error: unknown) => {
      // The scan's own error is the shard's failure, whatever the thread says after being stopped.
      sourceFailure = { error };
      send({ op: 'abort', session });
      notify();
    });
    try {
      for (;;) {
        if (sourceFailure) throw sourceFailure.error;
        const chunk = outbox.shift();
        if (chunk !== undefined) {
          send({ op: 'ack', session, bytes: chunk.byteLength });
          yield chunk;
          continue;
        }
        if (failure) throw failure.error;
        if (finished) {
          stats.rows = finished.rows;
          stats.digest.merge(RangeDigest.fromHex(finished.digest, finished.count));
          stats.contentHash = finished.contentHash;
          return;
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      stopped = true;
      wakePump?.();
      const settled = finished !== undefined || failure !== undefined;
      if (!settled) {
        send({ op: 'abort', session });
        // The thread answers an abort at its next batch or chunk: it is free once it has.
        while (finished === undefined && failure === undefined && !thread.dead) await new Promise<void>((resolve) => (wake = resolve));
      }
      worker.off('message', onMessage);
      worker.off('exit', onExit);
      worker.off('error', onError);
      worker.unref();
      void pump;
      this.release(thread);
    }
  }

  private async acquire(): Promise<EncoderThread> {
    if (this.closed) throw new Error('the backup encoders are closed');
    const idle = this.idle.pop();
    if (idle !== undefined) return this.whenReady(idle);
    if (this.live < this.threads) {
      this.live++;
      return this.whenReady(new EncoderThread(this.url));
    }
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  /** The thread once its modules are loaded (a prestarted one may still be loading); one that failed to start is let go. */
  private async whenReady(thread: EncoderThread): Promise<EncoderThread> {
    try {
      await thread.ready;
    } catch (err) {
      this.live--;
      void thread.worker.terminate();
      throw err;
    }
    return thread;
  }

  private release(thread: EncoderThread): void {
    if (thread.dead || this.closed) {
      this.live--;
      void thread.worker.terminate();
      // A waiting shard gets a fresh thread in its place.
      const next = this.waiting.shift();
      if (next !== undefined) this.acquire().then(next.resolve, next.reject);
      return;
    }
    const next = this.waiting.shift();
    if (next !== undefined) next.resolve(thread);
    else this.idle.push(thread);
  }
}

/** A packed batch copied once into one buffer to transfer: meta first (its u64 words stay aligned), then lengths, then data. */
function transferable(rows: PackedRows): Omit<Extract<EncoderRequest, { op: 'batch' }>, 'op' | 'session'> {
  const { lengths, data, meta } = rows.toMessage();
  // Its own memory, not zero-filled (allocUnsafeSlow never hands out a slice of the shared pool): it is transferred.
  const bytes = Buffer.allocUnsafeSlow(meta.length + lengths.length + data.length);
  bytes.set(meta, 0);
  bytes.set(lengths, meta.length);
  bytes.set(data, meta.length + lengths.length);
  return { buffer: bytes.buffer as ArrayBuffer, count: rows.count, metaBytes: meta.length, lengthsBytes: lengths.length };
}
