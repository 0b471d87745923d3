import { create, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { decodeBulkPutRequest } from '../../gateway/bulk-put-codec.js';
import { BulkPutRequestSchema, BulkRowSchema } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';

const rowsOf = (decoded: ReturnType<typeof decodeBulkPutRequest>) => decoded.rows.map((r) => [Buffer.from(r.key).toString('hex'), Buffer.from(r.value).toString('hex')]);

describe('decodeBulkPutRequest', () => {
  it('reads what protobuf-es writes: empty, empty values, long keys and values (multi-byte lengths)', () => {
    const rows = [
      { key: Buffer.from('a'), value: Buffer.alloc(0) },
      { key: Buffer.alloc(300, 1), value: Buffer.alloc(70_000, 2) },
      { key: Buffer.from('zz'), value: Buffer.from('v') },
    ];
    const bytes = toBinary(BulkPutRequestSchema, create(BulkPutRequestSchema, { rows: rows.map((r) => create(BulkRowSchema, r)) }));
    const decoded = decodeBulkPutRequest(Buffer.from(bytes));
    expect(rowsOf(decoded)).toEqual(rows.map((r) => [r.key.toString('hex'), r.value.toString('hex')]));
    expect(decodeBulkPutRequest(new Uint8Array(0)).rows).toEqual([]);
  });

  it('hands anything else to protobuf-es: an unknown field is skipped, a truncated row is an error', () => {
    const row = Buffer.from(toBinary(BulkRowSchema, create(BulkRowSchema, { key: Buffer.from('k'), value: Buffer.from('v') })));
    // Row with an unknown varint field 3 after key and value; then a top-level unknown field 2.
    const withUnknown = Buffer.concat([Buffer.from([0x0a, row.length + 2]), row, Buffer.from([0x18, 0x05, 0x10, 0x01])]);
    expect(rowsOf(decodeBulkPutRequest(withUnknown))).toEqual([[Buffer.from('k').toString('hex'), Buffer.from('v').toString('hex')]]);
    const truncated = Buffer.concat([Buffer.from([0x0a, row.length + 5]), row]);
    expect(() => decodeBulkPutRequest(truncated)).toThrow();
  });
});
