import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { varintSize, writeVarint } from '../store/index.js';
import { GetRequestSchema, GetResponseSchema, type GetRequest, type GetResponse } from './proto/gen/shardpipe/gateway/v1/gateway_pb.js';

/**
 * The gateway's Get messages written and read by hand (the same bytes protobuf-es writes; its
 * reflective codec is a visible share of a Get's CPU on the gateway). Anything not in the one
 * canonical form (`GetRequest` = field 1 once, or empty; a partial get's `fields` too) goes to protobuf-es.
 */
export function decodeGetRequest(bytes: Uint8Array): Pick<GetRequest, 'key' | 'fields'> {
  if (bytes.length === 0) return { key: new Uint8Array(0), fields: [] };
  if (bytes[0] === 0x0a) {
    let length = 0;
    let pos = 1;
    for (let shift = 0; shift < 35 && pos < bytes.length; shift += 7) {
      const b = bytes[pos++]!;
      length += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) {
        if (pos + length === bytes.length) return { key: bytes.subarray(pos), fields: [] };
        break;
      }
    }
  }
  return fromBinary(GetRequestSchema, bytes);
}

/** A GetResponse in protobuf's binary form (fields in number order, defaults left out, as protobuf-es writes it). */
export function encodeGetResponse(m: GetResponse): Buffer {
  const numbers = [m.etag, m.updatedAtMs, m.expiresAtMs];
  if (numbers.some((n) => n > BigInt(Number.MAX_SAFE_INTEGER) || n < 0n)) return Buffer.from(toBinary(GetResponseSchema, m));
  const value = m.value;
  let size = value.length > 0 ? 1 + varintSize(value.length) + value.length : 0;
  for (const n of numbers) if (n !== 0n) size += 1 + varintSize(Number(n));
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  if (value.length > 0) {
    out[pos++] = 0x0a;
    pos = writeVarint(out, pos, value.length);
    out.set(value, pos);
    pos += value.length;
  }
  for (let i = 0; i < 3; i++) {
    if (numbers[i] === 0n) continue;
    out[pos++] = (i + 2) << 3;
    pos = writeVarint(out, pos, Number(numbers[i]));
  }
  return out;
}
