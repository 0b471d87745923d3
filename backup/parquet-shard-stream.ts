import { createRequire } from 'node:module';
import { tableToIPC, Table as ArrowTable, type RecordBatch } from 'apache-arrow';
import type * as ParquetWasm from 'parquet-wasm';
import type { PackedRows, RangeDigest, StoredEntry } from '../store/index.js';
import { ShardContentHash } from './shard-content-hash.js';
import { MAX_ROW_GROUP_ROWS, digestPackedRows, packedShardRecordBatch, shardKeyValueMetadata, shardRecordBatch, type ShardFileMetadata } from './shard-format.js';

/** Options of `parquetShardStream`. */
export interface ParquetShardStreamOptions {
  /** Rows per row group, 1–65,536. Memory is about two row groups of rows. Default 65,536. */
  rowGroupRows?: number;
  /**
   * Dictionary-encode every column, as files were written before PLAIN_SHARD_COLUMNS: for
   * bench/parquet-encode-bench.ts, which measures both in one run. Default false.
   */
  dictionaryEverywhere?: boolean;
  signal?: AbortSignal;
}

/**
 * Columns written without a dictionary. Keys are unique in a shard and etags nearly so, and values
 * are mostly distinct: arrow-rs hashes each into a dictionary per column chunk that either
 * outgrows its page limit (1 MiB) and falls back to plain (keys, values) or holds every value
 * (etags) — CPU for nothing, and a larger file (measured by bench/parquet-encode-bench.ts). The two
 * timestamps keep theirs (few distinct values are common). Readers need nothing: which encoding a
 * page has is in the page header.
 */
export const PLAIN_SHARD_COLUMNS = ['key', 'value', 'etag'] as const;

/** Filled in while the stream is consumed; final once it has ended. */
export interface ShardStreamStats {
  rows: number;
  /** Order-independent digest with etags, as the store's Checksum with include_etag (FORMAT.md). */
  digest: RangeDigest;
  /** The shard's content hash (ShardContentHash hex, manifest format 2), set once the stream has ended. */
  contentHash?: string;
}

let wasm: typeof ParquetWasm | undefined;

/** parquet-wasm's Node build (synchronous WebAssembly instantiation), loaded once on first use. */
function parquetWasm(): typeof ParquetWasm {
  wasm ??= createRequire(import.meta.url)('parquet-wasm/node') as typeof ParquetWasm;
  return wasm;
}

/** Loads and compiles parquet-wasm now rather than at the first shard (an encoder thread does, before it reports ready). */
export function loadParquetWasm(): void {
  parquetWasm();
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
  const rowGroupRows = checkedRowGroupRows(options.rowGroupRows);
  return encodeShard(rowGroups(source, rowGroupRows, stats, options.signal), metadata, stats, rowGroupRows, options.dictionaryEverywhere ?? false);
}

/**
 * `parquetShardStream` for packed scan batches (`StoreClient.scanAllPacked`): the same file, byte
 * for byte, for the same rows — columns built from the batches' buffers (packedShardRecordBatch),
 * the checksum from the same bytes, no object per row.
 */
export function packedParquetShardStream(source: AsyncIterable<PackedRows>, metadata: ShardFileMetadata, stats: ShardStreamStats, options: ParquetShardStreamOptions = {}): AsyncIterable<Uint8Array> {
  const rowGroupRows = checkedRowGroupRows(options.rowGroupRows);
  return encodeShard(packedRowGroups(source, rowGroupRows, stats, options.signal), metadata, stats, rowGroupRows, options.dictionaryEverywhere ?? false);
}

function checkedRowGroupRows(value: number | undefined): number {
  const rowGroupRows = value ?? MAX_ROW_GROUP_ROWS;
  if (!Number.isInteger(rowGroupRows) || rowGroupRows < 1 || rowGroupRows > MAX_ROW_GROUP_ROWS) throw new RangeError(`rowGroupRows must be 1–${MAX_ROW_GROUP_ROWS}, got ${rowGroupRows}`);
  return rowGroupRows;
}

/** The Parquet file of a stream of row groups (Arrow record batches of the shard schema). */
function encodeShard(groups: AsyncGenerator<RecordBatch>, metadata: ShardFileMetadata, stats: ShardStreamStats, rowGroupRows: number, dictionaryEverywhere: boolean): AsyncIterable<Uint8Array> {
  const pw = parquetWasm();

  let builder = new pw.WriterPropertiesBuilder()
    .setCompression(pw.Compression.ZSTD)
    .setMaxRowGroupSize(rowGroupRows)
    .setCreatedBy('shardpipe backup')
    .setKeyValueMetadata(shardKeyValueMetadata(metadata));
  if (!dictionaryEverywhere) for (const column of PLAIN_SHARD_COLUMNS) builder = builder.setColumnDictionaryEnabled(column, false);
  const properties = builder.build();

  let emptyFileSent = false;
  const contentHash = new ShardContentHash();
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
              controller.enqueue(toWasmBatch(pw, shardRecordBatch([])));
            }
            stats.contentHash = contentHash.toHex();
            controller.close();
            return;
          }
          contentHash.addRecordBatch(next.value);
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
async function* rowGroups(source: AsyncIterable<readonly StoredEntry[]>, rows: number, stats: ShardStreamStats, signal: AbortSignal | undefined): AsyncGenerator<RecordBatch> {
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
        yield shardRecordBatch(group);
        group = [];
        bytes = 0;
      }
    }
  }
  signal?.throwIfAborted();
  if (group.length > 0) {
    stats.rows += group.length;
    yield shardRecordBatch(group);
  }
}

/** rowGroups for packed batches: runs of their rows regrouped into batches of `rows` rows (or BATCH_MAX_BYTES), digested. */
async function* packedRowGroups(source: AsyncIterable<PackedRows>, rows: number, stats: ShardStreamStats, signal: AbortSignal | undefined): AsyncGenerator<RecordBatch> {
  let parts: Array<{ rows: PackedRows; from: number; to: number }> = [];
  let count = 0;
  let bytes = 0;
  for await (const batch of source) {
    signal?.throwIfAborted();
    digestPackedRows(stats.digest, batch);
    for (let from = 0; from < batch.count; ) {
      let take = Math.min(batch.count - from, rows - count);
      while (take > 1 && bytes + batch.bytesBetween(from, from + take) > BATCH_MAX_BYTES) take = Math.max(1, take >> 1);
      if (count > 0 && bytes + batch.bytesBetween(from, from + take) > BATCH_MAX_BYTES) {
        stats.rows += count;
        yield packedShardRecordBatch(parts);
        parts = [];
        count = 0;
        bytes = 0;
        continue;
      }
      parts.push({ rows: batch, from, to: from + take });
      count += take;
      bytes += batch.bytesBetween(from, from + take);
      from += take;
      if (count === rows || bytes >= BATCH_MAX_BYTES) {
        stats.rows += count;
        yield packedShardRecordBatch(parts);
        parts = [];
        count = 0;
        bytes = 0;
      }
    }
  }
  signal?.throwIfAborted();
  if (count > 0) {
    stats.rows += count;
    yield packedShardRecordBatch(parts);
  }
}

/** One Arrow record batch, handed to parquet-wasm through the IPC stream format. */
function toWasmBatch(pw: typeof ParquetWasm, group: RecordBatch): ParquetWasm.RecordBatch {
  const ipc = tableToIPC(new ArrowTable([group]), 'stream');
  const table = pw.Table.fromIPCStream(ipc);
  const batch = table.recordBatch(0)!;
  table.free();
  return batch;
}
