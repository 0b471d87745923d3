import { describe, expect, it } from 'vitest';
import { PackedRowsBuilder, PartitionMap, type PackedRows, type Partition } from '../../store/index.js';
import { cutPoint } from '../../store/bulk-writer.js';

/** bulkPutAll's batch cut (binary searches) against the row-by-row rule it replaces. */

function rowsOf(count: number, seed: number): PackedRows {
  const builder = new PackedRowsBuilder();
  let x = seed;
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const key = Buffer.alloc(4);
    key.writeUInt32BE(Math.floor((i * 2 ** 32) / count));
    builder.add(key, Buffer.alloc(x % 97));
  }
  return builder.finish();
}

/** The rule, row by row: rows while they fit (at least one), then before the first key at or past the partition's end. */
function reference(rows: PackedRows, from: number, partition: Partition, maxRows: number, maxBytes: number): number {
  let to = from + 1;
  let bytes = rows.keyLength(from) + rows.valueLength(from);
  while (to < rows.count && to - from < maxRows && bytes + rows.keyLength(to) + rows.valueLength(to) <= maxBytes) {
    bytes += rows.keyLength(to) + rows.valueLength(to);
    to++;
  }
  if (partition.end.length === 0) return to;
  for (let i = from + 1; i < to; i++) if (Buffer.compare(rows.key(i), partition.end) >= 0) return i;
  return to;
}

describe('cutPoint', () => {
  it('matches the row-by-row rule over row, byte and partition limits', () => {
    const rows = rowsOf(3000, 17);
    const map = PartitionMap.evenlySplit(1, ['127.0.0.1:1'], 7);
    let checked = 0;
    for (const maxRows of [1, 2, 50, 999, 5000]) {
      for (const maxBytes of [1, 60, 100, 4000, 10_000_000]) {
        for (let from = 0; from < rows.count; from += 37) {
          const partition = map.lookup(rows.key(from));
          expect(cutPoint(rows, from, partition, maxRows, maxBytes), `from ${from}, maxRows ${maxRows}, maxBytes ${maxBytes}`).toBe(reference(rows, from, partition, maxRows, maxBytes));
          checked++;
        }
      }
    }
    expect(checked).toBe(25 * Math.ceil(3000 / 37));
  });

  it('on a slice (rows counted from the slice, offsets of the whole batch)', () => {
    const rows = rowsOf(2000, 5).slice(300, 1700);
    const map = PartitionMap.evenlySplit(1, ['127.0.0.1:1'], 5);
    for (let from = 0; from < rows.count; from += 11) {
      const partition = map.lookup(rows.key(from));
      expect(cutPoint(rows, from, partition, 400, 9000)).toBe(reference(rows, from, partition, 400, 9000));
    }
  });
});
