import { randomBytes } from 'node:crypto';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Table, Utf8, makeData, makeVector, tableToIPC } from 'apache-arrow';
import { ClassicLevel } from 'classic-level';
import * as parquet from 'parquet-wasm';
import { createRowMapper, readRecordBatches, type DropFile } from '../ingest/index.js';

// The rows the ingest benchmarks generate, and the in-process limit they compare against.
//
// Column `id` holds 16-byte keys (fixed-width strings `k000000000000042`, which sort as they count),
// column `payload` 100-byte values (incompressible base64 text).

export const KEY_BYTES = 16;
export const VALUE_BYTES = 100;
/** Rows per Parquet row group. */
export const ROW_GROUP_ROWS = 62_500;
export const KEY_COLUMN = 'id';
export const VALUE_COLUMN = 'payload';

// Values are 100-character windows of one random base64 text, so Parquet's snappy and LevelDB's
// block compression see (nearly) incompressible data without generating 100 MB of random bytes.
const VALUE_POOL = Buffer.from(randomBytes(768 * 1024).toString('base64'), 'latin1');
const VALUE_SLOTS = Math.floor(VALUE_POOL.length / VALUE_BYTES);

/** The i-th value: a 100-byte window of the random base64 text (a view, not a copy). */
export function valueBytes(i: number): Buffer {
  const slot = (i % VALUE_SLOTS) * VALUE_BYTES;
  return VALUE_POOL.subarray(slot, slot + VALUE_BYTES);
}

/** The i-th key: `k` and i in 15 digits, 16 ASCII bytes, so string order is row order. */
export function keyText(i: number): string {
  return `k${String(i).padStart(KEY_BYTES - 1, '0')}`;
}

/** Keys cutting the rows into `partitions` equal ranges (fewer for tiny runs: no key twice). */
export function splitKeys(rows: number, partitions: number): string[] {
  const keys: string[] = [];
  for (let p = 1; p < partitions; p++) {
    const key = keyText(Math.floor((p * rows) / partitions));
    if (keys.at(-1) !== key) keys.push(key);
  }
  return keys;
}

/** Part files of the benches' drop (`writeDrop`). */
export const DROP_FILES = 8;

/** A drop `writeDrop` wrote. */
export interface Drop {
  dir: string;
  files: number;
  bytesOnDisk: number;
}

/** Rows [from, to) as Arrow IPC stream bytes: plain Utf8 columns, as Spark's strings read back. */
function rowsIpc(from: number, to: number): Uint8Array {
  const n = to - from;
  const ids = Buffer.allocUnsafe(n * KEY_BYTES);
  const payloads = Buffer.allocUnsafe(n * VALUE_BYTES);
  const idOffsets = new Int32Array(n + 1);
  const payloadOffsets = new Int32Array(n + 1);
  for (let j = 0; j < n; j++) {
    const i = from + j;
    ids.write(keyText(i), j * KEY_BYTES, 'latin1');
    const slot = (i % VALUE_SLOTS) * VALUE_BYTES;
    VALUE_POOL.copy(payloads, j * VALUE_BYTES, slot, slot + VALUE_BYTES);
    idOffsets[j + 1] = (j + 1) * KEY_BYTES;
    payloadOffsets[j + 1] = (j + 1) * VALUE_BYTES;
  }
  const utf8 = (data: Buffer, valueOffsets: Int32Array) => makeVector(makeData({ type: new Utf8(), length: n, nullCount: 0, valueOffsets, data }));
  return tableToIPC(new Table({ [KEY_COLUMN]: utf8(ids, idOffsets), [VALUE_COLUMN]: utf8(payloads, payloadOffsets) }), 'stream');
}

function writerProperties(): parquet.WriterProperties {
  return new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.SNAPPY).setMaxRowGroupSize(ROW_GROUP_ROWS).build();
}

/** Parquet bytes (snappy, parquet-wasm) of rows [from, to), built in memory: for small files. */
export function parquetBytes(from: number, to: number): Uint8Array {
  return parquet.writeParquet(parquet.Table.fromIPCStream(rowsIpc(from, to)), writerProperties());
}

/**
 * Writes rows [0, rows) as one snappy Parquet file, a row group at a time: memory stays at a few row
 * groups whatever the file size. Resolves the bytes written.
 */
/** Rows [0, rows) as DROP_FILES sorted part files the way Spark writes them (keys ascending across files), `.crc` files, `_SUCCESS`. */
export async function writeDrop(dir: string, rows: number): Promise<Drop> {
  await mkdir(dir, { recursive: true });
  const files = Math.min(DROP_FILES, rows);
  let bytesOnDisk = 0;
  for (let f = 0; f < files; f++) {
    const from = Math.floor((f * rows) / files);
    const to = Math.floor(((f + 1) * rows) / files);
    const name = `part-${String(f).padStart(5, '0')}-5b2e9c1d-0000-4000-8000-000000000000-c000.snappy.parquet`;
    const bytes = parquetBytes(from, to);
    await writeFile(join(dir, name), bytes);
    await writeFile(join(dir, `.${name}.crc`), 'crc');
    bytesOnDisk += bytes.byteLength;
  }
  await writeFile(join(dir, '_SUCCESS'), '');
  return { dir, files, bytesOnDisk };
}

export async function writeParquetStreamed(path: string, rows: number): Promise<number> {
  let next = 0;
  // parquet-wasm pulls its input as fast as it can; the output, written one chunk after another
  // below, is what holds the pace (a row group's bytes come out as the next one goes in).
  const source = new ReadableStream<parquet.RecordBatch>(
    {
      pull(controller) {
        if (next >= rows) {
          controller.close();
          return;
        }
        const to = Math.min(rows, next + ROW_GROUP_ROWS);
        const table = parquet.Table.fromIPCStream(rowsIpc(next, to));
        controller.enqueue(table.recordBatch(0)!);
        table.free();
        next = to;
      },
    },
    { highWaterMark: 1 },
  );
  const output = await parquet.transformParquetStream(source, writerProperties());
  const handle = await open(path, 'w');
  let bytes = 0;
  try {
    for await (const chunk of output as ReadableStream<Uint8Array>) {
      await handle.write(chunk);
      bytes += chunk.byteLength;
    }
  } finally {
    await handle.close();
  }
  return bytes;
}

export interface WriteFigures {
  rows: number;
  ms: number;
  rowsPerSec: number;
  /** Key plus value bytes per second, 1 MB = 10^6 B. */
  mbPerSec: number;
}

export function writeFigures(rows: number, ms: number): WriteFigures {
  const seconds = ms / 1000;
  return { rows, ms, rowsPerSec: rows / seconds, mbPerSec: (rows * (KEY_BYTES + VALUE_BYTES)) / 1e6 / seconds };
}

export interface InProcess extends WriteFigures {
  ratioToLimit: number;
  batches: number;
}

/** Reads and maps one file, unmeasured: the first read of a process pays for the decoder thread, parquet-wasm's compilation and JIT warm-up. */
export async function warmUp(file: DropFile): Promise<void> {
  const mapper = createRowMapper({ keyColumn: KEY_COLUMN, valueColumn: VALUE_COLUMN });
  for await (const { rowGroup, rowOffset, batch } of readRecordBatches(file, { rowGroupEnd: 2 })) mapper.mapBatch(batch, { file: file.relativePath, rowGroup, rowOffset });
}

/**
 * The files one after the other: read, map, and — with a location — one classic-level chained batch
 * per mapped batch (no sync, as classic-level defaults) into a fresh LevelDB there.
 */
export async function measureInProcess(rows: number, files: DropFile[], location: string | undefined): Promise<InProcess> {
  const db = location === undefined ? undefined : new ClassicLevel<Buffer, Buffer>(location, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db?.open();
  try {
    const mapper = createRowMapper({ keyColumn: KEY_COLUMN, valueColumn: VALUE_COLUMN });
    let mapped = 0;
    let bytes = 0;
    let batches = 0;
    const started = performance.now();
    for (const file of files) {
      for await (const { rowGroup, rowOffset, batch } of readRecordBatches(file)) {
        const result = mapper.mapBatch(batch, { file: file.relativePath, rowGroup, rowOffset });
        if (result.rejects.length > 0) throw new Error(`${file.relativePath}: ${result.rejects.length} rows rejected, e.g. ${result.rejects[0]!.reason}`);
        batches++;
        mapped += result.rows.length;
        if (db === undefined) {
          for (const row of result.rows) bytes += row.key.length + row.value.length;
          continue;
        }
        const chained = db.batch();
        for (const row of result.rows) chained.put(row.key, row.value);
        await chained.write();
      }
    }
    const ms = performance.now() - started;
    if (mapped !== rows) throw new Error(`in-process ${db ? 'limit' : 'reader'} mapped ${mapped} rows, expected ${rows}`);
    if (db === undefined && bytes !== rows * (KEY_BYTES + VALUE_BYTES)) throw new Error(`reader mapped ${bytes} key+value bytes, expected ${rows * (KEY_BYTES + VALUE_BYTES)}`);
    return { ...writeFigures(rows, ms), ratioToLimit: 0, batches };
  } finally {
    await db?.close();
  }
}
