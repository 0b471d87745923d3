import { createRequire } from 'node:module';
import { Binary, Field, Int64, RecordBatch, Schema, Struct, makeData, tableToIPC, Table as ArrowTable } from 'apache-arrow';
import type * as ParquetWasm from 'parquet-wasm';
import { RangeDigest, type StoredEntry } from '../store/index.js';

/** Rows per Parquet row group at most (FORMAT.md). */
export const MAX_ROW_GROUP_ROWS = 65_536;

/** What a shard file says about itself in its Parquet key-value metadata (FORMAT.md). */
export interface ShardFileMetadata {
  backupId: string;
  shard: number;
  /** Range start; empty = start of the keyspace. */
  rangeStart: Buffer;
  /** Range end (exclusive); empty = end of the keyspace. */
  rangeEnd: Buffer;
}

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

/** Arrow schema of a shard file (FORMAT.md column order and nullability). */
const SCHEMA = new Schema([
  new Field('key', new Binary(), false),
  new Field('value', new Binary(), false),
  new Field('etag', new Int64(), false),
  new Field('updated_at_ms', new Int64(), false),
  new Field('expires_at_ms', new Int64(), true),
]);

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
    .setKeyValueMetadata(
      new Map([
        ['shardpipe.format', '1'],
        ['shardpipe.backup_id', metadata.backupId],
        ['shardpipe.shard', String(metadata.shard)],
        ['shardpipe.range_start', metadata.rangeStart.toString('hex')],
        ['shardpipe.range_end', metadata.rangeEnd.toString('hex')],
      ]),
    )
    .build();

  const groups = rowGroups(source, rowGroupRows, stats, signal);
  let emptyFileSent = false;
  const batches = new ReadableStream<ParquetWasm.RecordBatch>(
    {
      async pull(controller) {
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
      },
      async cancel() {
        await groups.return(undefined);
      },
    },
    { highWaterMark: 0 },
  );

  return {
    async *[Symbol.asyncIterator]() {
      const bytes = (await pw.transformParquetStream(batches, properties)) as ReadableStream<Uint8Array>;
      const reader = bytes.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
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
  const n = entries.length;
  const etag = new BigInt64Array(n);
  const updated = new BigInt64Array(n);
  const expires = new BigInt64Array(n);
  const validity = new Uint8Array(Math.ceil(n / 8));
  let nulls = 0;
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    etag[i] = BigInt(e.etag);
    updated[i] = BigInt(e.updatedAtMs);
    if (e.expiresAtMs > 0) {
      expires[i] = BigInt(e.expiresAtMs);
      validity[i >> 3]! |= 1 << (i & 7);
    } else {
      nulls++;
    }
  }
  const children = [
    binaryData(entries, (e) => e.key),
    binaryData(entries, (e) => e.value),
    makeData({ type: new Int64(), length: n, data: etag }),
    makeData({ type: new Int64(), length: n, data: updated }),
    makeData({ type: new Int64(), length: n, nullCount: nulls, nullBitmap: nulls === 0 ? null : validity, data: expires }),
  ];
  const struct = makeData({ type: new Struct(SCHEMA.fields), length: n, nullCount: 0, children });
  const ipc = tableToIPC(new ArrowTable([new RecordBatch(SCHEMA, struct)]), 'stream');
  const table = pw.Table.fromIPCStream(ipc);
  const batch = table.recordBatch(0)!;
  table.free();
  return batch;
}

/** A Binary column from one contiguous value buffer and int32 offsets. */
function binaryData(entries: readonly StoredEntry[], pick: (e: StoredEntry) => Buffer) {
  const offsets = new Int32Array(entries.length + 1);
  let total = 0;
  for (let i = 0; i < entries.length; i++) {
    total += pick(entries[i]!).byteLength;
    offsets[i + 1] = total;
  }
  const data = Buffer.allocUnsafe(total);
  for (let i = 0; i < entries.length; i++) pick(entries[i]!).copy(data, offsets[i]!);
  return makeData({ type: new Binary(), length: entries.length, nullCount: 0, valueOffsets: offsets, data });
}
