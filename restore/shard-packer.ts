import { endianness } from 'node:os';
import type { ShardColumnsChunk } from '../backup/index.js';
import { copyBytes } from '../common/index.js';
import { PACKED_ROWS_FORMAT, PackedRows, type RangeDigest } from '../store/index.js';
import type { SortedRangeFilter } from './restore-selection.js';

/** What `packShardChunk` made of one chunk of a shard file. */
export interface PackedShardChunk {
  /** The rows to write: live and (in a partial restore) selected, with etag, update time and expiry. */
  packed: PackedRows;
  /** Rows skipped because their expiry had passed at `now`. */
  expired: number;
  /** Rows skipped because their key is outside the selection. */
  outside: number;
  /** Earliest expiry among the rows inside the selection, folded into `firstExpiresAtMs` (0 = none). */
  firstExpiresAtMs: number;
  /** The buffers `packed` lives in: pass them to a later call once nothing reads `packed` any more. */
  buffers: PackBuffers;
}

/** The three buffers of a packed batch, kept to be filled again (see PackShardChunkOptions.reuse). */
export interface PackBuffers {
  /** Unpooled (4-byte aligned): u32 key and value lengths per row. */
  lengths: Buffer;
  data: Buffer;
  /** Unpooled (4-byte aligned): three u64 per row. */
  meta: Buffer;
}

export interface PackShardChunkOptions {
  /**
   * Every row of the chunk is added to it, skipped ones included (the file's checksum covers them).
   * Absent when the file is checked by its content hash instead (manifest format 2).
   */
  digest?: RangeDigest;
  /** Rows outside it are skipped; absent = every row is inside. */
  selected?: SortedRangeFilter;
  /** Rows whose expiry is at or before this (Unix ms) are skipped. */
  now: number;
  /** The earliest expiry so far (0 = none). */
  firstExpiresAtMs: number;
  /**
   * Buffers of an earlier batch nothing reads any more, filled again when large enough (else new
   * ones are made): a restore then allocates no new megabyte per chunk, which the GC paid for.
   */
  reuse?: PackBuffers;
}

/**
 * One chunk of a shard file's columns → the packed batch of its rows to restore, straight from the
 * decoded column buffers: one copy of each kept key and value into the batch, no object per row.
 * The digest (when asked for) is computed from the same column bytes.
 */
export function packShardChunk(chunk: ShardColumnsChunk, options: PackShardChunkOptions): PackedShardChunk {
  const { columns: c, from, to } = chunk;
  const { keys, keyOffsets, values, valueOffsets } = c;
  const { digest, selected, now } = options;
  const rows = to - from;
  const { reuse } = options;
  const needed = keyOffsets[to]! - keyOffsets[from]! + valueOffsets[to]! - valueOffsets[from]!;
  // Unpooled (so 4-byte aligned) for the word views below: one store per u32 instead of a checked Buffer write.
  const lengths = reuse !== undefined && reuse.lengths.length >= rows * 8 ? reuse.lengths : Buffer.allocUnsafeSlow(rows * 8);
  const data = reuse !== undefined && reuse.data.length >= needed ? reuse.data : Buffer.allocUnsafeSlow(needed);
  const meta = reuse !== undefined && reuse.meta.length >= rows * 24 ? reuse.meta : Buffer.allocUnsafeSlow(rows * 24);
  const lengthWords = LITTLE_ENDIAN ? new Uint32Array(lengths.buffer, 0, rows * 2) : undefined;
  const metaWords = LITTLE_ENDIAN ? new Uint32Array(meta.buffer, 0, rows * 6) : undefined;
  // Plain Uint8Array views: copies from and into them cost less than through Buffer methods.
  const keyBytes = asBytes(keys);
  const valueBytes = asBytes(values);
  const dataBytes = asBytes(data);
  let count = 0;
  let used = 0;
  let expired = 0;
  let outside = 0;
  let firstExpiry = options.firstExpiresAtMs;
  for (let i = from; i < to; i++) {
    const ks = keyOffsets[i]!;
    const kl = keyOffsets[i + 1]! - ks;
    const vs = valueOffsets[i]!;
    const vl = valueOffsets[i + 1]! - vs;
    const etag = c.etag(i);
    const expiresAtMs = c.expiresAtMs(i);
    digest?.addFrom(keyBytes, ks, kl, valueBytes, vs, vl, expiresAtMs, etag);
    if (selected !== undefined && !selected.contains(keys.subarray(ks, ks + kl))) {
      outside++;
      continue;
    }
    if (expiresAtMs > 0) {
      firstExpiry = firstExpiry === 0 ? expiresAtMs : Math.min(firstExpiry, expiresAtMs);
      if (expiresAtMs <= now) {
        expired++;
        continue;
      }
    }
    copyBytes(keyBytes, ks, kl, dataBytes, used);
    copyBytes(valueBytes, vs, vl, dataBytes, used + kl);
    used += kl + vl;
    if (lengthWords !== undefined && metaWords !== undefined) {
      lengthWords[2 * count] = kl;
      lengthWords[2 * count + 1] = vl;
      const w = count * 6;
      const updatedAtMs = c.updatedAtMs(i);
      metaWords[w] = etag >>> 0;
      metaWords[w + 1] = Math.floor(etag / TWO_32);
      metaWords[w + 2] = updatedAtMs >>> 0;
      metaWords[w + 3] = Math.floor(updatedAtMs / TWO_32);
      metaWords[w + 4] = expiresAtMs >>> 0;
      metaWords[w + 5] = Math.floor(expiresAtMs / TWO_32);
    } else {
      lengths.writeUInt32LE(kl, count * 8);
      lengths.writeUInt32LE(vl, count * 8 + 4);
      const m = count * 24;
      writeU64(meta, m, etag);
      writeU64(meta, m + 8, c.updatedAtMs(i));
      writeU64(meta, m + 16, expiresAtMs);
    }
    count++;
  }
  const packed = PackedRows.fromMessage({ format: PACKED_ROWS_FORMAT, count, lengths: lengths.subarray(0, count * 8), data: data.subarray(0, used), meta: meta.subarray(0, count * 24) });
  return { packed, expired, outside, firstExpiresAtMs: firstExpiry, buffers: { lengths, data, meta } };
}

const TWO_32 = 2 ** 32;
const LITTLE_ENDIAN = endianness() === 'LE';

function asBytes(buf: Buffer): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** A safe non-negative integer (the reader checked it) as u64 little-endian. */
function writeU64(buf: Buffer, at: number, n: number): void {
  buf.writeUInt32LE(n >>> 0, at);
  buf.writeUInt32LE(Math.floor(n / TWO_32), at + 4);
}
