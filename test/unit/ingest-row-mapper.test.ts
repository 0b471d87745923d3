import {
  Binary,
  Bool,
  DateDay,
  Decimal,
  Dictionary,
  Field,
  FixedSizeBinary,
  Float16,
  Float32,
  Float64,
  Int16,
  Int32,
  Int64,
  Int8,
  LargeUtf8,
  List,
  Map_,
  Struct,
  Table,
  TimestampMicrosecond,
  TimestampMillisecond,
  TimestampNanosecond,
  TimestampSecond,
  Uint16,
  Uint32,
  Uint64,
  Uint8,
  Utf8,
  makeData,
  makeVector,
  vectorFromArray,
  type DataType,
  type RecordBatch,
  type Vector,
} from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_KEY_BYTES } from '../../store/index.js';
import { IngestError, createRowMapper, encodeIntKey, type MappedBatch, type RowMapperOptions } from '../../ingest/index.js';

const where = { file: '/drop/part-0.parquet', rowGroup: 3 };

function batchOf(columns: Record<string, Vector>): RecordBatch {
  const table = new Table(columns);
  expect(table.batches).toHaveLength(1);
  return table.batches[0]!;
}

function map(columns: Record<string, Vector>, options: Partial<RowMapperOptions> & { keyColumn: string }): MappedBatch {
  return createRowMapper(options).mapBatch(batchOf(columns), where);
}

function docs(mapped: MappedBatch): Array<Record<string, unknown>> {
  return mapped.rows.map((r) => JSON.parse(r.value.toString('utf8')) as Record<string, unknown>);
}

function sortedBytewise(keys: Buffer[]): Buffer[] {
  return [...keys].sort(Buffer.compare);
}

describe('key encodings', () => {
  const signed: Array<[DataType, Array<number | bigint>, number]> = [
    [new Int8(), [-128, -2, -1, 0, 1, 2, 127], 1],
    [new Int16(), [-32768, -300, -1, 0, 1, 255, 256, 32767], 2],
    [new Int32(), [-2147483648, -65536, -1, 0, 1, 65536, 2147483647], 4],
    [new Int64(), [-(2n ** 63n), -(2n ** 40n), -1n, 0n, 1n, 2n ** 40n, 2n ** 63n - 1n], 8],
  ];
  it.each(signed)('%s keys are fixed width and sort bytewise like the numbers, negatives first', (type, values, width) => {
    const shuffled = [...values].reverse();
    const mapped = map({ k: vectorFromArray(shuffled, type) }, { keyColumn: 'k' });
    expect(mapped.rejects).toEqual([]);
    const keys = mapped.rows.map((r) => r.key);
    for (const k of keys) expect(k.byteLength).toBe(width);
    // Sorting the keys bytewise must give the values in numeric order.
    const order = sortedBytewise(keys).map((k) => keys.findIndex((x) => x.equals(k)));
    expect(order.map((i) => shuffled[i])).toEqual(values);
  });

  it('signed integers flip the sign bit of the big-endian two’s complement', () => {
    const mapped = map({ k: vectorFromArray([-1, 0, 1], new Int32()) }, { keyColumn: 'k' });
    expect(mapped.rows.map((r) => r.key.toString('hex'))).toEqual(['7fffffff', '80000000', '80000001']);
    expect(encodeIntKey(-1n, 8, true).toString('hex')).toBe('7fffffffffffffff');
  });

  const unsigned: Array<[DataType, Array<number | bigint>, number]> = [
    [new Uint8(), [0, 1, 255], 1],
    [new Uint16(), [0, 256, 65535], 2],
    [new Uint32(), [0, 1, 4294967295], 4],
    [new Uint64(), [0n, 1n, 2n ** 64n - 1n], 8],
  ];
  it.each(unsigned)('%s keys are plain big-endian', (type, values, width) => {
    const mapped = map({ k: vectorFromArray(values, type) }, { keyColumn: 'k' });
    const keys = mapped.rows.map((r) => r.key);
    expect(keys.map((k) => k.byteLength)).toEqual(values.map(() => width));
    expect(keys[0]!.equals(Buffer.alloc(width))).toBe(true);
    expect(keys[2]!.equals(Buffer.alloc(width, 0xff))).toBe(true);
    expect(sortedBytewise(keys)).toEqual(keys);
  });

  it('timestamps and dates are their underlying integer as a signed int64 key', () => {
    const ts = makeVector({ type: new TimestampNanosecond(), data: BigInt64Array.from([-5n, 0n, 1_700_000_000_000_000_000n]) });
    const tsKeys = map({ k: ts }, { keyColumn: 'k' }).rows.map((r) => r.key);
    expect(tsKeys).toEqual([encodeIntKey(-5n, 8, true), encodeIntKey(0n, 8, true), encodeIntKey(1_700_000_000_000_000_000n, 8, true)]);
    const days = makeVector({ type: new DateDay(), data: Int32Array.from([-1, 19_000]) });
    expect(map({ k: days }, { keyColumn: 'k' }).rows.map((r) => r.key)).toEqual([encodeIntKey(-1n, 8, true), encodeIntKey(19_000n, 8, true)]);
  });

  it('strings are their UTF-8 bytes, binary its raw bytes, dictionaries their values', () => {
    expect(map({ k: vectorFromArray(['a', 'é', '日本'], new Utf8()) }, { keyColumn: 'k' }).rows.map((r) => r.key.toString('utf8'))).toEqual(['a', 'é', '日本']);
    expect(map({ k: vectorFromArray(['x'], new LargeUtf8()) }, { keyColumn: 'k' }).rows[0]!.key.toString('hex')).toBe('78');
    const bin = vectorFromArray([Uint8Array.of(0, 255), Uint8Array.of(1)], new Binary());
    expect(map({ k: bin }, { keyColumn: 'k' }).rows.map((r) => r.key.toString('hex'))).toEqual(['00ff', '01']);
    const fixed = makeVector(makeData({ type: new FixedSizeBinary(2), length: 2, data: Uint8Array.of(9, 8, 7, 6) }));
    expect(map({ k: fixed }, { keyColumn: 'k' }).rows.map((r) => r.key.toString('hex'))).toEqual(['0908', '0706']);
    const dict = vectorFromArray(['b', 'a', 'b'], new Dictionary(new Utf8(), new Int32()));
    expect(map({ k: dict }, { keyColumn: 'k' }).rows.map((r) => r.key.toString('utf8'))).toEqual(['b', 'a', 'b']);
  });

  it('keys do not share memory with the batch', () => {
    const mapped = map({ k: vectorFromArray(['abc'], new Utf8()) }, { keyColumn: 'k' });
    mapped.rows[0]!.key[0] = 0x7a;
    expect(mapped.rows[0]!.key.toString()).toBe('zbc');
  });

  it.each([new Float64(), new Bool()])('a %s key column is refused with INGEST_UNSUPPORTED_KEY_TYPE', (type) => {
    const vector = vectorFromArray(type instanceof Bool ? [true] : [1.5], type);
    expect(() => map({ k: vector }, { keyColumn: 'k' })).toThrow(expect.objectContaining({ code: 'INGEST_UNSUPPORTED_KEY_TYPE', context: expect.objectContaining({ file: where.file }) }));
  });

  it('a missing key or value column is refused with the columns the file has', () => {
    const columns = { id: vectorFromArray([1], new Int32()), name: vectorFromArray(['n'], new Utf8()) };
    let err: unknown;
    try {
      map(columns, { keyColumn: 'nope' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IngestError);
    expect((err as IngestError).code).toBe('INGEST_KEY_COLUMN_MISSING');
    expect((err as IngestError).message).toContain('id (Int32), name (Utf8)');
    expect(() => map(columns, { keyColumn: 'id', valueColumn: 'nope' })).toThrow(expect.objectContaining({ code: 'INGEST_VALUE_COLUMN_MISSING' }));
  });

  it('options are validated at once', () => {
    expect(() => createRowMapper({ keyColumn: '' })).toThrow(TypeError);
    expect(() => createRowMapper({ keyColumn: 'k', maxKeyBytes: 0 })).toThrow(RangeError);
    expect(() => createRowMapper({ keyColumn: 'k', maxValueBytes: 1.5 })).toThrow(RangeError);
    expect(createRowMapper({ keyColumn: 'k' }).options).toMatchObject({ maxKeyBytes: DEFAULT_MAX_KEY_BYTES, maxValueBytes: 4 * 1024 * 1024 });
  });
});

describe('JSON value documents', () => {
  it('hold every column but the key, with the documented rules', () => {
    const big = 2n ** 53n + 1n;
    const mapped = map(
      {
        id: vectorFromArray([1, 2], new Int32()),
        small: vectorFromArray([9007199254740991n, -9007199254740991n], new Int64()),
        large: vectorFromArray([big, -big], new Int64()),
        u: vectorFromArray([2n ** 64n - 1n, 0n], new Uint64()),
        bytes: vectorFromArray([Uint8Array.of(0, 1, 2), null], new Binary()),
        f: vectorFromArray([Number.NaN, Number.POSITIVE_INFINITY], new Float64()),
        g: vectorFromArray([Number.NEGATIVE_INFINITY, 0.1], new Float64()),
        f32: vectorFromArray([2.2, -0.5], new Float32()),
        half: vectorFromArray([1.5, -2], new Float16()),
        s: vectorFromArray(['quote " and \\ and \n', null], new Utf8()),
        b: vectorFromArray([true, false], new Bool()),
      },
      { keyColumn: 'id' },
    );
    expect(mapped.rejects).toEqual([]);
    expect(docs(mapped)).toEqual([
      { small: 9007199254740991, large: '9007199254740993', u: '18446744073709551615', bytes: 'AAEC', f: 'NaN', g: '-Infinity', f32: 2.2, half: 1.5, s: 'quote " and \\ and \n', b: true },
      { small: -9007199254740991, large: '-9007199254740993', u: 0, bytes: null, f: 'Infinity', g: 0.1, f32: -0.5, half: -2, s: null, b: false },
    ]);
  });

  it('render timestamps as ISO-8601 UTC at the unit’s precision, dates as days, decimals exactly', () => {
    const mapped = map(
      {
        id: vectorFromArray([1, 2], new Int32()),
        s: makeVector({ type: new TimestampSecond(), data: BigInt64Array.from([0n, -1n]) }),
        ms: makeVector({ type: new TimestampMillisecond(), data: BigInt64Array.from([1_704_141_296_123n, -1n]) }),
        us: makeVector({ type: new TimestampMicrosecond(), data: BigInt64Array.from([1_704_141_296_123_456n, -1n]) }),
        ns: makeVector({ type: new TimestampNanosecond(), data: BigInt64Array.from([1_704_141_296_123_456_789n, -1n]) }),
        d: makeVector({ type: new DateDay(), data: Int32Array.from([0, 19_723]) }),
        dec: makeVector(makeData({ type: new Decimal(2, 10, 128), length: 2, data: Uint32Array.from([12345, 0, 0, 0, 0xffffffff - 4, 0xffffffff, 0xffffffff, 0xffffffff]) })),
      },
      { keyColumn: 'id' },
    );
    expect(docs(mapped)).toEqual([
      { s: '1970-01-01T00:00:00Z', ms: '2024-01-01T20:34:56.123Z', us: '2024-01-01T20:34:56.123456Z', ns: '2024-01-01T20:34:56.123456789Z', d: '1970-01-01', dec: '123.45' },
      { s: '1969-12-31T23:59:59Z', ms: '1969-12-31T23:59:59.999Z', us: '1969-12-31T23:59:59.999999Z', ns: '1969-12-31T23:59:59.999999999Z', d: '2024-01-01', dec: '-0.05' },
    ]);
  });

  it('render lists, structs and maps as JSON', () => {
    const list = vectorFromArray([[1, 2], [], null], new List(new Field('item', new Int32(), true)));
    const struct = vectorFromArray(
      [{ a: 1, b: 'x' }, { a: null, b: 'y' }, null],
      new Struct([new Field('a', new Int32(), true), new Field('b', new Utf8())]),
    );
    const mapType = new Map_<Utf8, Int64>(new Field('entries', new Struct<{ key: Utf8; value: Int64 }>([new Field('key', new Utf8()), new Field('value', new Int64(), true)])));
    const maps = vectorFromArray([new Map([['k', 1n]]), new Map(), null] as Array<Map<string, bigint> | null>, mapType);
    const mapped = map({ id: vectorFromArray([1, 2, 3], new Int32()), list, struct, maps }, { keyColumn: 'id' });
    expect(docs(mapped)).toEqual([
      { list: [1, 2], struct: { a: 1, b: 'x' }, maps: { k: 1 } },
      { list: [], struct: { a: null, b: 'y' }, maps: {} },
      { list: null, struct: null, maps: null },
    ]);
  });

  it('add partition values as string fields, unless the file has that column', () => {
    const mapped = map(
      { id: vectorFromArray([1], new Int32()), region: vectorFromArray(['from-file'], new Utf8()) },
      { keyColumn: 'id', partitionValues: { dt: '2026-01-01', region: 'from-folder' } },
    );
    expect(docs(mapped)).toEqual([{ region: 'from-file', dt: '2026-01-01' }]);
    expect(docs(map({ id: vectorFromArray([1], new Int32()) }, { keyColumn: 'id', partitionValues: { dt: 'x' } }))).toEqual([{ dt: 'x' }]);
    expect(docs(map({ id: vectorFromArray([1], new Int32()) }, { keyColumn: 'id' }))).toEqual([{}]);
  });

  it('--value-column takes one column’s bytes: strings as UTF-8, binary raw, others as JSON', () => {
    const columns = {
      id: vectorFromArray(['a', 'b'], new Utf8()),
      text: vectorFromArray(['héllo', 'x'], new Utf8()),
      raw: vectorFromArray([Uint8Array.of(0, 255), Uint8Array.of()], new Binary()),
      n: vectorFromArray([2n ** 60n, 1n], new Int64()),
    };
    expect(map(columns, { keyColumn: 'id', valueColumn: 'text' }).rows.map((r) => r.value.toString('utf8'))).toEqual(['héllo', 'x']);
    expect(map(columns, { keyColumn: 'id', valueColumn: 'raw' }).rows.map((r) => r.value.toString('hex'))).toEqual(['00ff', '']);
    expect(map(columns, { keyColumn: 'id', valueColumn: 'n' }).rows.map((r) => r.value.toString('utf8'))).toEqual(['"1152921504606846976"', '1']);
  });
});

describe('rejects', () => {
  it('null, empty and over-long keys and over-large values are rejects with their row, never throws', () => {
    const keys = vectorFromArray(['ok', null, '', 'x'.repeat(20), 'big', 'ok2'], new Utf8());
    const values = vectorFromArray(['v', 'v', 'v', 'v', 'v'.repeat(200), 'v'], new Utf8());
    const mapper = createRowMapper({ keyColumn: 'k', maxKeyBytes: 10, maxValueBytes: 100 });
    const mapped = mapper.mapBatch(batchOf({ k: keys, v: values }), { ...where, rowOffset: 1000 });
    expect(mapped.rows.map((r) => r.key.toString())).toEqual(['ok', 'ok2']);
    expect(mapped.rejects).toEqual([
      { file: where.file, rowGroup: 3, row: 1001, reason: 'key column "k" is null' },
      { file: where.file, rowGroup: 3, row: 1002, reason: 'key is empty: keys must be 1 or more bytes' },
      { file: where.file, rowGroup: 3, row: 1003, keyHex: Buffer.from('x'.repeat(20)).toString('hex'), reason: 'key is 20 bytes, over the limit of 10 bytes' },
      { file: where.file, rowGroup: 3, row: 1004, keyHex: Buffer.from('big').toString('hex'), reason: expect.stringMatching(/^value is \d+ bytes, over the limit of 100 bytes$/) },
    ]);
  });

  it('a null value column value is a reject', () => {
    const mapped = map({ k: vectorFromArray(['a', 'b'], new Utf8()), v: vectorFromArray([null, 'x'], new Utf8()) }, { keyColumn: 'k', valueColumn: 'v' });
    expect(mapped.rows.map((r) => r.key.toString())).toEqual(['b']);
    expect(mapped.rejects).toEqual([{ file: where.file, rowGroup: 3, row: 0, keyHex: '61', reason: 'value column "v" is null' }]);
  });

  it('an over-long key shows only its first 256 bytes', () => {
    const mapped = map({ k: vectorFromArray(['y'.repeat(5000)], new Utf8()) }, { keyColumn: 'k' });
    expect(mapped.rejects[0]!.keyHex).toHaveLength(512);
    expect(mapped.rejects[0]!.reason).toContain('first 256 bytes');
  });
});
