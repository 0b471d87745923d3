import { create } from '@bufbuild/protobuf';
import { BatchBufferPool, compareBytes } from '../common/index.js';
import { DEFAULT_BULK_BATCH_MAX_BYTES, DEFAULT_MAX_KEY_BYTES, Key, PackedRowsBuilder, successor, type PackedRows, type Partition, type StoreClient, type StoredEntry } from '../store/index.js';
import {
  BulkPutResponseSchema,
  DeleteResponseSchema,
  EntrySchema,
  GetResponseSchema,
  PatchMode,
  PatchResponseSchema,
  PutResponseSchema,
  ScanPageResponseSchema,
  ScanResponseSchema,
  type BulkPutRequest,
  type BulkPutResponse,
  type DeleteRequest,
  type DeleteResponse,
  type Entry,
  type GetRequest,
  type GetResponse,
  type PatchRequest,
  type PatchResponse,
  type PutRequest,
  type PutResponse,
  type ScanPageRequest,
  type ScanPageResponse,
  type ScanRequest,
  type ScanResponse,
} from './proto/gen/shardpipe/gateway/v1/gateway_pb.js';
import { bulkPutSpans, type BulkPutSpans } from './bulk-put-codec.js';
import type { DeleteFields, PutFields, WireInt } from './point-codec.js';
import { GatewayError, toGatewayError } from './gateway-errors.js';
import { RequestLimiter } from './request-limiter.js';

/** Options of the gateway's operations. Times in milliseconds. */
export interface GatewayServiceOptions {
  /**
   * Budget of one Get/Put/Delete/scan step including the thick client's retries: how long a request
   * is held through a map change or a node restart before the caller gets UNAVAILABLE. Default 2000.
   */
  retryBudgetMs?: number;
  /** Budget of one BulkInsert batch of a BulkPut including retries. Default 30000. */
  bulkRetryBudgetMs?: number;
  /** Rows a BulkPut holds per partition before it sorts and writes them. Default 10000. */
  bulkPartitionRows?: number;
  /** Rows a BulkPut holds in all; past it the fullest partition is written. Default 100000. */
  bulkMaxBufferedRows?: number;
  /** Runs of a BulkPut written at once, and BulkInsert calls in flight per run (see bulkPutAll). Default 4. */
  bulkMaxInFlight?: number;
}

/** Entries a Scan returns when the request says 0, and at most. */
const SCAN_MAX_LIMIT = 100_000;
const PAGE_MAX_LIMIT = 1000;
const STREAM_BATCH = 1000;
/** Runs of a BulkPut open at once whose buffers start at a whole call's bytes (see runBuilder). */
const PREALLOCATED_RUNS = 4;

/**
 * The gateway's operations over the thick client, independent of the wire: requests in, responses
 * or GatewayErrors out. The thick client routes, refreshes the map and retries within the budget;
 * this class turns what is left into the final outcomes of the public API.
 */
export class GatewayService {
  private readonly retryBudgetMs: number;
  private readonly bulkRetryBudgetMs: number;
  private readonly bulkPartitionRows: number;
  private readonly bulkMaxBufferedRows: number;
  private readonly bulkMaxInFlight: number;
  /**
   * Buffers of BulkPut runs, reused once a run is written (see BatchBufferPool: a fresh ~1 MiB
   * buffer per run waits for a full collection). Runs in flight per BulkPut are few (bulkMaxInFlight).
   */
  private readonly runBuffers = new BatchBufferPool({ maxFree: 16, maxBytes: 2 * DEFAULT_BULK_BATCH_MAX_BYTES });

  constructor(
    private readonly client: StoreClient,
    options: GatewayServiceOptions = {},
  ) {
    this.retryBudgetMs = checkInt(options.retryBudgetMs ?? 2000, 'retryBudgetMs', 1, 3_600_000);
    this.bulkRetryBudgetMs = checkInt(options.bulkRetryBudgetMs ?? 30_000, 'bulkRetryBudgetMs', 1, 3_600_000);
    this.bulkPartitionRows = checkInt(options.bulkPartitionRows ?? 10_000, 'bulkPartitionRows', 1, 1_000_000);
    this.bulkMaxBufferedRows = checkInt(options.bulkMaxBufferedRows ?? 100_000, 'bulkMaxBufferedRows', 1, 10_000_000);
    this.bulkMaxInFlight = checkInt(options.bulkMaxInFlight ?? 4, 'bulkMaxInFlight', 1, 64);
  }

  /**
   * `budgetMs` cuts the retry budget (the caller's deadline); without `signal` a caller's cancel
   * does not stop the store call (grpc-gateway.ts, callerBudgetMs). A promise chain, not an async
   * function: this runs once per Get.
   */
  get(req: Pick<GetRequest, 'key' | 'fields'>, signal?: AbortSignal, budgetMs?: number): Promise<GetResponse> {
    let key: Key;
    try {
      key = keyOf(req.key, 'GetRequest.key');
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const timeoutMs = budgetMs === undefined ? this.retryBudgetMs : Math.min(budgetMs, this.retryBudgetMs);
    const options = req.fields.length > 0 ? { signal, timeoutMs, fields: req.fields } : { signal, timeoutMs };
    return this.client.get(key, options).then(
      (record) => {
        if (record === undefined) throw new GatewayError('GATEWAY_NOT_FOUND', `key ${Key.preview(key.bytes)} (hex) has no value`);
        return create(GetResponseSchema, { value: record.value, etag: BigInt(record.etag), updatedAtMs: BigInt(record.updatedAtMs), expiresAtMs: BigInt(record.expiresAtMs) });
      },
      (err: unknown) => {
        throw toGatewayError(err);
      },
    );
  }

  async put(req: PutRequest | PutFields, signal?: AbortSignal): Promise<PutResponse> {
    const key = keyOf(req.key, 'PutRequest.key');
    const options = { signal, timeoutMs: this.retryBudgetMs, expectedEtag: optionalInt(req.expectedEtag, 'PutRequest.expected_etag'), ttlMs: int(req.ttlMs, 'PutRequest.ttl_ms') };
    let record;
    try {
      record = await this.client.put(key, Buffer.from(req.value.buffer, req.value.byteOffset, req.value.byteLength), options);
    } catch (err) {
      throw toGatewayError(err);
    }
    return create(PutResponseSchema, { etag: BigInt(record.etag), updatedAtMs: BigInt(record.updatedAtMs), expiresAtMs: BigInt(record.expiresAtMs) });
  }

  async delete(req: DeleteRequest | DeleteFields, signal?: AbortSignal): Promise<DeleteResponse> {
    const key = keyOf(req.key, 'DeleteRequest.key');
    const options = { signal, timeoutMs: this.retryBudgetMs, expectedEtag: optionalInt(req.expectedEtag, 'DeleteRequest.expected_etag') };
    let deleted;
    try {
      deleted = await this.client.delete(key, options);
    } catch (err) {
      throw toGatewayError(err);
    }
    return create(DeleteResponseSchema, { deleted });
  }

  /** Patches a key's JSON document on its store node (merge or JSON Patch), optionally compare-and-set. */
  async patch(req: PatchRequest, signal?: AbortSignal): Promise<PatchResponse> {
    const key = keyOf(req.key, 'PatchRequest.key');
    if (req.mode !== PatchMode.MERGE && req.mode !== PatchMode.JSON_PATCH) {
      throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `PatchRequest.mode is ${req.mode}: allowed PATCH_MODE_MERGE (0) or PATCH_MODE_JSON_PATCH (1)`);
    }
    const result = await this.call(() =>
      this.client.patch(key, Buffer.from(req.patch, 'utf8'), {
        signal,
        timeoutMs: this.retryBudgetMs,
        mode: req.mode === PatchMode.JSON_PATCH ? 'json-patch' : 'merge',
        ifEtag: optionalInt(req.ifEtag, 'PatchRequest.if_etag'),
        ttlMs: optionalInt(req.ttlMs, 'PatchRequest.ttl_ms'),
        returnDocument: req.returnDocument,
      }),
    );
    return create(PatchResponseSchema, {
      etag: BigInt(result.etag),
      updatedAtMs: BigInt(result.updatedAtMs),
      expiresAtMs: BigInt(result.expiresAtMs),
      document: result.document?.toString('utf8') ?? '',
    });
  }

  /** A bounded scan: at most `limit` entries (1–100,000; 0 = 100,000). */
  scan(req: ScanRequest, signal?: AbortSignal): AsyncGenerator<ScanResponse> {
    const limit = checkLimit(req.limit, 'ScanRequest.limit', SCAN_MAX_LIMIT);
    return this.stream(req.start, req.end, limit, signal);
  }

  /** Every entry of the range (limit 0 = no limit). */
  scanAll(req: ScanRequest, signal?: AbortSignal): AsyncGenerator<ScanResponse> {
    return this.stream(req.start, req.end, req.limit, signal);
  }

  async scanPage(req: ScanPageRequest, signal?: AbortSignal): Promise<ScanPageResponse> {
    const limit = checkLimit(req.limit, 'ScanPageRequest.limit', PAGE_MAX_LIMIT);
    const entries: Entry[] = [];
    for await (const batch of this.stream(req.start, req.end, limit, signal)) entries.push(...batch.entries);
    // A full page may have more after it; an empty next_start says the range is done.
    const nextStart = entries.length === limit ? successor(entries[entries.length - 1]!.key) : new Uint8Array(0);
    return create(ScanPageResponseSchema, { entries, nextStart });
  }

  /**
   * Writes rows arriving in any order: buffers them per partition of the current map, and writes a
   * partition's run sorted (the last of equal keys wins) once it holds `bulkPartitionRows` or one
   * BulkInsert call's worth of bytes, when the rows held reach `bulkMaxBufferedRows`, and at the
   * end. Rows arriving sorted skip the sort, and their runs (disjoint key ranges) are written
   * concurrently; a run overlapping one still being written waits for it. The map may change
   * meanwhile: the bulk writer cuts each run at the partition boundaries of the map it has then.
   */
  async bulkPut(requests: AsyncIterable<BulkPutRequest | BulkPutSpans>, signal?: AbortSignal): Promise<BulkPutResponse> {
    const map = await this.call(() => this.client.map({ signal, timeoutMs: this.retryBudgetMs }));
    const buffers = new Map<number, RowRun>();
    // Runs of one partition whose key ranges overlap are written one after another (the last of
    // equal keys wins); disjoint runs — all of them when the rows arrive sorted — and the
    // receiving of further rows overlap with them.
    const inFlight = new Map<number, Set<WrittenRun>>();
    const writing = new Set<Promise<void>>();
    // Runs written at once, like the thick client's calls in flight: more only queue at the node.
    const slots = new RequestLimiter({ maxInFlight: this.bulkMaxInFlight, maxWaiting: 1_000_000 });
    let failure: unknown;
    let held = 0;
    let index = 0;
    let written = 0;
    const flush = (id: number): void => {
      const run = buffers.get(id);
      if (run === undefined || run.builder.count === 0) return;
      buffers.delete(id);
      const packed = run.builder.finish();
      const rows = run.sorted ? packed : sortRows(packed);
      if (rows !== packed) this.runBuffers.give(packed.toMessage().data);
      let runs = inFlight.get(id);
      if (runs === undefined) inFlight.set(id, (runs = new Set()));
      const first = rows.key(0);
      const last = rows.key(rows.count - 1);
      const before = [...runs].filter((r) => Buffer.compare(r.first, last) <= 0 && Buffer.compare(first, r.last) <= 0).map((r) => r.done);
      const entry: WrittenRun = { first, last, done: Promise.resolve() };
      const write = Promise.all(before)
        .then(() => slots.run(async () => (failure === undefined ? this.writeRun(rows, signal) : undefined)))
        .then(
          () => void (written += run.received),
          (err: unknown) => void (failure ??= err),
        )
        .finally(() => {
          held -= run.received;
          runs.delete(entry);
          writing.delete(write);
          // The write has settled (bulkPutAll lets every call of it finish first): nothing reads the rows now.
          this.runBuffers.give(rows.toMessage().data);
        });
      entry.done = write;
      runs.add(entry);
      writing.add(write);
    };
    const settle = async (): Promise<void> => {
      while (writing.size > 0) await Promise.all([...writing]);
    };
    // The partition of the row before: sorted input stays in it for many rows, so most rows cost
    // one or two key comparisons instead of a lookup (and a view of the key).
    let partition: Partition | undefined;
    try {
      let message = 0;
      for await (const req of requests) {
        let rowSpans;
        try {
          rowSpans = bulkPutSpans(req);
        } catch (err) {
          await settle();
          const e = toGatewayError(err);
          throw new GatewayError(e.code, `BulkPutRequest message ${message} (counting from 0 over the stream; rows ${index} on): ${e.message}; ${written} rows before it were written, the rows the gateway still held and those from it on were not (send them again)`);
        }
        message++;
        const { bytes, count, spans } = rowSpans;
        for (let r = 0; r < count; r++) {
          const keyStart = spans[4 * r]!;
          const keyLength = spans[4 * r + 1]!;
          const valueLength = spans[4 * r + 3]!;
          if (keyLength === 0 || keyLength > DEFAULT_MAX_KEY_BYTES) {
            await settle();
            throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `BulkPutRequest row ${index} (counting from 0 over the stream): ${Key.problem(bytes.subarray(keyStart, keyStart + keyLength))}; ${written} rows before it were written, the rows the gateway still held and those from it on were not (send them again without the bad row)`);
          }
          const keyEnd = keyStart + keyLength;
          if (partition === undefined || !spanInPartition(partition, bytes, keyStart, keyEnd)) partition = map.lookup(bytes.subarray(keyStart, keyEnd));
          const id = partition.id;
          const size = keyLength + valueLength;
          let run = buffers.get(id);
          // A run fits one BulkInsert call where it can: it goes before the row that would overflow it.
          if (run !== undefined && run.builder.bytes + size > DEFAULT_BULK_BATCH_MAX_BYTES) {
            flush(id);
            run = undefined;
          }
          if (run === undefined) buffers.set(id, (run = { builder: this.runBuilder(buffers.size, size), received: 0, sorted: true, lastBytes: bytes, lastStart: keyStart, lastEnd: keyEnd }));
          else if (run.sorted && compareBytes(run.lastBytes, run.lastStart, run.lastEnd, bytes, keyStart, keyEnd) >= 0) run.sorted = false;
          run.lastBytes = bytes;
          run.lastStart = keyStart;
          run.lastEnd = keyEnd;
          run.builder.addSpan(bytes, keyStart, keyLength, spans[4 * r + 2]!, valueLength);
          index++;
          run.received++;
          held++;
          if (run.builder.count >= this.bulkPartitionRows) flush(id);
        }
        // Rows held (buffered and being written) stay bounded: flush the fullest buffer, then wait.
        while (held > this.bulkMaxBufferedRows && failure === undefined) {
          if (buffers.size > 0) flush(fullest(buffers));
          await Promise.race([...writing]);
        }
        if (failure !== undefined) break;
      }
      if (failure === undefined) for (const id of [...buffers.keys()]) flush(id);
      await settle();
      if (failure !== undefined) throw failure;
    } catch (err) {
      await settle();
      throw toGatewayError(err);
    }
    return create(BulkPutResponseSchema, { rows: BigInt(written) });
  }

  /**
   * The builder of a new run. With few runs open (sorted input fills one partition's run after
   * another) it starts at a whole run's bytes: growing it from small would allocate about four
   * times that per run, and that garbage, not the rows, was most of a BulkPut's CPU on the gateway.
   * With many open (unsorted input) each starts small, so memory stays near the rows held.
   */
  private runBuilder(openRuns: number, rowBytes: number): PackedRowsBuilder {
    if (openRuns >= PREALLOCATED_RUNS) return new PackedRowsBuilder();
    // As many rows as a run takes, of the first row's size, up to one call's bytes.
    const rows = Math.min(this.bulkPartitionRows, 16_384);
    return new PackedRowsBuilder({ rowsHint: rows, bytesHint: Math.min(DEFAULT_BULK_BATCH_MAX_BYTES, Math.max(1024, rows * rowBytes)), pool: this.runBuffers });
  }

  /** Writes one run of strictly ascending keys (see sortRows) in one bulkPutAll, as views of its packed batch. */
  private async writeRun(rows: PackedRows, signal: AbortSignal | undefined): Promise<void> {
    let acked = 0;
    try {
      await this.client.bulkPutAll([rows], {
        signal,
        timeoutMs: this.bulkRetryBudgetMs,
        maxInFlight: this.bulkMaxInFlight,
        onAck: (n) => (acked = n),
      });
    } catch (err) {
      const cause = toGatewayError(err);
      if (cause.code === 'GATEWAY_CANCELLED' || cause.code === 'GATEWAY_INVALID_ARGUMENT') throw cause;
      const failed = rows.count - acked;
      throw new GatewayError(
        'GATEWAY_BULK_PUT_FAILED',
        `BulkPut: ${failed} row(s) with keys ${Key.preview(rows.key(acked), 16)} … ${Key.preview(rows.key(rows.count - 1), 16)} (hex, sorted) may not be written: ${cause.message}. ` +
          `Rows sent before were written except those still buffered; send the failed rows again (writes are idempotent)`,
        { cause },
      );
    }
  }

  private async *stream(start: Uint8Array, end: Uint8Array, limit: number, signal: AbortSignal | undefined): AsyncGenerator<ScanResponse> {
    if (end.length > 0 && Buffer.compare(start, end) >= 0) {
      throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `scan range is empty: start ${Key.preview(start)} is not before end ${Key.preview(end)} (hex)`);
    }
    try {
      for await (const entries of this.client.scanAll(Buffer.from(start), Buffer.from(end), { signal, limit, batchSize: STREAM_BATCH, retryBudgetMs: this.retryBudgetMs })) {
        yield create(ScanResponseSchema, { entries: entries.map(toEntry) });
      }
    } catch (err) {
      throw toGatewayError(err);
    }
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toGatewayError(err);
    }
  }
}

/** Rows of one partition held by a BulkPut, packed in arrival order. */
interface RowRun {
  builder: PackedRowsBuilder;
  /** Rows received into it, equal keys included (sorting keeps only the last of them). */
  received: number;
  /** Whether every key so far is greater than the one before (rows arriving sorted need no sort). */
  sorted: boolean;
  /** The last key received: `lastBytes[lastStart, lastEnd)`. */
  lastBytes: Uint8Array;
  lastStart: number;
  lastEnd: number;
}

/** A run being written: its key range, and when it is done. */
interface WrittenRun {
  first: Buffer;
  last: Buffer;
  done: Promise<void>;
}

/**
 * A run's rows sorted by key, keeping the last of equal keys (a run holds its rows in arrival
 * order), so its keys are strictly ascending: a new packed batch (rows arriving sorted skip this).
 */
function sortRows(rows: PackedRows): PackedRows {
  const order = Array.from({ length: rows.count }, (_, i) => i).sort((a, b) => rows.compareKeys(a, b) || a - b);
  const builder = new PackedRowsBuilder({ rowsHint: rows.count, bytesHint: rows.bytes });
  for (let n = 0; n < order.length; n++) {
    const i = order[n]!;
    if (n + 1 < order.length && rows.compareKeys(order[n + 1]!, i) === 0) continue;
    builder.add(rows.key(i), rows.value(i));
  }
  return builder.finish();
}

/** Whether the key `bytes[start, end)` lies in `partition`. */
function spanInPartition(partition: Partition, bytes: Uint8Array, start: number, end: number): boolean {
  const p = partition.start;
  if (compareBytes(p, 0, p.length, bytes, start, end) > 0) return false;
  const e = partition.end;
  return e.length === 0 || compareBytes(bytes, start, end, e, 0, e.length) < 0;
}

function toEntry(e: StoredEntry): Entry {
  return create(EntrySchema, { key: e.key, value: e.value, etag: BigInt(e.etag), updatedAtMs: BigInt(e.updatedAtMs), expiresAtMs: BigInt(e.expiresAtMs) });
}

function keyOf(bytes: Uint8Array, field: string): Key {
  const problem = Key.problem(bytes);
  if (problem !== undefined) throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `${field}: ${problem}`);
  return Key.fromBytes(bytes);
}

/** A 64-bit field as a number; beyond 2^53 − 1 no store value can match, so it is refused by name. */
function int(value: WireInt, field: string): number {
  // The hand decoders give numbers only for safe integers (point-codec.ts).
  if (typeof value === 'number') return value;
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `${field} is ${value}, out of range: allowed 0–${Number.MAX_SAFE_INTEGER}`);
  return Number(value);
}

function optionalInt(value: WireInt | undefined, field: string): number | undefined {
  return value === undefined ? undefined : int(value, field);
}

function checkLimit(limit: number, field: string, max: number): number {
  if (limit === 0) return max;
  if (limit > max) throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `${field} is ${limit}, out of range: allowed 1–${max} (0 = ${max})`);
  return limit;
}

function checkInt(value: number, name: string, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${name} must be ${min}–${max}, got ${value}`);
  return value;
}

function fullest(buffers: Map<number, RowRun>): number {
  let best = -1;
  let size = -1;
  for (const [id, run] of buffers) if (run.builder.count > size) [best, size] = [id, run.builder.count];
  return best;
}
