import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { compareBytes } from '../../common/index.js';

const sign = (n: number): number => (n < 0 ? -1 : n > 0 ? 1 : 0);

describe('compareBytes (the bytewise order of two ranges, as Buffer.compare)', () => {
  it('orders short and long ranges, prefixes and equal ones as Buffer.compare does, at any offsets', () => {
    const pairs: Array<[Buffer, Buffer]> = [
      [Buffer.from('abc'), Buffer.from('abd')],
      [Buffer.from('abc'), Buffer.from('abc')],
      [Buffer.from('ab'), Buffer.from('abc')],
      [Buffer.alloc(0), Buffer.from([0])],
      [Buffer.alloc(0), Buffer.alloc(0)],
      [Buffer.from([0xff]), Buffer.from([0x00, 0xff])],
    ];
    // Around the loop's limit (64 bytes in common): equal up to the last byte, then different there.
    for (const length of [63, 64, 65, 200]) {
      const a = randomBytes(length);
      const b = Buffer.from(a);
      b[length - 1] = a[length - 1]! ^ 1;
      pairs.push([a, b], [a, Buffer.from(a)], [a.subarray(0, length - 1), a]);
    }
    for (let i = 0; i < 200; i++) pairs.push([randomBytes(i % 20), randomBytes((i * 7) % 20)]);
    for (const [a, b] of pairs) {
      const expected = Buffer.compare(a, b);
      expect(compareBytes(a, 0, a.length, b, 0, b.length)).toBe(expected);
      expect(compareBytes(b, 0, b.length, a, 0, a.length)).toBe(0 - expected);
      // The same ranges inside larger buffers.
      const x = Buffer.concat([Buffer.from([9, 9]), a, Buffer.from([0])]);
      const y = Buffer.concat([Buffer.from([1]), b, Buffer.from([255, 255])]);
      expect(sign(compareBytes(x, 2, 2 + a.length, y, 1, 1 + b.length))).toBe(expected);
    }
  });
});
