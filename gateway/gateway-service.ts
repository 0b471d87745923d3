import { create } from '@bufbuild/protobuf';
import { DEFAULT_BULK_BATCH_MAX_BYTES, Key, successor, type BulkRowInput, type StoreClient, type StoredEntry } from '../store/index.js';
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
import type { BulkPutRows } from './bulk-put-codec.js';
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

  async get(req: GetRequest, signal?: AbortSignal): Promise<GetResponse> {
    const key = keyOf(req.key, 'GetRequest.key');
    const record = await this.call(() => this.client.get(key, { signal, timeoutMs: this.retryBudgetMs, ...(req.fields.length > 0 ? { fields: req.fields } : {}) }));
    if (record === undefined) throw new GatewayError('GATEWAY_NOT_FOUND', `key ${Key.preview(key.bytes)} (hex) has no value`);
    return create(GetResponseSchema, { value: record.value, etag: BigInt(record.etag), updatedAtMs: BigInt(record.updatedAtMs), expiresAtMs: BigInt(record.expiresAtMs) });
  }

  async put(req: PutRequest, signal?: AbortSignal): Promise<PutResponse> {
    const key = keyOf(req.key, 'PutRequest.key');
    const record = await this.call(() =>
      this.client.put(key, Buffer.from(req.value.buffer, req.value.byteOffset, req.value.byteLength), {
        signal,
        timeoutMs: this.retryBudgetMs,
        expectedEtag: optionalInt(req.expectedEtag, 'PutRequest.expected_etag'),
        ttlMs: int(req.ttlMs, 'PutRequest.ttl_ms'),
      }),
    );
    return create(PutResponseSchema, { etag: BigInt(record.etag), updatedAtMs: BigInt(record.updatedAtMs), expiresAtMs: BigInt(record.expiresAtMs) });
  }

  async delete(req: DeleteRequest, signal?: AbortSignal): Promise<DeleteResponse> {
    const key = keyOf(req.key, 'DeleteRequest.key');
    const deleted = await this.call(() => this.client.delete(key, { signal, timeoutMs: this.retryBudgetMs, expectedEtag: optionalInt(req.expectedEtag, 'DeleteRequest.expected_etag') }));
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
  async bulkPut(requests: AsyncIterable<BulkPutRequest | BulkPutRows>, signal?: AbortSignal): Promise<BulkPutResponse> {
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
      if (run === undefined || run.rows.length === 0) return;
      buffers.delete(id);
      if (!run.sorted) sortRun(run);
      let runs = inFlight.get(id);
      if (runs === undefined) inFlight.set(id, (runs = new Set()));
      const before = [...runs].filter((r) => Buffer.compare(r.first, run.last) <= 0 && Buffer.compare(run.first, r.last) <= 0).map((r) => r.done);
      const entry: WrittenRun = { first: run.first, last: run.last, done: Promise.resolve() };
      const write = Promise.all(before)
        .then(() => slots.run(async () => (failure === undefined ? this.writeRun(run.rows, signal) : undefined)))
        .then(
          () => void (written += run.received),
          (err: unknown) => void (failure ??= err),
        )
        .finally(() => {
          held -= run.received;
          runs.delete(entry);
          writing.delete(write);
        });
      entry.done = write;
      runs.add(entry);
      writing.add(write);
    };
    const settle = async (): Promise<void> => {
      while (writing.size > 0) await Promise.all([...writing]);
    };
    try {
      for await (const req of requests) {
        for (const row of req.rows) {
          const problem = Key.problem(row.key);
          if (problem !== undefined) {
            await settle();
            throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `BulkPutRequest row ${index} (counting from 0 over the stream): ${problem}; ${written} rows before it were written, the rows the gateway still held and those from it on were not (send them again without the bad row)`);
          }
          const key = Buffer.from(row.key.buffer, row.key.byteOffset, row.key.byteLength);
          const bytes = key.length + row.value.byteLength;
          const id = map.lookup(key).id;
          let run = buffers.get(id);
          // A run fits one BulkInsert call where it can: it goes before the row that would overflow it.
          if (run !== undefined && run.bytes + bytes > DEFAULT_BULK_BATCH_MAX_BYTES) {
            flush(id);
            run = undefined;
          }
          if (run === undefined) buffers.set(id, (run = { rows: [], received: 0, bytes: 0, sorted: true, first: key, last: key }));
          else if (run.sorted && Buffer.compare(run.last, key) >= 0) run.sorted = false;
          run.last = key;
          run.rows.push({ key, value: Buffer.from(row.value.buffer, row.value.byteOffset, row.value.byteLength), index: index++ });
          run.received++;
          run.bytes += bytes;
          held++;
          if (run.rows.length >= this.bulkPartitionRows) flush(id);
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

  /** Writes one run of strictly ascending keys (see sortRun) in one bulkPutAll. */
  private async writeRun(unique: readonly BulkRowInput[], signal: AbortSignal | undefined): Promise<void> {
    let acked = 0;
    try {
      await this.client.bulkPutAll(chunks(unique, STREAM_BATCH), {
        signal,
        timeoutMs: this.bulkRetryBudgetMs,
        maxInFlight: this.bulkMaxInFlight,
        onAck: (n) => (acked = n),
      });
    } catch (err) {
      const cause = toGatewayError(err);
      if (cause.code === 'GATEWAY_CANCELLED' || cause.code === 'GATEWAY_INVALID_ARGUMENT') throw cause;
      const failed = unique.slice(acked);
      throw new GatewayError(
        'GATEWAY_BULK_PUT_FAILED',
        `BulkPut: ${failed.length} row(s) with keys ${Key.preview(failed[0]!.key, 16)} … ${Key.preview(failed[failed.length - 1]!.key, 16)} (hex, sorted) may not be written: ${cause.message}. ` +
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

/** Rows of one partition held by a BulkPut, in arrival order until sorted. */
interface RowRun {
  rows: IndexedRow[];
  /** Rows received into it, equal keys included (sorting keeps only the last of them). */
  received: number;
  /** Key plus value bytes. */
  bytes: number;
  /** Whether every key so far is greater than the one before (rows arriving sorted need no sort). */
  sorted: boolean;
  /** Smallest and largest key (first and last in arrival order until sorted). */
  first: Buffer;
  last: Buffer;
}

/** A run being written: its key range, and when it is done. */
interface WrittenRun {
  first: Buffer;
  last: Buffer;
  done: Promise<void>;
}

/** Sorts a run by key and keeps the last of equal keys (by arrival), so its keys are strictly ascending. */
function sortRun(run: RowRun): void {
  const rows = run.rows.sort((a, b) => Buffer.compare(a.key, b.key) || a.index - b.index);
  let n = 0;
  for (let i = 0; i < rows.length; i++) {
    if (i + 1 < rows.length && rows[i + 1]!.key.equals(rows[i]!.key)) continue;
    rows[n++] = rows[i]!;
  }
  rows.length = n;
  run.first = rows[0]!.key;
  run.last = rows[n - 1]!.key;
  run.sorted = true;
}

interface IndexedRow {
  key: Buffer;
  value: Buffer;
  /** Position in the request stream: the last of equal keys wins. */
  index: number;
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
function int(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `${field} is ${value}, out of range: allowed 0–${Number.MAX_SAFE_INTEGER}`);
  return Number(value);
}

function optionalInt(value: bigint | undefined, field: string): number | undefined {
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
  for (const [id, run] of buffers) if (run.rows.length > size) [best, size] = [id, run.rows.length];
  return best;
}

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
