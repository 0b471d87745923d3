import { describe, expect, it } from 'vitest';
import { releaseArrayBuffer } from '../../common/index.js';

describe('releaseArrayBuffer', () => {
  it('frees a buffer at once: it and every view of it read as empty afterwards', () => {
    const buffer = new ArrayBuffer(1024 * 1024);
    const view = new Uint8Array(buffer, 16, 64);
    const node = Buffer.from(buffer, 100, 10);
    view.fill(7);
    expect(releaseArrayBuffer(buffer)).toBe(true);
    expect(buffer.byteLength).toBe(0);
    expect(view.byteLength).toBe(0);
    expect(node.byteLength).toBe(0);
  });

  it('frees buffers by the next turn of the event loop: memory stays flat over far more than V8 would collect late', async () => {
    const before = process.memoryUsage().arrayBuffers;
    let most = 0;
    for (let i = 0; i < 512; i++) {
      const buffer = new ArrayBuffer(1024 * 1024);
      new Uint8Array(buffer).fill(i & 0xff);
      expect(releaseArrayBuffer(buffer)).toBe(true);
      // As a data path does: it awaits between batches.
      await new Promise((resolve) => setImmediate(resolve));
      most = Math.max(most, process.memoryUsage().arrayBuffers - before);
    }
    // 512 MiB went through, and never more than a few MiB of it at once; a collection is what
    // frees them otherwise, and nothing in this loop allocates enough of the heap to start one.
    expect(most).toBeLessThan(16 * 1024 * 1024);
  });

  it('leaves alone what it cannot free: an empty buffer, a SharedArrayBuffer, a wasm memory', () => {
    expect(releaseArrayBuffer(new ArrayBuffer(0))).toBe(false);
    const shared = new SharedArrayBuffer(64);
    expect(releaseArrayBuffer(shared)).toBe(false);
    expect(shared.byteLength).toBe(64);
    const memory = new WebAssembly.Memory({ initial: 1 });
    expect(releaseArrayBuffer(memory.buffer)).toBe(false);
    expect(memory.buffer.byteLength).toBe(65536);
  });
});
