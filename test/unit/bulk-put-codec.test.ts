import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { bulkPutSpans, decodeBulkPutRequest, packBulkRows } from '../../gateway/bulk-put-codec.js';
import { GatewayError } from '../../gateway/gateway-errors.js';
import { BulkPutRequestSchema, BulkRowSchema, PackedBulkRowsSchema } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';

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
    // Row with an unknown varint field 3 after key and value; then a top-level unknown field 3 (2 is `packed`).
    const withUnknown = Buffer.concat([Buffer.from([0x0a, row.length + 2]), row, Buffer.from([0x18, 0x05, 0x18, 0x01])]);
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

describe('BulkPutRequest.packed', () => {
  const rows = [
    { key: Buffer.from('a'), value: Buffer.alloc(0) },
    { key: Buffer.alloc(300, 1), value: Buffer.alloc(70_000, 2) },
    { key: Buffer.from('zz'), value: Buffer.from('v') },
  ];
  const hexRows = rows.map((r) => [r.key.toString('hex'), r.value.toString('hex')]);
  const encode = (packed: Parameters<typeof create<typeof PackedBulkRowsSchema>>[1]) => Buffer.from(toBinary(BulkPutRequestSchema, create(BulkPutRequestSchema, { packed: create(PackedBulkRowsSchema, packed) })));
  /** The GatewayError bulkPutSpans throws for what decodeBulkPutRequest made of `bytes`. */
  const refusal = (bytes: Uint8Array): GatewayError => {
    try {
      bulkPutSpans(decodeBulkPutRequest(bytes));
    } catch (err) {
      expect(err).toBeInstanceOf(GatewayError);
      return err as GatewayError;
    }
    throw new Error('accepted');
  };

  it('is read by hand as spans of the message, the same rows as the per-row form, with its fields in any order', () => {
    const message = Buffer.from(toBinary(BulkPutRequestSchema, create(BulkPutRequestSchema, { packed: packBulkRows(rows) })));
    const decoded = decodeBulkPutRequest(message);
    expect('spans' in decoded && decoded.bytes === message).toBe(true);
    expect(rowsOf(decoded)).toEqual(hexRows);
    // protobuf-es's reading of the same bytes (the Connect path) gives the same rows.
    expect(rowsOf(fromBinary(BulkPutRequestSchema, message))).toEqual(hexRows);
    // data, lengths, count, format — the reverse of the usual field order.
    const { lengths, data } = packBulkRows(rows);
    const field = (tag: number, body: Buffer) => Buffer.concat([Buffer.from([tag]), varint(body.length), body]);
    const inner = Buffer.concat([field(0x22, Buffer.from(data)), field(0x1a, Buffer.from(lengths)), Buffer.from([0x10, 3, 0x08, 1])]);
    const reversed = Buffer.concat([Buffer.from([0x12]), varint(inner.length), inner]);
    const decodedReversed = decodeBulkPutRequest(reversed);
    expect('spans' in decodedReversed).toBe(true);
    expect(rowsOf(decodedReversed)).toEqual(hexRows);
    expect(rowsOf(decodeBulkPutRequest(encode({ format: 1, count: 0 })))).toEqual([]);
  });

  it('a packed message whose parts do not fit together is refused naming the field (an unknown format, lengths against count, data against lengths)', () => {
    const { lengths, data } = packBulkRows(rows);
    expect(refusal(encode({ format: 2, count: 3, lengths, data }))).toMatchObject({ code: 'GATEWAY_INVALID_ARGUMENT', message: expect.stringContaining('BulkPutRequest.packed.format is 2, a packed row format this gateway does not know: it reads format 1') });
    expect(refusal(encode({ count: 3, lengths, data })).message).toContain('BulkPutRequest.packed.format is 0');
    expect(refusal(encode({ format: 1, count: 4, lengths, data })).message).toContain('BulkPutRequest.packed.lengths is 24 bytes, but count 4 needs 32 (8 per row)');
    expect(refusal(encode({ format: 1, count: 3, lengths, data: data.subarray(1) })).message).toContain(`BulkPutRequest.packed.data is ${data.length - 1} bytes, but the lengths of its 3 rows add up to ${data.length}`);
    expect(refusal(encode({ format: 1, count: 3, lengths, data: Buffer.concat([data, Buffer.from('x')]) })).message).toContain(`add up to ${data.length}`);
    // A key length past the data (a u32 near 2^32) is the same refusal, not a read outside the message.
    const huge = Buffer.from(lengths);
    huge.writeUInt32LE(0xffff_fff0, 8);
    expect(refusal(encode({ format: 1, count: 3, lengths: huge, data })).message).toContain('BulkPutRequest.packed.data is');
  });

  it('setting both rows and packed in one message is refused; a truncated packed field is a decoding error', () => {
    const both = Buffer.from(toBinary(BulkPutRequestSchema, create(BulkPutRequestSchema, { rows: [{ key: Buffer.from('k'), value: Buffer.from('v') }], packed: packBulkRows(rows) })));
    expect(refusal(both)).toMatchObject({ code: 'GATEWAY_INVALID_ARGUMENT', message: expect.stringContaining('BulkPutRequest sets both rows (1) and packed') });
    const { lengths, data } = packBulkRows(rows);
    const whole = encode({ format: 1, count: 3, lengths, data });
    expect(() => decodeBulkPutRequest(whole.subarray(0, whole.length - 1))).toThrow();
  });
});

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}
