import { describe, expect, it } from 'vitest';
import { ShardContentHash, shardRecordBatch } from '../../backup/index.js';
import type { StoredEntry } from '../../store/index.js';

const rows = (n: number): StoredEntry[] =>
  Array.from({ length: n }, (_, i) => ({
    key: Buffer.from(`key-${String(i).padStart(4, '0')}`),
    value: Buffer.from(`value ${i}`.repeat(1 + (i % 3))),
    etag: 1000 + i,
    updatedAtMs: 1_700_000_000_000 + i,
    expiresAtMs: i % 3 === 0 ? 1_800_000_000_000 + i : 0,
  }));

/** The hash of `entries` fed as record batches of `batchRows` rows. */
function hashOf(entries: readonly StoredEntry[], batchRows = entries.length): string {
  const hash = new ShardContentHash();
  for (let from = 0; from < entries.length; from += batchRows) hash.addRecordBatch(shardRecordBatch(entries.slice(from, from + batchRows)));
  expect(hash.rows).toBe(entries.length);
  return hash.toHex();
}

describe('ShardContentHash (manifest format 2)', () => {
  it('does not depend on how the rows are cut into batches or column runs', () => {
    const entries = rows(500);
    const whole = hashOf(entries);
    expect(whole).toMatch(/^[0-9a-f]{64}$/);
    expect(hashOf(entries, 1)).toBe(whole);
    expect(hashOf(entries, 77)).toBe(whole);
    // Runs [from, to) of one batch's columns, as restore feeds decoded chunks.
    const batch = shardRecordBatch(entries);
    const hash = new ShardContentHash();
    const col = (name: string) => batch.getChild(name)!.data[0]!;
    const expires = col('expires_at_ms');
    const columns = {
      keys: col('key').values as Uint8Array,
      keyOffsets: col('key').valueOffsets as Int32Array,
      values: col('value').values as Uint8Array,
      valueOffsets: col('value').valueOffsets as Int32Array,
      etagWords: col('etag').values as BigInt64Array,
      updatedAtWords: col('updated_at_ms').values as BigInt64Array,
      expiresAtWords: expires.values as BigInt64Array,
      expiresAtValid: expires.nullBitmap ?? undefined,
    };
    for (const [from, to] of [[0, 3], [3, 3], [3, 250], [250, 499], [499, 500]] as const) hash.add(columns, from, to);
    expect(hash.toHex()).toBe(whole);
  });

  it('changes with any byte of a key or value, the key/value boundary, the order, a dropped row, the etag, the update time or the expiry', () => {
    const entries = rows(50);
    const base = hashOf(entries);
    const at = (i: number, change: Partial<StoredEntry>) => entries.map((e, j) => (j === i ? { ...e, ...change } : e));
    const variants: Array<[string, StoredEntry[]]> = [
      ['a value byte', at(10, { value: Buffer.from(entries[10]!.value.map((b, j) => (j === 2 ? b ^ 1 : b))) })],
      ['a key byte', at(10, { key: Buffer.from('key-0010x') })],
      // The same bytes with the key/value boundary moved: only the lengths tell them apart.
      ['the key/value boundary', at(10, { key: Buffer.concat([entries[10]!.key, entries[10]!.value.subarray(0, 1)]), value: entries[10]!.value.subarray(1) })],
      ['two rows swapped', entries.map((e, j) => (j === 4 ? entries[5]! : j === 5 ? entries[4]! : e))],
      ['a dropped row', entries.filter((_, j) => j !== 20)],
      ['an etag', at(7, { etag: entries[7]!.etag + 1 })],
      ['an update time', at(7, { updatedAtMs: entries[7]!.updatedAtMs + 1 })],
      ['an expiry added', at(1, { expiresAtMs: 1_900_000_000_000 })],
      ['an expiry removed', at(0, { expiresAtMs: 0 })],
    ];
    const hashes = variants.map(([what, changed]) => ({ what, hash: hashOf(changed) }));
    for (const { what, hash } of hashes) expect({ what, same: hash === base }).toEqual({ what, same: false });
    expect(new Set(hashes.map((h) => h.hash)).size).toBe(variants.length);
  });

  it('is final once read: no row can be added after toHex', () => {
    const hash = new ShardContentHash();
    hash.addRecordBatch(shardRecordBatch(rows(3)));
    const hex = hash.toHex();
    expect(hash.toHex()).toBe(hex);
    expect(() => hash.addRecordBatch(shardRecordBatch(rows(1)))).toThrow(TypeError);
    expect(new ShardContentHash().toHex()).not.toBe(hex);
  });
});
