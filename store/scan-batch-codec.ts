import { decodePackedRows, lengthDelimited, varint } from './bulk-insert-codec.js';
import { PACKED_LENGTH_BYTES, PACKED_META_BYTES, PACKED_ROWS_FORMAT, writeU64LE, type PackedRowsMessage } from './packed-rows.js';
import type { StoredEntry } from './partition-store.js';
import type { ScanBatch } from './proto/gen/shardpipe/store/v1/store.js';

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const EMPTY: Buffer = Buffer.alloc(0);

/**
 * A scan batch's entries as one PackedRows message (format 1, `meta` always set: etag,
 * updated_at_ms, expires_at_ms as u64 LE), for a Scan or ScanPage request that set `packed`:
 * three buffers instead of one protobuf message per entry.
 */
export function packEntries(entries: readonly StoredEntry[]): PackedRowsMessage {
  const count = entries.length;
  let bytes = 0;
  for (let i = 0; i < count; i++) bytes += entries[i]!.key.length + entries[i]!.value.length;
  const lengths = Buffer.allocUnsafe(count * PACKED_LENGTH_BYTES);
  const data = Buffer.allocUnsafe(bytes);
  const meta = Buffer.allocUnsafe(count * PACKED_META_BYTES);
  let at = 0;
  for (let i = 0; i < count; i++) {
    const e = entries[i]!;
    lengths.writeUInt32LE(e.key.length, i * 8);
    lengths.writeUInt32LE(e.value.length, i * 8 + 4);
    at += e.key.copy(data, at);
    at += e.value.copy(data, at);
    const m = i * PACKED_META_BYTES;
    writeU64LE(meta, m, e.etag);
    writeU64LE(meta, m + 8, e.updatedAtMs);
    writeU64LE(meta, m + 16, e.expiresAtMs);
  }
  return { format: PACKED_ROWS_FORMAT, count, lengths, data, meta };
}

/**
 * Decodes a ScanBatch that carries its entries packed — `last`, `next` and `packed`, each at most
 * once, no per-entry `entries` — with the packed parts as views of `bytes` (the generated decoder
 * copies each). Anything else (per-entry batches, unknown or repeated fields, bad framing) returns
 * undefined, and the generated decoder takes it.
 */
export function decodePackedScanBatch(bytes: Buffer): ScanBatch | undefined {
  const r = { pos: 0 };
  let last: boolean | undefined;
  let next: Buffer | undefined;
  let packed: ScanBatch['packed'];
  while (r.pos < bytes.length) {
    const tag = varint(bytes, r);
    if (tag === undefined) return undefined;
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 2 && wire === WIRE_VARINT && last === undefined) {
      const n = varint(bytes, r);
      if (n === undefined || n > 1) return undefined;
      last = n === 1;
    } else if (field === 3 && wire === WIRE_LEN && next === undefined) {
      next = lengthDelimited(bytes, r);
      if (next === undefined) return undefined;
    } else if (field === 4 && wire === WIRE_LEN && packed === undefined) {
      const body = lengthDelimited(bytes, r);
      packed = body && decodePackedRows(body);
      if (packed === undefined) return undefined;
    } else {
      return undefined;
    }
  }
  if (packed === undefined) return undefined;
  return { entries: [], last: last ?? false, next: next ?? EMPTY, packed };
}
