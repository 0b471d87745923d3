import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { decodeDeleteRequest, decodeGetRequest, decodePutRequest, encodeDeleteResponse, encodeGetResponse, encodePutResponse } from '../../gateway/point-codec.js';
import {
  DeleteRequestSchema,
  DeleteResponseSchema,
  GetRequestSchema,
  GetResponseSchema,
  PutRequestSchema,
  PutResponseSchema,
} from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** A decoded request's fields as plain values (numbers and bigints compared as bigints), for comparing with protobuf-es. */
const plain = (m: Record<string, unknown>) =>
  Object.fromEntries(
    Object.entries(m)
      .filter(([k, v]) => k !== '$typeName' && v !== undefined)
      .map(([k, v]) => [k, v instanceof Uint8Array ? hex(v) : typeof v === 'number' ? BigInt(v) : v]),
  );
const numbers = [0n, 1n, 127n, 128n, 16_383n, 16_384n, 1_764_000_000_000n, BigInt(Number.MAX_SAFE_INTEGER)];

describe('gateway point codecs', () => {
  it('writes the bytes protobuf-es writes for GetResponse (empty value, zeros, 2^53 − 1, a 200 KiB value, beyond 2^53)', () => {
    const cases = [
      { value: Buffer.from('v'), etag: 1n, updatedAtMs: 1_764_000_000_000n, expiresAtMs: 0n },
      { value: Buffer.alloc(0), etag: 0n, updatedAtMs: 0n, expiresAtMs: 0n },
      { value: Buffer.alloc(200 * 1024, 3), etag: BigInt(Number.MAX_SAFE_INTEGER), updatedAtMs: 127n, expiresAtMs: 128n },
      { value: Buffer.from('big'), etag: 2n ** 63n, updatedAtMs: 1n, expiresAtMs: 1n },
    ];
    for (const c of cases) {
      const message = create(GetResponseSchema, c);
      expect(encodeGetResponse(message).toString('hex')).toBe(hex(toBinary(GetResponseSchema, message)));
    }
  });

  it('writes the bytes protobuf-es writes for PutResponse and DeleteResponse', () => {
    for (const etag of numbers) {
      for (const updatedAtMs of [0n, 1_764_000_000_000n]) {
        for (const expiresAtMs of [0n, 300n, 2n ** 64n - 1n]) {
          const message = create(PutResponseSchema, { etag, updatedAtMs, expiresAtMs });
          expect(encodePutResponse(message).toString('hex')).toBe(hex(toBinary(PutResponseSchema, message)));
        }
      }
    }
    for (const deleted of [true, false]) {
      const message = create(DeleteResponseSchema, { deleted });
      expect(encodeDeleteResponse(message).toString('hex')).toBe(hex(toBinary(DeleteResponseSchema, message)));
    }
  });

  it('reads a GetRequest as a view of its key; a non-canonical one through protobuf-es', () => {
    for (const key of [Buffer.from('k'), Buffer.alloc(0), Buffer.alloc(300, 9)]) {
      const bytes = Buffer.from(toBinary(GetRequestSchema, create(GetRequestSchema, { key })));
      expect(hex(decodeGetRequest(bytes).key)).toBe(key.toString('hex'));
      expect(decodeGetRequest(bytes).fields).toEqual([]);
    }
    // A partial get (fields, field 2) is decoded by protobuf-es, fields and all.
    const partial = Buffer.from(toBinary(GetRequestSchema, create(GetRequestSchema, { key: Buffer.from('doc'), fields: ['/a', '/b/c'] })));
    expect(decodeGetRequest(partial).fields).toEqual(['/a', '/b/c']);
    // The key field twice (the last wins) and an unknown field: protobuf-es decides.
    const twice = Buffer.from([0x0a, 0x01, 0x61, 0x0a, 0x01, 0x62, 0x78, 0x01]);
    expect(Buffer.from(decodeGetRequest(twice).key).toString()).toBe('b');
    expect(() => decodeGetRequest(Buffer.from([0x0a, 0x05, 0x61]))).toThrow();
  });

  it('reads PutRequest and DeleteRequest as protobuf-es does: values, an absent vs a 0 expected_etag, ttl', () => {
    const keys = [Buffer.from('k'), Buffer.alloc(0), Buffer.alloc(300, 9)];
    for (const key of keys) {
      for (const expectedEtag of [undefined, ...numbers]) {
        for (const ttlMs of [0n, 5000n, BigInt(Number.MAX_SAFE_INTEGER)]) {
          for (const value of [Buffer.alloc(0), Buffer.from('value'), Buffer.alloc(70_000, 1)]) {
            const bytes = Buffer.from(toBinary(PutRequestSchema, create(PutRequestSchema, { key, value, expectedEtag, ttlMs })));
            const decoded = decodePutRequest(bytes);
            expect(plain(decoded as never)).toEqual(plain(fromBinary(PutRequestSchema, bytes) as never));
            expect('$typeName' in decoded).toBe(false);
            expect(decoded.expectedEtag === undefined).toBe(expectedEtag === undefined);
          }
        }
        const bytes = Buffer.from(toBinary(DeleteRequestSchema, create(DeleteRequestSchema, { key, expectedEtag })));
        const decoded = decodeDeleteRequest(bytes);
        expect(plain(decoded as never)).toEqual(plain(fromBinary(DeleteRequestSchema, bytes) as never));
        expect('$typeName' in decoded).toBe(false);
      }
    }
  });

  it('hands non-canonical Put and Delete requests to protobuf-es: a repeated field, an unknown field, a number beyond 2^53 − 1; truncated ones are errors', () => {
    const odd = [
      Buffer.from([0x0a, 0x01, 0x61, 0x0a, 0x01, 0x62, 0x12, 0x01, 0x76]), // key twice: the last wins
      Buffer.from([0x0a, 0x01, 0x61, 0x12, 0x01, 0x76, 0x78, 0x01]), // unknown field 15
      Buffer.from([0x0a, 0x01, 0x61, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), // expected_etag 2^64 − 1
      Buffer.from([0x0a, 0x01, 0x61, 0x20, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]), // ttl_ms 2^53
    ];
    for (const bytes of odd) {
      const decoded = decodePutRequest(bytes);
      expect('$typeName' in decoded).toBe(true);
      expect(plain(decoded as never)).toEqual(plain(fromBinary(PutRequestSchema, bytes) as never));
    }
    const deleteBig = Buffer.from([0x0a, 0x01, 0x61, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    expect(decodeDeleteRequest(deleteBig).expectedEtag).toBe(2n ** 64n - 1n);
    // A Put field in a Delete (value, field 2 as bytes: the wrong wire type for expected_etag) is protobuf-es's to judge.
    expect(() => decodeDeleteRequest(Buffer.from([0x0a, 0x01, 0x61, 0x12, 0x01, 0x76]))).toThrow();
    expect(() => decodePutRequest(Buffer.from([0x0a, 0x05, 0x61]))).toThrow();
    expect(() => decodePutRequest(Buffer.from([0x0a, 0x01, 0x61, 0x18]))).toThrow();
    expect(() => decodeDeleteRequest(Buffer.from([0x0a, 0x05, 0x61]))).toThrow();
  });
});
