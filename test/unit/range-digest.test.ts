import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { RangeDigest } from '../../store/index.js';

interface Entry {
  key: Buffer;
  value: Buffer;
  expiresAtMs: number;
  etag?: number;
}

function entries(n: number): Entry[] {
  return Array.from({ length: n }, (_, i) => ({
    key: Buffer.from(`key-${String(i).padStart(4, '0')}`),
    value: Buffer.from(`value-${i * 7}`),
    expiresAtMs: i % 3 === 0 ? 1_700_000_000_000 + i : 0,
    etag: i + 1,
  }));
}

function digestOf(list: readonly Entry[], withEtag = false): RangeDigest {
  const d = new RangeDigest();
  for (const e of list) d.add(e.key, e.value, e.expiresAtMs, withEtag ? e.etag : undefined);
  return d;
}

function shuffled<T>(list: readonly T[], seed: number): T[] {
  const out = [...list];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('RangeDigest', () => {
  const all = entries(200);

  it('an empty digest is all zeros with count 0', () => {
    const d = new RangeDigest();
    expect(d.toHex()).toBe('0'.repeat(64));
    expect(d.count).toBe(0);
  });

  it('is independent of the order entries are added in', () => {
    const reference = digestOf(all);
    expect(reference.toHex()).toMatch(/^[0-9a-f]{64}$/);
    expect(reference.count).toBe(200);
    for (const seed of [1, 2, 3]) {
      expect(digestOf(shuffled(all, seed)).toHex()).toBe(reference.toHex());
    }
    expect(digestOf([...all].reverse()).toHex()).toBe(reference.toHex());
    expect(digestOf(shuffled(all, 9), true).toHex()).toBe(digestOf(all, true).toHex());
  });

  it('merging digests of disjoint halves equals the digest of the whole', () => {
    const whole = digestOf(all);
    const left = digestOf(all.slice(0, 73));
    const right = digestOf(all.slice(73));
    const merged = new RangeDigest().merge(left).merge(right);
    expect(merged.toHex()).toBe(whole.toHex());
    expect(merged.count).toBe(200);
    // merge mutates and returns the receiver
    expect(left.merge(right)).toBe(left);
    expect(left.toHex()).toBe(whole.toHex());
    // Merge is commutative and merging an empty digest changes nothing.
    expect(digestOf(all.slice(73)).merge(digestOf(all.slice(0, 73))).toHex()).toBe(whole.toHex());
    expect(digestOf(all).merge(new RangeDigest()).toHex()).toBe(whole.toHex());
  });

  it('merges many partitions of the keyspace to the same digest', () => {
    const whole = digestOf(all).toHex();
    const parts = [0, 10, 11, 50, 199, 200];
    const merged = new RangeDigest();
    for (let i = 0; i + 1 < parts.length; i++) merged.merge(digestOf(all.slice(parts[i], parts[i + 1])));
    expect(merged.toHex()).toBe(whole);
  });

  it('changes when a value, expiry, key or etag changes', () => {
    const base = digestOf(all).toHex();
    const withChange = (i: number, change: Partial<Entry>) => digestOf(all.map((e, j) => (j === i ? { ...e, ...change } : e)));
    expect(withChange(5, { value: Buffer.from('value-36') }).toHex()).not.toBe(base);
    expect(withChange(5, { value: Buffer.from('') }).toHex()).not.toBe(base);
    expect(withChange(5, { expiresAtMs: 1 }).toHex()).not.toBe(base);
    expect(withChange(6, { expiresAtMs: 0 }).toHex()).not.toBe(base); // entry 6 has an expiry
    expect(withChange(5, { key: Buffer.from('key-9999') }).toHex()).not.toBe(base);

    const baseEtag = digestOf(all, true).toHex();
    expect(baseEtag).not.toBe(base);
    const bumped = digestOf(all.map((e, j) => (j === 5 ? { ...e, etag: 999 } : e)), true);
    expect(bumped.toHex()).not.toBe(baseEtag);
    // Without etags, the etag does not matter.
    expect(digestOf(all.map((e, j) => (j === 5 ? { ...e, etag: 999 } : e))).toHex()).toBe(base);
  });

  it('distinguishes an etag of 0 from no etag', () => {
    const a = new RangeDigest();
    a.add(Buffer.from('k'), Buffer.from('v'), 0);
    const b = new RangeDigest();
    b.add(Buffer.from('k'), Buffer.from('v'), 0, 0);
    expect(a.toHex()).not.toBe(b.toHex());
  });

  it('does not confuse where the key ends and the value begins', () => {
    const a = new RangeDigest();
    a.add(Buffer.from('ab'), Buffer.from('c'), 0);
    const b = new RangeDigest();
    b.add(Buffer.from('a'), Buffer.from('bc'), 0);
    expect(a.toHex()).not.toBe(b.toHex());
  });

  it('counts a duplicate entry twice (it is a multiset digest)', () => {
    const once = digestOf(all.slice(0, 1));
    const twice = digestOf([all[0]!, all[0]!]);
    expect(twice.count).toBe(2);
    expect(twice.toHex()).not.toBe(once.toHex());
  });

  it('toHex / fromHex round trip keeps lanes and the given count', () => {
    const d = digestOf(all);
    const back = RangeDigest.fromHex(d.toHex(), d.count);
    expect(back.toHex()).toBe(d.toHex());
    expect(back.count).toBe(200);
    // A restored digest merges like the original.
    const extra = digestOf(entries(201).slice(200));
    expect(back.merge(extra).toHex()).toBe(digestOf(entries(201)).toHex());
    expect(back.count).toBe(201);
    const ff = RangeDigest.fromHex('f'.repeat(64), 3);
    expect(ff.toHex()).toBe('f'.repeat(64));
  });

  it.each(['', 'abc', '0'.repeat(63), '0'.repeat(65), 'A'.repeat(64), 'g'.repeat(64)])('fromHex rejects %j', (hex) => {
    expect(() => RangeDigest.fromHex(hex, 0)).toThrow(RangeError);
  });

  it('wraps lane sums mod 2^32', () => {
    const max = RangeDigest.fromHex('ffffffff'.repeat(8), 1);
    const one = RangeDigest.fromHex('00000001'.repeat(8), 1);
    expect(max.merge(one).toHex()).toBe('0'.repeat(64));
    expect(max.count).toBe(2);
  });

  it('is the documented layout, computed independently: SHA-256 of (key length, value length u32 BE, expiry, etag as f64 BE, key, value) added in 8 u32 BE lanes — the checksum of backups already written', () => {
    const reference = (list: readonly Entry[], withEtag: boolean): string => {
      const lanes = new Array<number>(8).fill(0);
      for (const e of list) {
        const header = Buffer.alloc(withEtag ? 24 : 16);
        header.writeUInt32BE(e.key.length, 0);
        header.writeUInt32BE(e.value.length, 4);
        header.writeDoubleBE(e.expiresAtMs, 8);
        if (withEtag) header.writeDoubleBE(e.etag!, 16);
        const h = createHash('sha256').update(header).update(e.key).update(e.value).digest();
        for (let i = 0; i < 8; i++) lanes[i] = (lanes[i]! + h.readUInt32BE(i * 4)) % 2 ** 32;
      }
      return Buffer.concat(lanes.map((l) => { const b = Buffer.alloc(4); b.writeUInt32BE(l); return b; })).toString('hex');
    };
    // Values past 32 bytes and keys of every length up to past the short-copy cutoff, high bytes included.
    const list = Array.from({ length: 300 }, (_, i) => ({
      key: Buffer.from(Array.from({ length: 1 + (i % 40) }, (_, j) => (i * 7 + j * 131) & 255)),
      value: Buffer.from(Array.from({ length: i % 97 }, (_, j) => (i * 13 + j * 29) & 255)),
      expiresAtMs: i % 3 === 0 ? 1_700_000_000_000 + i : 0,
      etag: 2 ** 40 + i,
    }));
    expect(digestOf(list, true).toHex()).toBe(reference(list, true));
    expect(digestOf(list, false).toHex()).toBe(reference(list, false));
    const columns = new RangeDigest();
    const keys = Buffer.concat(list.map((e) => e.key));
    const values = Buffer.concat(list.map((e) => e.value));
    let k = 0;
    let v = 0;
    for (const e of list) {
      columns.addFrom(keys, k, e.key.length, values, v, e.value.length, e.expiresAtMs, e.etag);
      k += e.key.length;
      v += e.value.length;
    }
    expect(columns.toHex()).toBe(reference(list, true));
  });
});
