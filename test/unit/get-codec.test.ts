import { create, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { decodeGetRequest, encodeGetResponse } from '../../gateway/get-codec.js';
import { GetRequestSchema, GetResponseSchema } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';

describe('gateway Get codec', () => {
  it('writes the bytes protobuf-es writes for GetResponse (empty value, zeros, 2^53 − 1, a 200 KiB value)', () => {
    const cases = [
      { value: Buffer.from('v'), etag: 1n, updatedAtMs: 1_764_000_000_000n, expiresAtMs: 0n },
      { value: Buffer.alloc(0), etag: 0n, updatedAtMs: 0n, expiresAtMs: 0n },
      { value: Buffer.alloc(200 * 1024, 3), etag: BigInt(Number.MAX_SAFE_INTEGER), updatedAtMs: 127n, expiresAtMs: 128n },
      { value: Buffer.from('big'), etag: 2n ** 63n, updatedAtMs: 1n, expiresAtMs: 1n },
    ];
    for (const c of cases) {
      const message = create(GetResponseSchema, c);
      expect(encodeGetResponse(message).toString('hex')).toBe(Buffer.from(toBinary(GetResponseSchema, message)).toString('hex'));
    }
  });

  it('reads a GetRequest as a view of its key; a non-canonical one through protobuf-es', () => {
    for (const key of [Buffer.from('k'), Buffer.alloc(0), Buffer.alloc(300, 9)]) {
      const bytes = Buffer.from(toBinary(GetRequestSchema, create(GetRequestSchema, { key })));
      expect(Buffer.from(decodeGetRequest(bytes).key).toString('hex')).toBe(key.toString('hex'));
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
});
