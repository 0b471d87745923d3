import { BulkInsertRequest as BulkInsertRequestCodec, type BulkInsertRequest } from './proto/gen/shardpipe/store/v1/store.js';
import type { BatchBufferPool } from '../common/index.js';
import { readVarint, varintSize, writeVarint } from './wire-varint.js';

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const TWO_32 = 2 ** 32;

/**
 * Decodes a BulkInsertRequest that carries a packed batch — only `map_version` and `packed`, each
 * at most once — with `lengths`, `data` and `meta` as views of `bytes` instead of copies (the
 * generated decoder copies every bytes field). Anything else (per-row `rows`, unknown or repeated
 * fields, a varint beyond its type, malformed framing) returns undefined, and the generated
 * decoder takes the request, with its answers for malformed ones.
 */
export function decodePackedBulkInsert(bytes: Buffer): BulkInsertRequest | undefined {
  const r = { pos: 0 };
  let mapVersion: number | undefined;
  let packed: BulkInsertRequest['packed'];
  while (r.pos < bytes.length) {
    const tag = varint(bytes, r);
    if (tag === undefined) return undefined;
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 1 && wire === WIRE_VARINT && mapVersion === undefined) {
      mapVersion = varint(bytes, r);
      if (mapVersion === undefined) return undefined;
    } else if (field === 3 && wire === WIRE_LEN && packed === undefined) {
      const body = lengthDelimited(bytes, r);
      packed = body && decodePackedRows(body);
      if (packed === undefined) return undefined;
    } else {
      return undefined;
    }
  }
  if (packed === undefined) return undefined;
  return { mapVersion: mapVersion ?? 0, rows: [], packed };
}

/** A PackedRows message with `lengths`, `data` and `meta` as views of `bytes`; undefined for anything non-canonical. */
export function decodePackedRows(bytes: Buffer): BulkInsertRequest['packed'] {
  const r = { pos: 0 };
  const message: NonNullable<BulkInsertRequest['packed']> = { format: 0, count: 0, lengths: EMPTY, data: EMPTY, meta: EMPTY };
  const seen = new Set<number>();
  while (r.pos < bytes.length) {
    const tag = varint(bytes, r);
    if (tag === undefined) return undefined;
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (seen.has(field)) return undefined;
    seen.add(field);
    if ((field === 1 || field === 2) && wire === WIRE_VARINT) {
      const n = varint(bytes, r);
      if (n === undefined || n >= TWO_32) return undefined;
      if (field === 1) message.format = n;
      else message.count = n;
    } else if (field >= 3 && field <= 5 && wire === WIRE_LEN) {
      const view = lengthDelimited(bytes, r);
      if (view === undefined) return undefined;
      if (field === 3) message.lengths = view;
      else if (field === 4) message.data = view;
      else message.meta = view;
    } else {
      return undefined;
    }
  }
  return message;
}

const EMPTY: Buffer = Buffer.alloc(0);

/** A varint up to 2^53 − 1 at `r.pos` (advancing it); undefined when larger or cut off. */
export const varint = readVarint;

/** A length-delimited field's body at `r.pos` as a view (advancing past it); undefined when cut off. */
export function lengthDelimited(bytes: Buffer, r: { pos: number }): Buffer | undefined {
  const length = varint(bytes, r);
  if (length === undefined || r.pos + length > bytes.length) return undefined;
  const view = bytes.subarray(r.pos, r.pos + length);
  r.pos += length;
  return view;
}

/**
 * Encodes a BulkInsertRequest to the bytes the generated encoder writes (same fields, same order,
 * defaults left out), for the client. A packed request is sized exactly first and written into one
 * allocation, its lengths, data and meta copied once (the generated path grows a writer, copies it
 * in finish() and again in Buffer.from: ~5 copies of each ~1 MiB batch). Per-row requests go
 * through the generated encoder, without the extra Buffer.from copy.
 */
/** Requests to encode into a pooled buffer (see encodeBulkInsertPooled), and the buffer each got. */
const encodePools = new WeakMap<BulkInsertRequest, BatchBufferPool>();
const pooledOutputs = new WeakMap<BulkInsertRequest, Buffer>();

/**
 * Has `encodeBulkInsert` write this packed request into a buffer taken from `pool` (the gRPC
 * serializer sees only the request). Give it back with `releaseEncodedBulkInsert` once the call
 * succeeded: the node answers a unary call only after reading the whole request, so grpc-js has
 * copied the bytes into its frame by then. After a failure nothing is given back (the GC takes it).
 */
export function encodeBulkInsertPooled(request: BulkInsertRequest, pool: BatchBufferPool): BulkInsertRequest {
  encodePools.set(request, pool);
  return request;
}

/** Gives the buffer a pooled request was encoded into back to its pool (once; a no-op otherwise). */
export function releaseEncodedBulkInsert(request: BulkInsertRequest): void {
  const out = pooledOutputs.get(request);
  if (out === undefined) return;
  pooledOutputs.delete(request);
  encodePools.get(request)?.give(out);
}

export function encodeBulkInsert(request: BulkInsertRequest): Buffer {
  const packed = request.packed;
  if (request.rows.length !== 0 || packed === undefined) {
    const bytes = BulkInsertRequestCodec.encode(request).finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  const { format, count, lengths, data, meta } = packed;
  if (!isUint(format, TWO_32) || !isUint(count, TWO_32)) throw new RangeError(`PackedRows format and count must be whole numbers 0–${TWO_32 - 1}, got ${format} and ${count}`);
  if (!isUint(request.mapVersion, 2 ** 53)) throw new RangeError(`mapVersion must be a whole number 0–2^53 − 1, got ${request.mapVersion}`);
  let inner = 0;
  if (format !== 0) inner += 1 + varintSize(format);
  if (count !== 0) inner += 1 + varintSize(count);
  if (lengths.length !== 0) inner += 1 + varintSize(lengths.length) + lengths.length;
  if (data.length !== 0) inner += 1 + varintSize(data.length) + data.length;
  if (meta.length !== 0) inner += 1 + varintSize(meta.length) + meta.length;
  const total = (request.mapVersion !== 0 ? 1 + varintSize(request.mapVersion) : 0) + 1 + varintSize(inner) + inner;
  const pool = encodePools.get(request);
  const out = pool === undefined ? Buffer.allocUnsafe(total) : pool.take(total);
  if (pool !== undefined) pooledOutputs.set(request, out);
  let pos = 0;
  if (request.mapVersion !== 0) {
    out[pos++] = (1 << 3) | WIRE_VARINT;
    pos = writeVarint(out, pos, request.mapVersion);
  }
  out[pos++] = (3 << 3) | WIRE_LEN;
  pos = writeVarint(out, pos, inner);
  if (format !== 0) {
    out[pos++] = (1 << 3) | WIRE_VARINT;
    pos = writeVarint(out, pos, format);
  }
  if (count !== 0) {
    out[pos++] = (2 << 3) | WIRE_VARINT;
    pos = writeVarint(out, pos, count);
  }
  pos = writeBytesField(out, pos, 3, lengths);
  pos = writeBytesField(out, pos, 4, data);
  pos = writeBytesField(out, pos, 5, meta);
  if (pos !== total) throw new Error(`encodeBulkInsert wrote ${pos} bytes of ${total}`);
  return out;
}

function isUint(n: number, bound: number): boolean {
  return Number.isInteger(n) && n >= 0 && n < bound;
}

function writeBytesField(out: Buffer, pos: number, field: number, bytes: Uint8Array): number {
  if (bytes.length === 0) return pos;
  out[pos++] = (field << 3) | WIRE_LEN;
  pos = writeVarint(out, pos, bytes.length);
  out.set(bytes, pos);
  return pos + bytes.length;
}
