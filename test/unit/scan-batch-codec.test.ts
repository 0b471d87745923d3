import { describe, expect, it } from 'vitest';
import { PackedRows } from '../../store/index.js';
import { decodePackedScanBatch, packEntries } from '../../store/scan-batch-codec.js';
import { ScanBatch } from '../../store/proto/gen/shardpipe/store/v1/store.js';

const entries = Array.from({ length: 50 }, (_, i) => ({
  key: Buffer.from(`key-${String(i).padStart(3, '0')}`),
  value: Buffer.alloc(i % 5 === 0 ? 0 : 10 + i, i),
  etag: 2 ** 40 + i,
  updatedAtMs: 1_700_000_000_000 + i,
  expiresAtMs: i % 3 === 0 ? 1_800_000_000_000 + i : 0,
}));

describe('packed ScanBatch codec', () => {
  it('packEntries holds every entry, metadata included, and the hand decoder reads what the generated encoder wrote, as views', () => {
    const packed = packEntries(entries);
    expect(packed.meta.length).toBe(50 * 24);
    const bytes = Buffer.from(ScanBatch.encode({ entries: [], last: true, next: Buffer.from('next-key'), packed }).finish());
    const decoded = decodePackedScanBatch(bytes)!;
    expect(decoded).toEqual(ScanBatch.decode(bytes));
    // Views of the message, not copies.
    expect(decoded.packed!.data.buffer).toBe(bytes.buffer);
    const rows = PackedRows.fromMessage(decoded.packed!);
    expect(Array.from({ length: rows.count }, (_, i) => ({ key: rows.key(i), value: rows.value(i), etag: rows.metaField(i, 0), updatedAtMs: rows.metaField(i, 1), expiresAtMs: rows.metaField(i, 2) }))).toEqual(entries);
  });

  it('a per-entry batch, an empty last message and malformed bytes go to the generated decoder', () => {
    const perEntry = Buffer.from(ScanBatch.encode({ entries: [entries[1]!], last: false, next: Buffer.alloc(0) }).finish());
    expect(decodePackedScanBatch(perEntry)).toBeUndefined();
    const last = Buffer.from(ScanBatch.encode({ entries: [], last: true, next: Buffer.alloc(0) }).finish());
    expect(decodePackedScanBatch(last)).toBeUndefined();
    const good = Buffer.from(ScanBatch.encode({ entries: [], last: false, next: Buffer.alloc(0), packed: packEntries(entries) }).finish());
    expect(decodePackedScanBatch(good.subarray(0, good.length - 3))).toBeUndefined();
    // `last` twice is not canonical.
    expect(decodePackedScanBatch(Buffer.concat([good, Buffer.from([0x10, 0x01, 0x10, 0x01])]))).toBeUndefined();
  });
});
