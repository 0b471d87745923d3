import { fromBinary } from '@bufbuild/protobuf';
import { BulkPutRequestSchema, type BulkPutRequest } from './proto/gen/shardpipe/gateway/v1/gateway_pb.js';

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

/** The rows of a request as spans: a decoded one as it is, a protobuf-es message's rows copied into one buffer. */
export function bulkPutSpans(request: BulkPutRequest | BulkPutSpans): BulkPutSpans {
  if ('spans' in request) return request;
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
