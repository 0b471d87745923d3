import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { bulkPutSpans, decodeBulkPutRequest } from '../../gateway/bulk-put-codec.js';
import { BulkPutRequestSchema, BulkRowSchema } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';

/** The rows of a decoded request (spans or a protobuf-es message) as [key hex, value hex]. */
const rowsOf = (decoded: ReturnType<typeof decodeBulkPutRequest>) => {
  const { bytes, count, spans } = bulkPutSpans(decoded);
  const hex = (start: number, length: number) => Buffer.from(bytes.subarray(start, start + length)).toString('hex');
  return Array.from({ length: count }, (_, i) => [hex(spans[4 * i]!, spans[4 * i + 1]!), hex(spans[4 * i + 2]!, spans[4 * i + 3]!)]);
};

describe('decodeBulkPutRequest', () => {
  it('reads what protobuf-es writes: empty, empty values, long keys and values (multi-byte lengths)', () => {
    const rows = [
      { key: Buffer.from('a'), value: Buffer.alloc(0) },
      { key: Buffer.alloc(300, 1), value: Buffer.alloc(70_000, 2) },
      { key: Buffer.from('zz'), value: Buffer.from('v') },
    ];
    const bytes = toBinary(BulkPutRequestSchema, create(BulkPutRequestSchema, { rows: rows.map((r) => create(BulkRowSchema, r)) }));
    const message = Buffer.from(bytes);
    const decoded = decodeBulkPutRequest(message);
    // The canonical form is read by hand, as spans of the message (no copy).
    expect('spans' in decoded && decoded.bytes === message).toBe(true);
    expect(rowsOf(decoded)).toEqual(rows.map((r) => [r.key.toString('hex'), r.value.toString('hex')]));
    expect(rowsOf(decodeBulkPutRequest(new Uint8Array(0)))).toEqual([]);
  });

  it('hands anything else to protobuf-es: an unknown field is skipped, a truncated row is an error', () => {
    const row = Buffer.from(toBinary(BulkRowSchema, create(BulkRowSchema, { key: Buffer.from('k'), value: Buffer.from('v') })));
    // Row with an unknown varint field 3 after key and value; then a top-level unknown field 2.
    const withUnknown = Buffer.concat([Buffer.from([0x0a, row.length + 2]), row, Buffer.from([0x18, 0x05, 0x10, 0x01])]);
    expect(rowsOf(decodeBulkPutRequest(withUnknown))).toEqual([[Buffer.from('k').toString('hex'), Buffer.from('v').toString('hex')]]);
    const truncated = Buffer.concat([Buffer.from([0x0a, row.length + 5]), row]);
    expect(() => decodeBulkPutRequest(truncated)).toThrow();
  });

  it('keeps the last of a repeated key or value field, as protobuf-es does, and reads 2,000 rows (its span table grows)', () => {
    const twice = Buffer.from([0x0a, 0x0c, 0x0a, 0x01, 0x61, 0x12, 0x01, 0x31, 0x0a, 0x01, 0x62, 0x12, 0x01, 0x32]);
    expect(rowsOf(decodeBulkPutRequest(twice))).toEqual([[Buffer.from('b').toString('hex'), Buffer.from('2').toString('hex')]]);
    expect(rowsOf(decodeBulkPutRequest(twice))).toEqual(rowsOf(fromBinary(BulkPutRequestSchema, twice)));
    const many = Array.from({ length: 2000 }, (_, i) => ({ key: Buffer.from(`k${i}`), value: Buffer.from(`v${i}`) }));
    const bytes = toBinary(BulkPutRequestSchema, create(BulkPutRequestSchema, { rows: many }));
    expect(rowsOf(decodeBulkPutRequest(Buffer.from(bytes)))).toEqual(many.map((r) => [r.key.toString('hex'), r.value.toString('hex')]));
  });
});

describe('bulkPutSpans', () => {
  it('packs a protobuf-es message (the Connect path) into one buffer with the same rows', () => {
    const rows = [{ key: Buffer.from('a'), value: Buffer.alloc(0) }, { key: Buffer.alloc(0), value: Buffer.from('x') }, { key: Buffer.from('zz'), value: Buffer.alloc(40, 3) }];
    const spans = bulkPutSpans(create(BulkPutRequestSchema, { rows }));
    expect(spans.count).toBe(3);
    expect(rowsOf(spans)).toEqual(rows.map((r) => [r.key.toString('hex'), r.value.toString('hex')]));
  });
});
