import { createRequire } from 'node:module';
import { tableToIPC, Table as ArrowTable } from 'apache-arrow';
import type * as ParquetWasm from 'parquet-wasm';
import type { RangeDigest, StoredEntry } from '../store/index.js';
import { MAX_ROW_GROUP_ROWS, shardKeyValueMetadata, shardRecordBatch, type ShardFileMetadata } from './shard-format.js';

/** Options of `parquetShardStream`. */
export interface ParquetShardStreamOptions {
  /** Rows per row group, 1–65,536. Memory is about two row groups of rows. Default 65,536. */
  rowGroupRows?: number;
  signal?: AbortSignal;
}

/** Filled in while the stream is consumed; final once it has ended. */
export interface ShardStreamStats {
  rows: number;
  /** Order-independent digest with etags, as the store's Checksum with include_etag (FORMAT.md). */
  digest: RangeDigest;
}

let wasm: typeof ParquetWasm | undefined;

/** parquet-wasm's Node build (synchronous WebAssembly instantiation), loaded once on first use. */
function parquetWasm(): typeof ParquetWasm {
  wasm ??= createRequire(import.meta.url)('parquet-wasm/node') as typeof ParquetWasm;
  return wasm;
}

/**
 * Turns a stream of sorted entry batches (as `StoreClient.scanAll` yields them) into the bytes of
 * ONE Parquet file in the FORMAT.md layout: parquet-wasm's streaming writer (arrow-rs
 * `ArrowWriter`), zstd, one row group per `rowGroupRows` rows, the shard's key-value metadata.
 * Pull-driven end to end: the source is read only as fast as the consumer takes bytes, so memory is
 * bounded by about two row groups (the one being collected and the one the writer encodes) —
 * whatever the shard's size. `stats` counts rows and builds the checksum as rows go by.
 */
export function parquetShardStream(
  source: AsyncIterable<readonly StoredEntry[]>,
  metadata: ShardFileMetadata,
  stats: ShardStreamStats,
  options: ParquetShardStreamOptions = {},
): AsyncIterable<Uint8Array> {
  const rowGroupRows = options.rowGroupRows ?? MAX_ROW_GROUP_ROWS;
  if (!Number.isInteger(rowGroupRows) || rowGroupRows < 1 || rowGroupRows > MAX_ROW_GROUP_ROWS) throw new RangeError(`rowGroupRows must be 1–${MAX_ROW_GROUP_ROWS}, got ${rowGroupRows}`);
  const { signal } = options;
  const pw = parquetWasm();

  const properties = new pw.WriterPropertiesBuilder()
    .setCompression(pw.Compression.ZSTD)
    .setMaxRowGroupSize(rowGroupRows)
    .setCreatedBy('shardpipe backup')
    .setKeyValueMetadata(shardKeyValueMetadata(metadata))
    .build();

  const groups = rowGroups(source, rowGroupRows, stats, signal);
  let emptyFileSent = false;
  // parquet-wasm ends its output normally when its input stream errors — with the rows so far and
  // a valid footer. A failed scan must fail the file instead: the error is kept and thrown at the end.
  let failure: { error: unknown } | undefined;
  const batches = new ReadableStream<ParquetWasm.RecordBatch>(
    {
      async pull(controller) {
        try {
          const next = await groups.next();
          if (next.done) {
            // arrow-rs writes a file's schema only with its first batch: an empty shard still needs one.
            if (stats.rows === 0 && !emptyFileSent) {
              emptyFileSent = true;
              controller.enqueue(toWasmBatch(pw, []));
            }
            controller.close();
            return;
          }
          controller.enqueue(toWasmBatch(pw, next.value));
        } catch (error) {
          failure = { error };
          controller.error(error);
        }
      },
      async cancel() {
        await groups.return(undefined);
      },
    },
    { highWaterMark: 0 },
  );

  return {
    async *[Symbol.asyncIterator]() {
      let bytes: ReadableStream<Uint8Array>;
      try {
        // It reads the first batch before it answers (for the schema): a source failing there rejects
        // this call with parquet-wasm's own "Dyn casting error", which must not hide the source's.
        bytes = (await pw.transformParquetStream(batches, properties)) as ReadableStream<Uint8Array>;
      } catch (err) {
        throw failure ? failure.error : err;
      }
      const reader = bytes.getReader();
      try {
        for (;;) {
          let read: ReadableStreamReadResult<Uint8Array>;
          try {
            read = await reader.read();
          } catch (err) {
            throw failure ? failure.error : err;
          }
          const { done, value } = read;
          if (failure) throw failure.error;
          if (done) return;
          yield value;
        }
      } finally {
        // Stops the source (and the scan behind it) when the consumer stops early or fails.
        await reader.cancel().catch(() => undefined);
        reader.releaseLock();
      }
    },
  };
}

/** Bytes of keys and values collected into one Arrow batch at most (Arrow's Binary offsets are 32-bit). */
const BATCH_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Regroups scan batches into batches of `rows` rows (the last one shorter; one earlier when its keys
 * and values pass BATCH_MAX_BYTES), digesting each row.
 */
async function* rowGroups(source: AsyncIterable<readonly StoredEntry[]>, rows: number, stats: ShardStreamStats, signal: AbortSignal | undefined): AsyncGenerator<StoredEntry[]> {
  let group: StoredEntry[] = [];
  let bytes = 0;
  for await (const batch of source) {
    signal?.throwIfAborted();
    for (const entry of batch) {
      stats.digest.add(entry.key, entry.value, entry.expiresAtMs, entry.etag);
      group.push(entry);
      bytes += entry.key.byteLength + entry.value.byteLength;
      if (group.length === rows || bytes >= BATCH_MAX_BYTES) {
        stats.rows += group.length;
        yield group;
        group = [];
        bytes = 0;
      }
    }
  }
  signal?.throwIfAborted();
  if (group.length > 0) {
    stats.rows += group.length;
    yield group;
  }
}

/** One Arrow record batch of entries, handed to parquet-wasm through the IPC stream format. */
function toWasmBatch(pw: typeof ParquetWasm, entries: readonly StoredEntry[]): ParquetWasm.RecordBatch {
  const ipc = tableToIPC(new ArrowTable([shardRecordBatch(entries)]), 'stream');
  const table = pw.Table.fromIPCStream(ipc);
  const batch = table.recordBatch(0)!;
  table.free();
  return batch;
}
