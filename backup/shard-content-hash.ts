import { createHash, type Hash } from 'node:crypto';
import { endianness } from 'node:os';
import type { RecordBatch } from 'apache-arrow';

// The per-shard content hash of manifest format 2 (FORMAT.md "Content hash"): an ordered hash of
// every row of a shard file, fed from column buffers a chunk at a time. Each column is its own
// SHA-256 stream (the rows' bytes concatenated in order), so the result does not depend on how the
// rows are cut into batches, row groups or chunks: the backup hashes the record batches it encodes,
// the restore the chunks it decodes, and both get the same value for the same rows.

/** The columns of a run of rows as the hash reads them: the Arrow layout of a shard record batch. */
export interface HashableColumns {
  /** Row i's key is `keys[keyOffsets[i], keyOffsets[i + 1])`; values likewise. */
  keys: Uint8Array;
  keyOffsets: ArrayLike<number>;
  values: Uint8Array;
  valueOffsets: ArrayLike<number>;
  /** One 64-bit integer per row, in this platform's byte order (as Arrow Int64 columns are). */
  etagWords: BigInt64Array | BigUint64Array;
  updatedAtWords: BigInt64Array | BigUint64Array;
  expiresAtWords: BigInt64Array | BigUint64Array;
  /** Validity bitmap of `expiresAtWords` (bit set = not null); absent = no nulls. A null hashes as 0. */
  expiresAtValid: Uint8Array | undefined;
}

const LITTLE_ENDIAN = endianness() === 'LE';
const DOMAIN = Buffer.from('shardpipe.shard-content.v1\n', 'latin1');

/**
 * The content hash of one shard, built as its rows go by (`add`, in file order). Six SHA-256
 * streams: the (key length, value length) pairs as u32 little-endian, the keys, the values, and the
 * etag, update time and expiry as u64 little-endian (expiry 0 = none); the result is SHA-256 over a
 * domain tag, the row count (u64 LE) and the six digests. Lengths make the key and value streams
 * unambiguous, so two different row sequences hash alike only by a SHA-256 collision.
 */
export class ShardContentHash {
  private readonly streams: Hash[] = Array.from({ length: 6 }, () => createHash('sha256'));
  private count = 0;
  private done: string | undefined;

  /** Rows added so far. */
  get rows(): number {
    return this.count;
  }

  /** Adds rows `[from, to)` of `columns`. */
  add(columns: HashableColumns, from: number, to: number): void {
    if (this.done !== undefined) throw new TypeError('the shard content hash is already final');
    const n = to - from;
    if (n <= 0) return;
    const { keys, keyOffsets: ko, values, valueOffsets: vo } = columns;
    const lengths = new Uint32Array(n * 2);
    for (let i = 0; i < n; i++) {
      lengths[2 * i] = ko[from + i + 1]! - ko[from + i]!;
      lengths[2 * i + 1] = vo[from + i + 1]! - vo[from + i]!;
    }
    const [l, k, v, e, u, x] = this.streams as [Hash, Hash, Hash, Hash, Hash, Hash];
    l.update(littleEndian(new Uint8Array(lengths.buffer), 4));
    k.update(keys.subarray(ko[from]!, ko[to]!));
    v.update(values.subarray(vo[from]!, vo[to]!));
    e.update(int64Bytes(columns.etagWords, from, to, undefined));
    u.update(int64Bytes(columns.updatedAtWords, from, to, undefined));
    x.update(int64Bytes(columns.expiresAtWords, from, to, columns.expiresAtValid));
    this.count += n;
  }

  /** Adds every row of a record batch of the shard schema (shard-format.ts). */
  addRecordBatch(batch: RecordBatch): void {
    if (batch.numRows > 0) this.add(recordBatchColumns(batch), 0, batch.numRows);
  }

  /** The hash as 64 lowercase hex characters; no row can be added after it. Idempotent. */
  toHex(): string {
    if (this.done === undefined) {
      const final = createHash('sha256').update(DOMAIN);
      const rows = Buffer.alloc(8);
      rows.writeBigUInt64LE(BigInt(this.count));
      final.update(rows);
      for (const s of this.streams) final.update(s.digest());
      this.done = final.digest('hex');
    }
    return this.done;
  }
}

/** The columns of a record batch of the shard schema, as views (no copy). */
function recordBatchColumns(batch: RecordBatch): HashableColumns {
  const child = (name: string) => {
    const vector = batch.getChild(name);
    if (vector === null || vector.data.length !== 1 || vector.data[0]!.offset !== 0) throw new TypeError(`a shard record batch must have one unsliced ${name} column`);
    return vector.data[0]!;
  };
  const key = child('key');
  const value = child('value');
  const expires = child('expires_at_ms');
  return {
    keys: key.values as Uint8Array,
    keyOffsets: key.valueOffsets as Int32Array,
    values: value.values as Uint8Array,
    valueOffsets: value.valueOffsets as Int32Array,
    etagWords: child('etag').values as BigInt64Array,
    updatedAtWords: child('updated_at_ms').values as BigInt64Array,
    expiresAtWords: expires.values as BigInt64Array,
    expiresAtValid: expires.nullCount > 0 ? (expires.nullBitmap ?? undefined) : undefined,
  };
}

/** Rows `[from, to)` of a 64-bit column as u64 little-endian bytes, nulls as 0: a view when it can be. */
function int64Bytes(words: BigInt64Array | BigUint64Array, from: number, to: number, valid: Uint8Array | undefined): Uint8Array {
  const n = to - from;
  if (valid === undefined) return littleEndian(new Uint8Array(words.buffer, words.byteOffset + from * 8, n * 8), 8);
  // A null slot's bytes are whatever the decoder left there: copied with zeros in their place.
  const halves = new Uint32Array(words.buffer, words.byteOffset + from * 8, n * 2);
  const out = new Uint32Array(n * 2);
  for (let i = 0; i < n; i++) {
    const row = from + i;
    if ((valid[row >> 3]! & (1 << (row & 7))) !== 0) {
      out[2 * i] = halves[2 * i]!;
      out[2 * i + 1] = halves[2 * i + 1]!;
    }
  }
  return littleEndian(new Uint8Array(out.buffer), 8);
}

/** Native-order words as little-endian bytes (a swapped copy on a big-endian machine only). */
function littleEndian(bytes: Uint8Array, width: 4 | 8): Uint8Array {
  if (LITTLE_ENDIAN) return bytes;
  const copy = Buffer.from(bytes);
  return width === 4 ? copy.swap32() : copy.swap64();
}
