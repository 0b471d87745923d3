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
 * memoryBytes is the size of the wasm memory, which only grows.
 */
export const PARQUET_DECODER_WORKER_SOURCE = String.raw`
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { openAsBlob } = require('node:fs');

let pw;
const files = new Map(); // id → { file, rows }
const ready = import(workerData.wasmUrl).then((m) => { pw = m; });

function freeFile(id) {
  const entry = files.get(id);
  if (entry !== undefined) {
    files.delete(id);
    entry.file.free();
  }
}

async function openFile(msg) {
  const known = files.get(msg.id);
  if (known !== undefined) return known;
  // A Blob backed by the file: parquet-wasm reads the footer and each row group's byte ranges
  // from it on demand, never the whole file.
  let blob = await openAsBlob(msg.path);
  if (msg.patch) blob = new Blob([blob.slice(0, msg.patch.footerStart), msg.patch.tail]);
  const file = await pw.ParquetFile.fromFile(blob);
  let rows = 0;
  try {
    const fileMetadata = file.metadata().fileMetadata();
    rows = fileMetadata.numRows();
    fileMetadata.free();
  } catch (err) {
    file.free();
    throw err;
  }
  const entry = { file, rows };
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
