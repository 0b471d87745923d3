import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { readVarint, varintSize, writeVarint } from '../store/index.js';
import {
  DeleteRequestSchema,
  DeleteResponseSchema,
  GetRequestSchema,
  GetResponseSchema,
  PutRequestSchema,
  PutResponseSchema,
  type DeleteRequest,
  type DeleteResponse,
  type GetRequest,
  type GetResponse,
  type PutRequest,
  type PutResponse,
} from './proto/gen/shardpipe/gateway/v1/gateway_pb.js';

/*
 * The gateway's point messages (Get, Put, Delete) written and read by hand: the same bytes
 * protobuf-es writes, and what it reads for the canonical forms (its reflective codec is a visible
 * share of a point call's CPU on the gateway). Anything else — a field twice, an unknown field,
 * another wire type, a number beyond 2^53 − 1, a truncated message, a partial get's `fields` —
 * goes to protobuf-es, which decodes it as the schema says or throws its error.
 */

/** A 64-bit request field as the hand decoder gives it: a number (always a safe integer) or protobuf-es's bigint. */
export type WireInt = bigint | number;

/** A PutRequest as the service reads it (protobuf-es's message fits too). */
export interface PutFields {
  key: Uint8Array;
  value: Uint8Array;
  expectedEtag?: WireInt;
  ttlMs: WireInt;
}

/** A DeleteRequest as the service reads it (protobuf-es's message fits too). */
export interface DeleteFields {
  key: Uint8Array;
  expectedEtag?: WireInt;
}

const EMPTY = new Uint8Array(0);
const WIRE_VARINT = 0;
const WIRE_LEN = 2;

/**
 * The fields of a message of bytes and uint64 fields, each at most once, numbered 1 to 4: `kinds[n]`
 * is the wire type field n must have. Bytes fields are views of `bytes`. Undefined for anything else.
 */
function readFlat(bytes: Uint8Array, kinds: readonly number[]): Array<Uint8Array | number | undefined> | undefined {
  const fields: Array<Uint8Array | number | undefined> = [undefined, undefined, undefined, undefined, undefined];
  const r = { pos: 0 };
  while (r.pos < bytes.length) {
    const tag = bytes[r.pos++]!;
    const field = tag >>> 3;
    if (tag >= 0x80 || field >= kinds.length || kinds[field] !== (tag & 7) || fields[field] !== undefined) return undefined;
    const n = readVarint(bytes, r);
    if (n === undefined) return undefined;
    if ((tag & 7) === WIRE_VARINT) {
      fields[field] = n;
    } else {
      if (r.pos + n > bytes.length) return undefined;
      fields[field] = bytes.subarray(r.pos, r.pos + n);
      r.pos += n;
    }
  }
  return fields;
}

const GET_REQUEST_KINDS = [-1, WIRE_LEN];
const PUT_REQUEST_KINDS = [-1, WIRE_LEN, WIRE_LEN, WIRE_VARINT, WIRE_VARINT];
const DELETE_REQUEST_KINDS = [-1, WIRE_LEN, WIRE_VARINT];

/** A GetRequest with `key` a view of `bytes`; a partial get (`fields`) through protobuf-es. */
export function decodeGetRequest(bytes: Uint8Array): Pick<GetRequest, 'key' | 'fields'> {
  const f = readFlat(bytes, GET_REQUEST_KINDS);
  if (f === undefined) return fromBinary(GetRequestSchema, bytes);
  return { key: (f[1] as Uint8Array | undefined) ?? EMPTY, fields: [] };
}

/** A PutRequest with `key` and `value` views of `bytes`; `expectedEtag` absent when the field is. */
export function decodePutRequest(bytes: Uint8Array): PutFields | PutRequest {
  const f = readFlat(bytes, PUT_REQUEST_KINDS);
  if (f === undefined) return fromBinary(PutRequestSchema, bytes);
  const request: PutFields = { key: (f[1] as Uint8Array | undefined) ?? EMPTY, value: (f[2] as Uint8Array | undefined) ?? EMPTY, ttlMs: (f[4] as number | undefined) ?? 0 };
  // `optional`: presence is the field on the wire, 0 included (0 = only if absent).
  if (f[3] !== undefined) request.expectedEtag = f[3] as number;
  return request;
}

/** A DeleteRequest with `key` a view of `bytes`. */
export function decodeDeleteRequest(bytes: Uint8Array): DeleteFields | DeleteRequest {
  const f = readFlat(bytes, DELETE_REQUEST_KINDS);
  if (f === undefined) return fromBinary(DeleteRequestSchema, bytes);
  const request: DeleteFields = { key: (f[1] as Uint8Array | undefined) ?? EMPTY };
  if (f[2] !== undefined) request.expectedEtag = f[2] as number;
  return request;
}

/** A GetResponse in protobuf's binary form (fields in number order, defaults left out, as protobuf-es writes it). */
export function encodeGetResponse(m: GetResponse): Buffer {
  if (!safe(m.etag) || !safe(m.updatedAtMs) || !safe(m.expiresAtMs)) return Buffer.from(toBinary(GetResponseSchema, m));
  return encodeRecord(m.value, Number(m.etag), Number(m.updatedAtMs), Number(m.expiresAtMs));
}

/** A PutResponse in protobuf's binary form (as protobuf-es writes it). */
export function encodePutResponse(m: PutResponse): Buffer {
  if (!safe(m.etag) || !safe(m.updatedAtMs) || !safe(m.expiresAtMs)) return Buffer.from(toBinary(PutResponseSchema, m));
  return encodeRecord(undefined, Number(m.etag), Number(m.updatedAtMs), Number(m.expiresAtMs));
}

const DELETED = Buffer.from([0x08, 0x01]);
const NOT_DELETED = Buffer.alloc(0);

/** A DeleteResponse in protobuf's binary form (as protobuf-es writes it). */
export function encodeDeleteResponse(m: DeleteResponse): Buffer {
  // grpc-js copies a message into its frame, so the two constant answers can be shared.
  return m.deleted ? DELETED : NOT_DELETED;
}

/** Whether a uint64 field's value can be written from a number. */
function safe(n: bigint): boolean {
  return n >= 0n && n <= 9007199254740991n;
}

/** `value` (field 1, GetResponse only) then etag, updated_at_ms, expires_at_ms as the next fields, zeros left out. */
function encodeRecord(value: Uint8Array | undefined, etag: number, updatedAtMs: number, expiresAtMs: number): Buffer {
  const first = value === undefined ? 1 : 2;
  let size = value !== undefined && value.length > 0 ? 1 + varintSize(value.length) + value.length : 0;
  if (etag !== 0) size += 1 + varintSize(etag);
  if (updatedAtMs !== 0) size += 1 + varintSize(updatedAtMs);
  if (expiresAtMs !== 0) size += 1 + varintSize(expiresAtMs);
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  if (value !== undefined && value.length > 0) {
    out[pos++] = 0x0a;
    pos = writeVarint(out, pos, value.length);
    out.set(value, pos);
    pos += value.length;
  }
  if (etag !== 0) {
    out[pos++] = first << 3;
    pos = writeVarint(out, pos, etag);
  }
  if (updatedAtMs !== 0) {
    out[pos++] = (first + 1) << 3;
    pos = writeVarint(out, pos, updatedAtMs);
  }
  if (expiresAtMs !== 0) {
    out[pos++] = (first + 2) << 3;
    pos = writeVarint(out, pos, expiresAtMs);
  }
  return out;
}
