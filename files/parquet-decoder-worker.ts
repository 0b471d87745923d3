/**
 * Source of the worker thread that runs parquet-wasm (arrow-rs compiled to WebAssembly).
 *
 * Why a worker: on some corrupt files arrow-rs panics, which in WebAssembly is a trap
 * (`RuntimeError: unreachable`) thrown from a wasm-bindgen task, outside any promise we could catch —
 * it would take the whole process down and leave the wasm instance unusable. In a worker the trap ends
 * only the worker, and the main thread turns it into FILE_CORRUPT. Why source text rather than a
 * file: it then runs the same from `dist/` and under vitest (which cannot start a `.ts` worker), with
 * parquet-wasm's location resolved by the main thread and passed in.
 *
 * One thread serves every file of the process (a pool, see parquet-decoder.ts): it keeps each file
 * open by the id the main thread gave it, and handles messages strictly one after another. The main
 * thread sends it one request at a time (open or read) and waits for that request's last reply, so a
 * trap, an exit or a stall belongs to exactly that request. A `read` carries the path too: a thread
 * that does not have the file open (a replacement for a dead one) opens it first.
 *
 * Protocol (structured clone; IPC buffers are transferred, not copied):
 *   → { op: 'open', id, path, patch? }                   ← { op: 'opened', rowGroups: [{ rows, bytes }], memoryBytes }
 *     (patch = { footerStart, tail }: read the file with its footer replaced, see legacy-chunk-sizes.ts)
 *   → { op: 'read', id, path, patch?, rowGroup, batchSize } ← { op: 'batch', rowGroup, ipc }* then { op: 'done', rowGroup, memoryBytes }
 *   → { op: 'close', id }                                (no reply; frees the file)
 *   any failure                                          ← { op: 'error', rowGroup?, message }
 *   a read finding the file changed since it was opened  ← { op: 'changed', message } (the thread then waits to be stopped)
 * memoryBytes is the size of the wasm memory, which only grows.
 */
export const PARQUET_DECODER_WORKER_SOURCE = String.raw`
'use strict';
const { parentPort, workerData, MessageChannel } = require('node:worker_threads');
const { openAsBlob } = require('node:fs');
const { open } = require('node:fs/promises');

// This thread's start set V8's flags back to the command line's: set the main thread's
// young-generation cap again (common/young-generation.ts) before the main thread grows it.
if (workerData.youngGenerationFlags) require('node:v8').setFlagsFromString(workerData.youngGenerationFlags);

let pw;
const files = new Map(); // id → { file, rows }

// File ranges read for the request running now. parquet-wasm copies each into wasm memory, so once
// the request is done they are dead: they are freed then (transferred to a port whose peer is
// closed, which detaches and drops them, common/array-buffer-release.ts) rather than at this
// isolate's next full collection, which its few small objects put off until ~64 MiB of them piled up.
let reads = [];
const sink = new MessageChannel();
sink.port2.close();
sink.port1.unref();
function releaseReads() {
  for (const buffer of reads) {
    try {
      sink.port1.postMessage(null, [buffer]);
    } catch (err) {
      // Not transferable any more: the GC frees it as before.
    }
  }
  reads = [];
}
const ready = import(workerData.wasmUrl).then((m) => { pw = m; });

function freeFile(id) {
  const entry = files.get(id);
  if (entry !== undefined) {
    files.delete(id);
    entry.file.free();
    if (entry.handle !== undefined) void entry.handle.close().catch(() => {});
  }
}

// What parquet-wasm's ParquetFile.fromFile uses of a Blob (size, slice, arrayBuffer), read straight
// from a file handle: each range is one read into one buffer of its size. A Blob from openAsBlob
// reads in chunks joined into another copy, which kept a second malloc arena of 17–49 MiB of file
// bytes in bench:ingest-memory (files/README.md). Like that Blob, it refuses a file modified since
// it was opened: each read checks size and modification time against the open's.
class FileRanges {
  constructor(handle, start, end, opened) {
    this.handle = handle;
    this.start = start;
    this.end = end;
    this.opened = opened;
  }
  get size() {
    return this.end - this.start;
  }
  slice(from, to) {
    const size = this.end - this.start;
    // Blob.slice semantics: negative offsets count from the end; both are clamped to the range.
    const a = from === undefined ? 0 : from < 0 ? Math.max(0, size + from) : Math.min(from, size);
    const b = to === undefined ? size : to < 0 ? Math.max(0, size + to) : Math.min(to, size);
    return new FileRanges(this.handle, this.start + a, this.start + Math.max(a, b), this.opened);
  }
  async arrayBuffer() {
    const now = await this.handle.stat();
    if (now.size !== this.opened.size || now.mtimeMs !== this.opened.mtimeMs) {
      const message = 'size ' + this.opened.size + ' → ' + now.size + ' bytes, modified ' + new Date(this.opened.mtimeMs).toISOString() + ' → ' + new Date(now.mtimeMs).toISOString();
      // parquet-wasm would turn a failed read into a trap reported as a corrupt file: tell the pool
      // instead, which fails the request with FILE_CHANGED and stops this thread, and never answer.
      parentPort.postMessage({ op: 'changed', message });
      return new Promise(() => {});
    }
    const bytes = this.end - this.start;
    const buffer = new ArrayBuffer(bytes);
    reads.push(buffer);
    for (let done = 0; done < bytes; ) {
      const { bytesRead } = await this.handle.read(new Uint8Array(buffer, done), 0, bytes - done, this.start + done);
      if (bytesRead === 0) throw new Error('the file ended early: it changed while being read');
      done += bytesRead;
    }
    return buffer;
  }
}

async function openFile(msg) {
  const known = files.get(msg.id);
  if (known !== undefined) return known;
  // parquet-wasm reads the footer and each row group's byte ranges on demand, never the whole file.
  let blob;
  let handle;
  if (msg.patch) {
    const whole = await openAsBlob(msg.path);
    blob = new Blob([whole.slice(0, msg.patch.footerStart), msg.patch.tail]);
  } else {
    handle = await open(msg.path, 'r');
    try {
      const opened = await handle.stat();
      blob = new FileRanges(handle, 0, opened.size, opened);
    } catch (err) {
      void handle.close().catch(() => {});
      throw err;
    }
  }
  let file;
  try {
    file = await pw.ParquetFile.fromFile(blob);
  } catch (err) {
    if (handle !== undefined) void handle.close().catch(() => {});
    throw err;
  }
  let rows = 0;
  try {
    const fileMetadata = file.metadata().fileMetadata();
    rows = fileMetadata.numRows();
    fileMetadata.free();
  } catch (err) {
    file.free();
    if (handle !== undefined) void handle.close().catch(() => {});
    throw err;
  }
  const entry = { file, rows, handle };
  files.set(msg.id, entry);
  return entry;
}

function memoryBytes() {
  return pw.wasmMemory().buffer.byteLength;
}

async function handle(msg) {
  await ready;
  if (msg.op === 'open') {
    const { file } = await openFile(msg);
    const metadata = file.metadata();
    const rowGroups = [];
    for (let i = 0, n = metadata.numRowGroups(); i < n; i++) {
      const rg = metadata.rowGroup(i);
      rowGroups.push({ rows: rg.numRows(), bytes: rg.totalByteSize() });
      rg.free();
    }
    metadata.free();
    releaseReads();
    parentPort.postMessage({ op: 'opened', rowGroups, memoryBytes: memoryBytes() });
  } else if (msg.op === 'read') {
    const { file, rows } = await openFile(msg);
    // arrow-rs caps the batch size at the file-level row count, which parquet-rs 0.3 wrote as 0:
    // then keep the default size (1024), or it would yield no rows at all.
    const options = rows > 0 ? { rowGroups: [msg.rowGroup], batchSize: msg.batchSize } : { rowGroups: [msg.rowGroup] };
    const stream = await file.stream(options);
    for await (const batch of stream) {
      const ipc = batch.intoIPCStream(); // a copy out of wasm memory: safe to transfer
      parentPort.postMessage({ op: 'batch', rowGroup: msg.rowGroup, ipc }, [ipc.buffer]);
    }
    releaseReads();
    parentPort.postMessage({ op: 'done', rowGroup: msg.rowGroup, memoryBytes: memoryBytes() });
  } else if (msg.op === 'close') {
    freeFile(msg.id);
  }
}

// Strictly one message after another: a close sent while a read runs waits for it.
let chain = Promise.resolve();
parentPort.on('message', (msg) => {
  chain = chain.then(() => handle(msg)).catch((err) => {
    if (msg.op === 'close') return; // nobody waits for a close
    parentPort.postMessage({ op: 'error', rowGroup: msg.rowGroup, message: String((err && err.message) || err) });
  });
});
`;
