import { create, fromBinary } from '@bufbuild/protobuf';
import { GatewayError } from './gateway-errors.js';
import { BulkPutRequestSchema, PackedBulkRowsSchema, type BulkPutRequest, type PackedBulkRows } from './proto/gen/shardpipe/gateway/v1/gateway_pb.js';

/** The packed row format this gateway reads (gateway.proto `PackedBulkRows.format`); a new layout gets a new number. */
export const PACKED_BULK_ROWS_FORMAT = 1;

/**
 * A BulkPutRequest's rows as spans of one buffer (the received message, or the rows packed into
 * one buffer): row i's key is `bytes[spans[4i], spans[4i] + spans[4i+1])`, its value starts at
 * `spans[4i+2]` and is `spans[4i+3]` bytes long. No object per row: the gateway copies each row
 * once, from here into the packed batch it sends (store/packed-rows.ts).
 */
export interface BulkPutSpans {
  bytes: Uint8Array;
  count: number;
  spans: Uint32Array;
}

/**
 * Decodes a BulkPutRequest (`repeated BulkRow rows = 1`, `BulkRow { bytes key = 1; bytes value = 2; }`)
 * in one pass into spans of `bytes`: protobuf-es's reflective decoder builds a message object per
 * row and costs more than the rest of a BulkPut's work on the gateway. Anything else in the
 * message (unknown fields, other wire types, a truncated length) goes to protobuf-es, which
 * decodes it as the schema says or throws its error.
 */
export function decodeBulkPutRequest(bytes: Uint8Array): BulkPutSpans | BulkPutRequest {
  const end = bytes.length;
  if (end > 0 && bytes[0] === 0x12) return decodePacked(bytes) ?? fromBinary(BulkPutRequestSchema, bytes);
  // A row takes at least 2 bytes (tag and length), so this bounds the row count.
  let spans: Uint32Array = new Uint32Array(4 * Math.min(1024, (end >>> 1) + 1));
  let count = 0;
  let pos = 0;
  const r = { pos: 0 };
  while (pos < end) {
    if (bytes[pos] !== 0x0a) return fromBinary(BulkPutRequestSchema, bytes);
    r.pos = pos + 1;
    const rowLength = varint(bytes, r);
    const rowStart = r.pos;
    const rowEnd = rowStart + rowLength;
    if (rowLength < 0 || rowEnd > end) return fromBinary(BulkPutRequestSchema, bytes);
    let keyStart = rowStart;
    let keyLength = 0;
    let valueStart = rowStart;
    let valueLength = 0;
    let p = rowStart;
    while (p < rowEnd) {
      const tag = bytes[p];
      if (tag !== 0x0a && tag !== 0x12) return fromBinary(BulkPutRequestSchema, bytes);
      r.pos = p + 1;
      const length = varint(bytes, r);
      const start = r.pos;
      if (length < 0 || start + length > rowEnd) return fromBinary(BulkPutRequestSchema, bytes);
      // Proto3: a repeated scalar field's last occurrence wins.
      if (tag === 0x0a) {
        keyStart = start;
        keyLength = length;
      } else {
        valueStart = start;
        valueLength = length;
      }
      p = start + length;
    }
    if (4 * count + 4 > spans.length) spans = grow(spans, Math.min(2 * spans.length, 4 * ((end >>> 1) + 1)));
    const s = 4 * count++;
    spans[s] = keyStart;
    spans[s + 1] = keyLength;
    spans[s + 2] = valueStart;
    spans[s + 3] = valueLength;
    pos = rowEnd;
  }
  return { bytes, count, spans: spans.subarray(0, 4 * count) };
}

/**
 * A message that is one `packed` field (`PackedBulkRows`, fields in any order, each at most once)
 * whose parts fit together, as spans of `bytes`; undefined for anything else (protobuf-es then
 * decodes it, and bulkPutSpans names what is wrong).
 */
function decodePacked(bytes: Uint8Array): BulkPutSpans | undefined {
  const r = { pos: 1 };
  const length = varint(bytes, r);
  if (length < 0 || r.pos + length !== bytes.length) return undefined;
  // Proto3 leaves zeros out: an absent field is 0 (format 0 is refused below, by protobuf-es's decoding).
  let format = 0;
  let count = 0;
  let lengthsStart = 0;
  let lengthsLength = 0;
  let dataStart = 0;
  let dataLength = 0;
  let seen = 0;
  while (r.pos < bytes.length) {
    const tag = bytes[r.pos++]!;
    const field = tag >>> 3;
    // Each field once, with its own wire type: anything else goes to protobuf-es.
    if (field < 1 || field > 4 || seen & (1 << field) || (tag & 7) !== (field <= 2 ? 0 : 2)) return undefined;
    seen |= 1 << field;
    const n = varint(bytes, r);
    if (n < 0) return undefined;
    if (field === 1) format = n;
    else if (field === 2) count = n;
    else {
      if (r.pos + n > bytes.length) return undefined;
      if (field === 3) [lengthsStart, lengthsLength] = [r.pos, n];
      else [dataStart, dataLength] = [r.pos, n];
      r.pos += n;
    }
  }
  if (format !== PACKED_BULK_ROWS_FORMAT || lengthsLength !== 8 * count) return undefined;
  const { spans, end } = spansFromLengths(bytes, lengthsStart, count, dataStart);
  return end === dataStart + dataLength ? { bytes, count, spans } : undefined;
}

/**
 * Spans of `count` rows whose key and value lengths are u32 LE pairs at `lengths[lengthsAt…]` and
 * whose bytes follow one another from `dataAt`; `end` is where the last row ends (the caller checks
 * it against the data it has: a span past it is never read).
 */
function spansFromLengths(lengths: Uint8Array, lengthsAt: number, count: number, dataAt: number): { spans: Uint32Array; end: number } {
  const spans = new Uint32Array(4 * count);
  let at = dataAt;
  for (let i = 0; i < count; i++) {
    const l = lengthsAt + 8 * i;
    const keyLength = u32le(lengths, l);
    const valueLength = u32le(lengths, l + 4);
    spans[4 * i] = at;
    spans[4 * i + 1] = keyLength;
    spans[4 * i + 2] = at + keyLength;
    spans[4 * i + 3] = valueLength;
    at += keyLength + valueLength;
  }
  return { spans, end: at };
}

/**
 * The rows of a request as spans: a decoded one as it is, a protobuf-es message's rows copied into
 * one buffer, its packed rows as spans of their buffer. GatewayError GATEWAY_INVALID_ARGUMENT
 * naming the field when the message sets both forms or its packed parts do not fit together.
 */
export function bulkPutSpans(request: BulkPutRequest | BulkPutSpans): BulkPutSpans {
  if ('spans' in request) return request;
  if (request.packed !== undefined) {
    if (request.rows.length > 0) {
      throw new GatewayError('GATEWAY_INVALID_ARGUMENT', `BulkPutRequest sets both rows (${request.rows.length}) and packed: send each message's rows in one form`);
    }
    return packedSpans(request.packed);
  }
  const rows = request.rows;
  let total = 0;
  for (const row of rows) total += row.key.byteLength + row.value.byteLength;
  const bytes = new Uint8Array(total);
  const spans = new Uint32Array(4 * rows.length);
  let at = 0;
  rows.forEach((row, i) => {
    bytes.set(row.key, at);
    spans[4 * i] = at;
    spans[4 * i + 1] = row.key.byteLength;
    at += row.key.byteLength;
    bytes.set(row.value, at);
    spans[4 * i + 2] = at;
    spans[4 * i + 3] = row.value.byteLength;
    at += row.value.byteLength;
  });
  return { bytes, count: rows.length, spans };
}

/**
 * Rows packed for `BulkPutRequest.packed` (format 1): their lengths and one buffer of their bytes,
 * for a TypeScript caller of the gateway. Any language builds the same two buffers by hand.
 */
export function packBulkRows(rows: readonly { key: Uint8Array; value: Uint8Array }[]): PackedBulkRows {
  let total = 0;
  for (const row of rows) total += row.key.byteLength + row.value.byteLength;
  const lengths = Buffer.allocUnsafe(8 * rows.length);
  const data = Buffer.allocUnsafe(total);
  let at = 0;
  rows.forEach((row, i) => {
    lengths.writeUInt32LE(row.key.byteLength, 8 * i);
    lengths.writeUInt32LE(row.value.byteLength, 8 * i + 4);
    data.set(row.key, at);
    at += row.key.byteLength;
    data.set(row.value, at);
    at += row.value.byteLength;
  });
  return create(PackedBulkRowsSchema, { format: PACKED_BULK_ROWS_FORMAT, count: rows.length, lengths, data });
}

/** Checks a decoded PackedBulkRows (format, count against lengths, lengths against data) and gives its rows as spans. */
function packedSpans(packed: PackedBulkRows): BulkPutSpans {
  const { format, count, lengths, data } = packed;
  const invalid = (message: string): GatewayError => new GatewayError('GATEWAY_INVALID_ARGUMENT', `BulkPutRequest.packed.${message}`);
  if (format !== PACKED_BULK_ROWS_FORMAT) {
    throw invalid(`format is ${format}, a packed row format this gateway does not know: it reads format ${PACKED_BULK_ROWS_FORMAT} (send format ${PACKED_BULK_ROWS_FORMAT}, or per-row \`rows\`)`);
  }
  if (lengths.length !== 8 * count) throw invalid(`lengths is ${lengths.length} bytes, but count ${count} needs ${8 * count} (8 per row)`);
  const { spans, end } = spansFromLengths(lengths, 0, count, 0);
  if (end !== data.length) throw invalid(`data is ${data.length} bytes, but the lengths of its ${count} rows add up to ${end}`);
  return { bytes: data, count, spans };
}

function u32le(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16)) + bytes[at + 3]! * 0x1000000;
}

function grow(spans: Uint32Array, length: number): Uint32Array {
  const out = new Uint32Array(length);
  out.set(spans);
  return out;
}

/** A varint of at most 5 bytes (lengths below 2^32) at `r.pos`, advancing it; −1 when malformed. */
function varint(bytes: Uint8Array, r: { pos: number }): number {
  let value = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (r.pos >= bytes.length) return -1;
    const b = bytes[r.pos++]!;
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return value;
  }
  return -1;
}
