/** Options of BatchBufferPool. */
export interface BatchBufferPoolOptions {
  /** Buffers kept for reuse at most; the rest go to the GC. Default 8. */
  maxFree?: number;
  /** Largest buffer kept for reuse, in bytes; larger ones are left to the GC. Default 4 MiB. */
  maxBytes?: number;
}

/**
 * Reuses the buffers packed batches are built in (ingest's mapped batches, the client's encoded
 * BulkInsert requests). A batch lives until the nodes acknowledge it, long enough for V8 to move its ArrayBuffer to the old generation, where a dead one waits for
 * a full collection (V8 starts one only after ~64 MiB of external growth): a fresh buffer per
 * batch meant one ~1 MiB allocation per 8,192 rows for the GC. A buffer given back once its batch
 * is acknowledged is taken again by a later batch.
 *
 * Not shared between threads. A buffer must be given back only once nothing reads it any more.
 */
export class BatchBufferPool {
  readonly #free: Buffer[] = [];
  /** Allocations handed out and not given back: only these are taken back, each once. */
  readonly #out = new WeakSet<ArrayBufferLike>();
  readonly #maxFree: number;
  readonly #maxBytes: number;

  constructor(options: BatchBufferPoolOptions = {}) {
    const maxFree = options.maxFree ?? 8;
    const maxBytes = options.maxBytes ?? 4 * 1024 * 1024;
    if (!Number.isInteger(maxFree) || maxFree < 0) throw new RangeError(`maxFree must be an integer ≥ 0, got ${maxFree}`);
    if (!Number.isInteger(maxBytes) || maxBytes < 0) throw new RangeError(`maxBytes must be an integer ≥ 0, got ${maxBytes}`);
    this.#maxFree = maxFree;
    this.#maxBytes = maxBytes;
  }

  /** Buffers waiting to be taken again. */
  get freeCount(): number {
    return this.#free.length;
  }

  /**
   * A buffer of exactly `bytes` bytes (contents undefined): a view of a free buffer of at least that
   * size and at most twice it (so a small batch does not pin a large buffer), else a new one.
   */
  take(bytes: number): Buffer {
    if (!Number.isInteger(bytes) || bytes < 0) throw new RangeError(`bytes must be an integer ≥ 0, got ${bytes}`);
    const free = this.#free;
    for (let i = free.length - 1; i >= 0; i--) {
      const buf = free[i]!;
      if (buf.byteLength >= bytes && buf.byteLength <= 2 * bytes) {
        free[i] = free[free.length - 1]!;
        free.pop();
        this.#out.add(buf.buffer);
        return buf.subarray(0, bytes);
      }
    }
    const fresh = Buffer.allocUnsafeSlow(bytes);
    this.#out.add(fresh.buffer);
    return fresh;
  }

  /**
   * Hands back a buffer `take` returned (its whole allocation is reused). Anything else, and a
   * buffer given back twice, is ignored: two batches must never share memory.
   */
  give(buf: Buffer): void {
    const whole = buf.buffer;
    if (!this.#out.has(whole)) return;
    this.#out.delete(whole);
    if (this.#free.length < this.#maxFree && whole.byteLength > 0 && whole.byteLength <= this.#maxBytes) this.#free.push(Buffer.from(whole, 0, whole.byteLength));
  }
}
