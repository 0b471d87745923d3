import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_KEY_BYTES, Key, StoreError, displayBytes } from '../../store/index.js';
import { thrownBy } from '../helpers/rejection.js';

/** Runs `fn`, expecting a StoreError; returns it. */
const storeErrorOf = (fn: () => unknown): StoreError => thrownBy(fn, StoreError);

describe('Key validation', () => {
  it('rejects an empty key with STORE_INVALID_KEY', () => {
    const err = storeErrorOf(() => Key.fromBytes(Buffer.alloc(0)));
    expect(err.code).toBe('STORE_INVALID_KEY');
    expect(err.message).toBe('key is empty: keys must be 1 or more bytes');
    expect(err.grpcStatus).toBe(3); // INVALID_ARGUMENT
    expect(err.retryable).toBe(false);
    expect(() => Key.fromUtf8('')).toThrow(StoreError);
  });

  it('accepts a key of exactly the default limit and rejects one byte more', () => {
    expect(DEFAULT_MAX_KEY_BYTES).toBe(4096);
    expect(Key.fromBytes(Buffer.alloc(4096, 0x61)).bytes.length).toBe(4096);
    const err = storeErrorOf(() => Key.fromBytes(Buffer.alloc(4097, 0x61)));
    expect(err.code).toBe('STORE_INVALID_KEY');
    expect(err.message).toBe('key is 4097 bytes, over the limit of 4096 bytes');
    // The context carries a bounded hex preview, not the whole key.
    expect(err.context.keyHex).toBe('61'.repeat(32) + '…');
  });

  it('honours a custom limit, counting bytes (not characters)', () => {
    expect(Key.fromUtf8('abcd', 4).toUtf8()).toBe('abcd');
    const err = storeErrorOf(() => Key.fromUtf8('abcde', 4));
    expect(err.code).toBe('STORE_INVALID_KEY');
    expect(err.message).toBe('key is 5 bytes, over the limit of 4 bytes');
    // "é" is 2 UTF-8 bytes: 3 characters, 4 bytes fits; 4 characters, 5 bytes does not.
    expect(Key.fromUtf8('aéb', 4).bytes.length).toBe(4);
    expect(() => Key.fromUtf8('aébc', 4)).toThrow('key is 5 bytes, over the limit of 4 bytes');
    expect(Key.fromBytes(Buffer.from([1]), 1).bytes).toEqual(Buffer.from([1]));
  });

  it('problem() explains without throwing', () => {
    expect(Key.problem(Buffer.from('k'))).toBeUndefined();
    expect(Key.problem(undefined)).toBe('key is missing');
    expect(Key.problem(null)).toBe('key is missing');
    expect(Key.problem(new Uint8Array(0))).toBe('key is empty: keys must be 1 or more bytes');
    expect(Key.problem(new Uint8Array(3), 2)).toBe('key is 3 bytes, over the limit of 2 bytes');
  });

  it('fromBytes wraps a Uint8Array view without copying', () => {
    const backing = new Uint8Array([9, 1, 2, 3, 9]);
    const key = Key.fromBytes(backing.subarray(1, 4));
    expect(Buffer.isBuffer(key.bytes)).toBe(true);
    expect([...key.bytes]).toEqual([1, 2, 3]);
    backing[2] = 7;
    expect([...key.bytes]).toEqual([1, 7, 3]);
  });
});

describe('Key.fromUtf8 / Key.fromHex', () => {
  it('fromUtf8 encodes as UTF-8', () => {
    expect(Key.fromUtf8('user:é').toHex()).toBe(Buffer.from('user:é', 'utf8').toString('hex'));
    expect(Key.fromUtf8('user:é').toUtf8()).toBe('user:é');
  });

  it('fromHex accepts upper- and lower-case hex', () => {
    expect([...Key.fromHex('00ff7A').bytes]).toEqual([0x00, 0xff, 0x7a]);
    expect(Key.fromHex('00FF7a').toHex()).toBe('00ff7a');
  });

  it.each([
    ['odd number of digits', 'abc'],
    ['non-hex characters', 'zz'],
    ['0x prefix', '0x61'],
    ['whitespace', '61 62'],
  ])('fromHex rejects %s with STORE_INVALID_KEY', (_label, hex) => {
    const err = storeErrorOf(() => Key.fromHex(hex));
    expect(err.code).toBe('STORE_INVALID_KEY');
    expect(err.message).toBe(`invalid hex key "${hex}": expected an even number of hex digits`);
  });

  it('fromHex of "" is an empty key, rejected as such', () => {
    const err = storeErrorOf(() => Key.fromHex(''));
    expect(err.code).toBe('STORE_INVALID_KEY');
    expect(err.message).toMatch(/empty/);
  });

  it('fromHex applies the length limit to the decoded bytes', () => {
    expect(Key.fromHex('aabb', 2).bytes.length).toBe(2);
    expect(storeErrorOf(() => Key.fromHex('aabbcc', 2)).message).toBe('key is 3 bytes, over the limit of 2 bytes');
  });
});

describe('Key ordering is bytewise', () => {
  const k = (text: string) => Key.fromUtf8(text);
  const b = (...bytes: number[]) => Key.fromBytes(Buffer.from(bytes));

  it('orders ASCII like strings', () => {
    expect(k('a').compare(k('b'))).toBeLessThan(0);
    expect(k('b').compare(k('a'))).toBeGreaterThan(0);
    expect(k('a').compare(k('a'))).toBe(0);
    expect(k('a').compare(k('ab'))).toBeLessThan(0); // a prefix sorts first
    expect(k('B').compare(k('a'))).toBeLessThan(0); // upper case (0x42) below lower case (0x61)
    expect(k('a').equals(k('a'))).toBe(true);
    expect(k('a').equals(k('ab'))).toBe(false);
  });

  it('puts bytes above 0x7f after every ASCII byte', () => {
    expect(b(0xff).compare(k('z'))).toBeGreaterThan(0);
    expect(b(0x80).compare(k('~'))).toBeGreaterThan(0);
    expect(b(0x00).compare(k('a'))).toBeLessThan(0);
    expect(b(0xff).compare(b(0xff, 0x00))).toBeLessThan(0);
    expect(Key.compare(Buffer.from([0xff]), Buffer.from('zzz'))).toBeGreaterThan(0);
  });

  it('differs from JavaScript string (UTF-16) order where UTF-8 bytes disagree', () => {
    const bmpHigh = '\uffff'; // UTF-8 ef bf bf
    const astral = '\u{10000}'; // UTF-16 d800 dc00, UTF-8 f0 90 80 80
    expect(bmpHigh > astral).toBe(true); // string order
    expect(k(bmpHigh).compare(k(astral))).toBeLessThan(0); // byte order
  });

  it('sorting keys with Key.compare gives byte order, not string order', () => {
    const texts = ['b', '\u{1F600}', 'a', '\uffff', 'ab', 'A', '\u00e9'];
    const byBytes = texts.map(k).sort((x, y) => x.compare(y)).map((x) => x.toUtf8());
    expect(byBytes).toEqual(['A', 'a', 'ab', 'b', '\u00e9', '\uffff', '\u{1F600}']);
    const byString = [...texts].sort();
    expect(byString).not.toEqual(byBytes);
  });
});

describe('Key.toDisplay', () => {
  it('shows printable ASCII as is', () => {
    expect(Key.fromUtf8('user:42 ~!').toDisplay()).toBe('user:42 ~!');
    expect(String(Key.fromUtf8('abc'))).toBe('abc');
  });

  it('shows anything with a non-printable byte as 0x-hex', () => {
    expect(Key.fromBytes(Buffer.from([0x61, 0x00, 0x62])).toDisplay()).toBe('0x610062');
    expect(Key.fromBytes(Buffer.from([0xff])).toDisplay()).toBe('0xff');
    expect(Key.fromUtf8('tab\there').toDisplay()).toBe('0x' + Buffer.from('tab\there').toString('hex'));
    expect(Key.fromBytes(Buffer.from([0x7f])).toDisplay()).toBe('0x7f'); // DEL is not printable
    expect(Key.fromUtf8('é').toDisplay()).toBe('0xc3a9');
  });

  it('displayBytes renders the boundaries of printable ASCII and respects views', () => {
    expect(displayBytes(Buffer.from([0x20, 0x7e]))).toBe(' ~');
    expect(displayBytes(Buffer.from([0x1f]))).toBe('0x1f');
    expect(displayBytes(new Uint8Array(0))).toBe('');
    const backing = Buffer.from([0x00, 0x61, 0x62, 0x00]);
    expect(displayBytes(backing.subarray(1, 3))).toBe('ab');
    expect(displayBytes(new Uint8Array([0x00, 0xff, 0x10]).subarray(1, 3))).toBe('0xff10');
  });
});
