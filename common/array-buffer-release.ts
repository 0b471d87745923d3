import { MessageChannel } from 'node:worker_threads';

/**
 * A port whose peer is closed: a message posted on it is serialized and dropped at once, so an
 * ArrayBuffer in its transfer list is detached and its memory freed right there (Node 20 has no
 * `ArrayBuffer.prototype.transfer`).
 */
let sink: MessageChannel | undefined;

/**
 * Frees an ArrayBuffer's memory now (by the next turn of the event loop: the dropped message goes
 * then) instead of at the garbage collection that finds it dead. For
 * large short-lived buffers that V8 keeps for a long time: one that outlived two young-generation
 * collections waits for a full one, which V8 starts only after ~64 MiB of such memory, and glibc
 * keeps the freed pages of its arenas. Afterwards the buffer (and every view of it) has length 0.
 * Only for a buffer nothing reads any more; a buffer that cannot be transferred (a WebAssembly
 * memory's, a SharedArrayBuffer) is left to the GC. Returns whether it was freed.
 */
export function releaseArrayBuffer(buffer: ArrayBufferLike): boolean {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength === 0) return false;
  if (sink === undefined) {
    sink = new MessageChannel();
    sink.port2.close();
    sink.port1.unref();
  }
  try {
    sink.port1.postMessage(null, [buffer]);
  } catch {
    // Not transferable (e.g. a wasm memory's buffer): the GC frees it as before.
    return false;
  }
  return buffer.byteLength === 0;
}
