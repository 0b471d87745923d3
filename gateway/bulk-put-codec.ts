import { fromBinary } from '@bufbuild/protobuf';
import { BulkPutRequestSchema, type BulkPutRequest } from './proto/gen/shardpipe/gateway/v1/gateway_pb.js';

/** A BulkPutRequest's rows as the gateway reads them: views of the received message, no copy. */
export interface BulkPutRows {
  rows: Array<{ key: Uint8Array; value: Uint8Array }>;
}

/**
 * Decodes a BulkPutRequest (`repeated BulkRow rows = 1`, `BulkRow { bytes key = 1; bytes value = 2; }`)
 * in one pass, keys and values as views of `bytes`: protobuf-es's reflective decoder builds a
 * message object per row and costs more than the rest of a BulkPut's work on the gateway. Anything
 * else in the message (unknown fields, other wire types, a truncated length) goes to protobuf-es,
 * which decodes it as the schema says or throws its error.
 */
export function decodeBulkPutRequest(bytes: Uint8Array): BulkPutRows | BulkPutRequest {
  const rows: BulkPutRows['rows'] = [];
  const end = bytes.length;
  let pos = 0;
  while (pos < end) {
    if (bytes[pos] !== 0x0a) return fromBinary(BulkPutRequestSchema, bytes);
    const [rowLength, rowStart] = varint(bytes, pos + 1);
    const rowEnd = rowStart + rowLength;
    if (rowLength < 0 || rowEnd > end) return fromBinary(BulkPutRequestSchema, bytes);
    let key: Uint8Array = EMPTY;
    let value: Uint8Array = EMPTY;
    let p = rowStart;
    while (p < rowEnd) {
      const tag = bytes[p];
      if (tag !== 0x0a && tag !== 0x12) return fromBinary(BulkPutRequestSchema, bytes);
      const [length, start] = varint(bytes, p + 1);
      if (length < 0 || start + length > rowEnd) return fromBinary(BulkPutRequestSchema, bytes);
      // Proto3: a repeated scalar field's last occurrence wins.
      if (tag === 0x0a) key = bytes.subarray(start, start + length);
      else value = bytes.subarray(start, start + length);
      p = start + length;
    }
    rows.push({ key, value });
    pos = rowEnd;
  }
  return { rows };
}

const EMPTY = new Uint8Array(0);

/** A varint of at most 5 bytes (lengths below 2^32) at `pos`: [value, position after it], value −1 when malformed. */
function varint(bytes: Uint8Array, pos: number): [number, number] {
  let value = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (pos >= bytes.length) return [-1, pos];
    const b = bytes[pos++]!;
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return [value, pos];
  }
  return [-1, pos];
}
