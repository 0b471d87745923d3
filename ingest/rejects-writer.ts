import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Reject } from './row-mapper.js';

/**
 * Writes rejected rows as NDJSON, one object per line:
 * `{"file":…,"rowGroup":…,"row":…,"key":"<hex>"|null,"reason":…}`.
 * `write` waits while the file stream's buffer is full, so a flood of rejects cannot pile up in memory.
 * Not safe for concurrent `write` calls: await each one (the data path is sequential per file).
 */
export class RejectsWriter {
  /** Absolute path of the rejects file. */
  readonly path: string;
  #stream: WriteStream;
  #count = 0;
  #error: Error | undefined;
  #closing: Promise<void> | undefined;

  private constructor(path: string, stream: WriteStream) {
    this.path = path;
    this.#stream = stream;
    stream.on('error', (err) => {
      this.#error ??= err;
    });
  }

  /**
   * Creates (or truncates) the file, creating its folder if needed, and resolves once it is open.
   * With `append`, keeps what an earlier attempt wrote (a resumed ingest continues the file).
   */
  static async open(path: string, options: { append?: boolean } = {}): Promise<RejectsWriter> {
    const absolute = resolve(path);
    await mkdir(dirname(absolute), { recursive: true });
    const stream = createWriteStream(absolute, { flags: options.append ? 'a' : 'w', encoding: 'utf8' });
    await once(stream, 'open');
    return new RejectsWriter(absolute, stream);
  }

  /** Rejects written so far. */
  get count(): number {
    return this.#count;
  }

  /** Appends rejects; resolves when the stream can take more (honours back-pressure). */
  async write(rejects: readonly Reject[]): Promise<void> {
    if (this.#closing !== undefined) throw new Error(`RejectsWriter for ${this.path} is closed`);
    if (this.#error !== undefined) throw this.#error;
    if (rejects.length === 0) return;
    let chunk = '';
    for (const r of rejects) {
      chunk += `${JSON.stringify({ file: r.file, rowGroup: r.rowGroup, row: r.row, key: r.keyHex ?? null, reason: r.reason })}\n`;
    }
    this.#count += rejects.length;
    if (!this.#stream.write(chunk)) await this.#drained();
  }

  /** Flushes and closes the file. Idempotent; rethrows a write error that happened in the background. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (!this.#stream.destroyed) {
        this.#stream.end();
        await once(this.#stream, 'close').catch(() => undefined);
      }
      if (this.#error !== undefined) throw this.#error;
    })();
    return this.#closing;
  }

  async #drained(): Promise<void> {
    // 'error' rejects the once() promise, 'drain' resolves it; either way listeners are removed.
    await once(this.#stream, 'drain');
  }
}
