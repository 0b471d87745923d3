/**
 * Source of the worker thread that runs parquet-wasm (arrow-rs compiled to WebAssembly).
 *
 * Why a worker: on some corrupt files arrow-rs panics, which in WebAssembly is a trap
 * (`RuntimeError: unreachable`) thrown from a wasm-bindgen task, outside any promise we could catch —
 * it would take the whole process down and leave the wasm instance unusable. In a worker the trap ends
 * only the worker, and the main thread turns it into INGEST_CORRUPT_FILE. Why source text rather than a
 * file: it then runs the same from `dist/` and under vitest (which cannot start a `.ts` worker), with
 * parquet-wasm's location resolved by the main thread and passed in.
 *
 * Protocol (structured clone; IPC buffers are transferred, not copied):
 *   → { op: 'open', path, patch? }         ← { op: 'opened', rowGroups: [{ rows, bytes }] }
 *     (patch = { footerStart, tail }: read the file with its footer replaced, see legacy-chunk-sizes.ts)
 *   → { op: 'read', rowGroup, batchSize }  ← { op: 'batch', rowGroup, ipc }* then { op: 'done', rowGroup }
 *   → { op: 'close' }                      ← { op: 'closed', memoryBytes }  (size of the wasm memory)
 *   any failure                            ← { op: 'error', rowGroup?, message }
 */
export const PARQUET_DECODER_WORKER_SOURCE = String.raw`
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { openAsBlob } = require('node:fs');

let pw;
let file;
let fileRows = 0;
const ready = import(workerData.wasmUrl).then((m) => { pw = m; });

function freeFile() {
  if (file !== undefined) {
    try { file.free(); } finally { file = undefined; }
  }
}

async function handle(msg) {
  await ready;
  if (msg.op === 'open') {
    freeFile();
    // A Blob backed by the file: parquet-wasm reads the footer and each row group's byte ranges
    // from it on demand, never the whole file.
    let blob = await openAsBlob(msg.path);
    if (msg.patch) blob = new Blob([blob.slice(0, msg.patch.footerStart), msg.patch.tail]);
    file = await pw.ParquetFile.fromFile(blob);
    const metadata = file.metadata();
    const fileMetadata = metadata.fileMetadata();
    fileRows = fileMetadata.numRows();
    fileMetadata.free();
    const rowGroups = [];
    for (let i = 0, n = metadata.numRowGroups(); i < n; i++) {
      const rg = metadata.rowGroup(i);
      rowGroups.push({ rows: rg.numRows(), bytes: rg.totalByteSize() });
      rg.free();
    }
    metadata.free();
    parentPort.postMessage({ op: 'opened', rowGroups });
  } else if (msg.op === 'read') {
    // arrow-rs caps the batch size at the file-level row count, which parquet-rs 0.3 wrote as 0:
    // then keep the default size (1024), or it would yield no rows at all.
    const options = fileRows > 0 ? { rowGroups: [msg.rowGroup], batchSize: msg.batchSize } : { rowGroups: [msg.rowGroup] };
    const stream = await file.stream(options);
    for await (const batch of stream) {
      const ipc = batch.intoIPCStream(); // a copy out of wasm memory: safe to transfer
      parentPort.postMessage({ op: 'batch', rowGroup: msg.rowGroup, ipc }, [ipc.buffer]);
    }
    parentPort.postMessage({ op: 'done', rowGroup: msg.rowGroup });
  } else if (msg.op === 'close') {
    freeFile();
    parentPort.postMessage({ op: 'closed', memoryBytes: pw.wasmMemory().buffer.byteLength });
  }
}

parentPort.on('message', (msg) => {
  handle(msg).catch((err) => {
    parentPort.postMessage({ op: 'error', rowGroup: msg.rowGroup, message: String((err && err.message) || err) });
  });
});
`;
