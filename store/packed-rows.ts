import { endianness } from 'node:os';
import { compareBytes, copyBytes, type BatchBufferPool } from '../common/index.js';
import type { BulkRowInput } from './bulk-row.js';
import { StoreError } from './store-errors.js';

/**
 * The packed batch format this code writes and reads (store.proto `PackedRows.format`). A node
 * refuses any other number; a new layout gets a new number and old nodes refuse it by name
 * (README "Packed batches").
 */
export const PACKED_ROWS_FORMAT = 1;

/** Bytes of one row's entry in `lengths`: u32 LE key length, u32 LE value length. */
export const PACKED_LENGTH_BYTES = 8;
/** Bytes of one row's entry in `meta`: etag, updated_at_ms, expires_at_ms as u64 LE. */
export const PACKED_META_BYTES = 24;

/** A row's metadata in a packed batch; 0 or absent = unset (as in BulkRow). */
export interface RowMeta {
  etag?: number;
  updatedAtMs?: number;
  expiresAtMs?: number;
}

/** The wire message (store.proto `PackedRows`), as the generated code types it. */
export interface PackedRowsMessage {
  format: number;
  count: number;
  lengths: Buffer;
  data: Buffer;
  meta: Buffer;
}

const TWO_32 = 2 ** 32;
const EMPTY = Buffer.alloc(0);

/**
 * Rows of one BulkInsert in three buffers: lengths, key and value bytes, and optional metadata.
 * Rows are read as views into those buffers, and `slice` cuts a run of rows as views too: nothing
 * is copied between building a batch and handing it to gRPC, and an accepted prefix can be passed on.
 */
export class PackedRows {
  readonly count: number;
  /** Key and value bytes of all rows. */
  readonly bytes: number;
  private readonly lengths: Buffer;
  private readonly data: Buffer;
  /** Empty when no row has metadata. */
  private readonly metaBytes: Buffer;
  /** Start of row i's key in `data` is `offsets[first + i] - offsets[first]`; shared by slices. */
  private readonly offsets: Float64Array;
  /** Key and value length of row i at `2 × (first + i)` and the next: `lengths`, decoded once. */
  private readonly lens: Uint32Array;
  private readonly first: number;
  private readonly base: number;
  /** Whether the keys strictly increase, once asked (slices of a sorted batch are sorted). */
  private sorted: boolean | undefined;
  /**
   * `metaBytes` as numbers, 3 per row (row i's at `3 × (metaFirst + i)`), decoded on the first
   * metaField; null when the batch carries no metadata. Shared by slices, like `offsets`: a bulk
   * row's fields are read 6–9 times between the request check and the write, and two
   * readUInt32LE per read were the largest JS item of a restore's node after LevelDB's own put.
   */
  private metaNumbers: Float64Array | null | undefined;
  private metaFirst = 0;
  /** The largest etag in `metaNumbers` (of the batch it was decoded for: a slice shares its parent's). */
  private metaEtagMax = 0;
  /** The key and value limits checkPackedRows found every row within (noteChecked). */
  private checkedKeyBytes = -1;
  private checkedValueBytes = -1;

  /** @internal Use PackedRowsBuilder, fromRows or fromMessage. */
  constructor(count: number, lengths: Buffer, data: Buffer, meta: Buffer, offsets: Float64Array, lens: Uint32Array, first: number, sorted?: boolean) {
    this.sorted = sorted;
    this.count = count;
    this.lengths = lengths;
    this.data = data;
    this.metaBytes = meta;
    this.offsets = offsets;
    this.lens = lens;
    this.first = first;
    this.base = count === 0 ? 0 : offsets[first]!;
    this.bytes = data.length;
  }

  /** Packs rows (copying their bytes into one buffer). Metadata is kept when any row has some. */
  static fromRows(rows: readonly BulkRowInput[]): PackedRows {
    let bytes = 0;
    let withMeta = false;
    for (const row of rows) {
      bytes += row.key.length + row.value.length;
      if (!withMeta && ((row.etag ?? 0) !== 0 || (row.updatedAtMs ?? 0) !== 0 || (row.expiresAtMs ?? 0) !== 0)) withMeta = true;
    }
    const builder = new PackedRowsBuilder({ rowsHint: rows.length, bytesHint: bytes });
    for (const row of rows) builder.add(row.key, row.value, withMeta ? row : undefined);
    return builder.finish();
  }

  /**
   * A received `PackedRows` message as rows, after checking that its parts fit together: a known
   * format, `count` entries in `lengths` and (when present) `meta`, and lengths adding up to `data`.
   * Throws StoreError STORE_INVALID_ARGUMENT naming the field under `path`. Keys, values and
   * metadata ranges are checked separately (checkPackedRows in request-check.ts).
   */
  static fromMessage(message: PackedRowsMessage, path = 'PackedRows'): PackedRows {
    const { format, count, lengths, data, meta } = message;
    if (format !== PACKED_ROWS_FORMAT) {
      throw invalid(`${path}.format`, `${path}.format is ${format}, a packed batch format this node does not know: it reads format ${PACKED_ROWS_FORMAT} (send format ${PACKED_ROWS_FORMAT}, or per-row \`rows\`)`, format);
    }
    if (lengths.length !== count * PACKED_LENGTH_BYTES) {
      throw invalid(`${path}.lengths`, `${path}.lengths is ${lengths.length} bytes, but count ${count} needs ${count * PACKED_LENGTH_BYTES} (8 per row)`, lengths.length);
    }
    if (meta.length !== 0 && meta.length !== count * PACKED_META_BYTES) {
      throw invalid(`${path}.meta`, `${path}.meta is ${meta.length} bytes, but must be empty or ${count * PACKED_META_BYTES} for count ${count} (24 per row)`, meta.length);
    }
    const offsets = new Float64Array(count + 1);
    const lens = decodeU32s(lengths);
    let at = 0;
    for (let i = 0; i < count; i++) {
      offsets[i] = at;
      at += lens[2 * i]! + lens[2 * i + 1]!;
    }
    offsets[count] = at;
    if (at !== data.length) {
      throw invalid(`${path}.data`, `${path}.data is ${data.length} bytes, but the lengths of its ${count} rows add up to ${at}`, data.length);
    }
    return new PackedRows(count, lengths, data, meta, offsets, lens, 0);
  }

  /** The wire message: views of this batch's buffers. */
  toMessage(): PackedRowsMessage {
    return { format: PACKED_ROWS_FORMAT, count: this.count, lengths: this.lengths, data: this.data, meta: this.metaBytes };
  }

  /** Whether the rows carry metadata (`meta` is not empty). */
  get hasMeta(): boolean {
    return this.metaBytes.length > 0;
  }

  // The accessors below are for loops over 0 … count − 1: they do not check `i` (key, value and
  // meta do). Out of range they return undefined/NaN, never another batch's bytes.

  /** Row i's key length (0 ≤ i < count). */
  keyLength(i: number): number {
    return this.lens[2 * (this.first + i)]!;
  }

  /** Row i's value length (0 ≤ i < count). */
  valueLength(i: number): number {
    return this.lens[2 * (this.first + i) + 1]!;
  }

  /** Row i's key: a view, not a copy. */
  key(i: number): Buffer {
    const start = this.keyOffset(this.at(i));
    return this.data.subarray(start, start + this.keyLength(i));
  }

  /** Row i's value: a view, not a copy. */
  value(i: number): Buffer {
    const start = this.keyOffset(this.at(i)) + this.keyLength(i);
    return this.data.subarray(start, start + this.valueLength(i));
  }

  /** Row i's metadata (0 = unset), or undefined when the batch carries none. */
  meta(i: number): RowMeta | undefined {
    if (this.metaBytes.length === 0) return undefined;
    const at = this.at(i) * PACKED_META_BYTES;
    return { etag: this.metaU64(at), updatedAtMs: this.metaU64(at + 8), expiresAtMs: this.metaU64(at + 16) };
  }

  /**
   * Row i's metadata field (0 etag, 1 updated_at_ms, 2 expires_at_ms) as a number; 0 without
   * metadata. Values beyond 2^53 read inexactly but still beyond every range the store accepts.
   */
  metaField(i: number, field: 0 | 1 | 2): number {
    const numbers = this.metaNumbers === undefined ? this.decodeMeta() : this.metaNumbers;
    return numbers === null ? 0 : numbers[3 * (this.metaFirst + i) + field]!;
  }

  /** No row's kept etag is larger than this (0 without metadata); a slice may answer its whole batch's largest. */
  etagUpperBound(): number {
    const numbers = this.metaNumbers === undefined ? this.decodeMeta() : this.metaNumbers;
    return numbers === null ? 0 : this.metaEtagMax;
  }

  /**
   * @internal Records that checkPackedRows found every row's key, value and metadata in range,
   * with these key and value limits (request-check.ts), so the node need not loop over them again.
   */
  noteChecked(maxKeyBytes: number, maxValueBytes: number): void {
    this.checkedKeyBytes = maxKeyBytes;
    this.checkedValueBytes = maxValueBytes;
  }

  /** Whether checkPackedRows passed this batch under limits at most these (see noteChecked). */
  checkedWithin(maxKeyBytes: number, maxValueBytes: number): boolean {
    return this.checkedKeyBytes >= 0 && this.checkedKeyBytes <= maxKeyBytes && this.checkedValueBytes <= maxValueBytes;
  }

  /** Row i's metadata field exactly, for error messages. */
  metaFieldExact(i: number, field: 0 | 1 | 2): bigint {
    if (this.metaBytes.length === 0) return 0n;
    return this.metaBytes.readBigUInt64LE(this.at(i) * PACKED_META_BYTES + field * 8);
  }

  /** Where row i's key starts in `data` (its value follows it; 0 ≤ i < count). */
  keyOffset(i: number): number {
    return this.offsets[this.first + i]! - this.base;
  }

  /** Bytewise comparison of row i's key with `other[otherStart..]`, without a view (0 ≤ i < count). */
  compareKeyTo(i: number, other: Uint8Array, otherStart = 0): number {
    const start = this.keyOffset(i);
    return compareBytes(this.data, start, start + this.keyLength(i), other, otherStart, other.length);
  }

  /** Bytewise comparison of the keys of rows i and j (both in 0 … count − 1). */
  compareKeys(i: number, j: number): number {
    const a = this.keyOffset(i);
    const b = this.keyOffset(j);
    return compareBytes(this.data, a, a + this.keyLength(i), this.data, b, b + this.keyLength(j));
  }

  /** Whether the keys strictly increase (sorted, no duplicates). Computed once. */
  isStrictlySorted(): boolean {
    if (this.sorted === undefined) {
      this.sorted = true;
      // Neighbours are compared four bytes at a time (big-endian words order as bytes do): sorted
      // keys share long prefixes (a restore's "k000000…"), which a byte loop walks one at a time.
      const data = this.data;
      const words = new DataView(data.buffer, data.byteOffset, data.byteLength);
      let prevStart = this.keyOffset(0);
      let prevLength = this.keyLength(0);
      for (let i = 1; i < this.count; i++) {
        const start = this.keyOffset(i);
        const length = this.keyLength(i);
        if (compareWords(words, data, prevStart, prevLength, start, length) >= 0) {
          this.sorted = false;
          break;
        }
        prevStart = start;
        prevLength = length;
      }
    }
    return this.sorted;
  }

  /**
   * The first row in `[from, to)` whose key is ≥ `bound`, by binary search: for sorted rows only
   * (see isStrictlySorted); `to` when there is none.
   */
  firstKeyAtLeast(bound: Uint8Array, from = 0, to = this.count): number {
    let lo = from;
    let hi = to;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.compareKeyTo(mid, bound) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Key plus value bytes of rows `[from, to)` (0 ≤ from ≤ to ≤ count), from the offsets: no loop over the rows. */
  bytesBetween(from: number, to: number): number {
    return this.offsets[this.first + to]! - this.offsets[this.first + from]!;
  }

  /** Copies row i's key into `target` at `at`; returns the bytes copied. */
  copyKey(i: number, target: Buffer, at: number): number {
    return copyBytes(this.data, this.keyOffset(i), this.keyLength(i), target, at);
  }

  /** Copies row i's value into `target` at `at`; returns the bytes copied. */
  copyValue(i: number, target: Buffer, at: number): number {
    return copyBytes(this.data, this.keyOffset(i) + this.keyLength(i), this.valueLength(i), target, at);
  }

  /** Rows `[start, end)` as views of this batch's buffers. */
  slice(start: number, end: number = this.count): PackedRows {
    const s = Math.max(0, Math.min(start, this.count));
    const e = Math.max(s, Math.min(end, this.count));
    if (s === 0 && e === this.count) return this;
    const data = this.data.subarray(this.offsets[this.first + s]! - this.base, this.offsets[this.first + e]! - this.base);
    const meta = this.metaBytes.length === 0 ? EMPTY : this.metaBytes.subarray(s * PACKED_META_BYTES, e * PACKED_META_BYTES);
    const lengths = this.lengths.subarray(s * PACKED_LENGTH_BYTES, e * PACKED_LENGTH_BYTES);
    const slice = new PackedRows(e - s, lengths, data, meta, this.offsets, this.lens, this.first + s, this.sorted === true ? true : undefined);
    if (this.metaNumbers !== undefined) {
      slice.metaNumbers = this.metaNumbers;
      slice.metaFirst = this.metaFirst + s;
      slice.metaEtagMax = this.metaEtagMax;
    }
    return slice;
  }

  /** The rows as objects (views of the keys and values); for callers of the per-row API. */
  toRows(): BulkRowInput[] {
    const rows: BulkRowInput[] = new Array(this.count);
    for (let i = 0; i < this.count; i++) {
      const row: BulkRowInput = { key: this.key(i), value: this.value(i) };
      if (this.metaBytes.length > 0) {
        row.etag = this.metaField(i, 0);
        row.updatedAtMs = this.metaField(i, 1);
        row.expiresAtMs = this.metaField(i, 2);
      }
      rows[i] = row;
    }
    return rows;
  }

  private at(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) throw new RangeError(`row ${i} is outside a packed batch of ${this.count} rows`);
    return i;
  }

  private metaU64(at: number): number {
    return this.metaBytes.readUInt32LE(at + 4) * TWO_32 + this.metaBytes.readUInt32LE(at);
  }

  /** Decodes `metaBytes` once (metaNumbers): the same numbers metaU64 reads, high word × 2^32 + low word. */
  private decodeMeta(): Float64Array | null {
    const meta = this.metaBytes;
    if (meta.length === 0) return (this.metaNumbers = null);
    const words = decodeU32s(meta);
    const numbers = new Float64Array(words.length >>> 1);
    let etagMax = 0;
    for (let k = 0; k < numbers.length; k++) {
      const n = words[2 * k + 1]! * TWO_32 + words[2 * k]!;
      numbers[k] = n;
      if (k % 3 === 0 && n > etagMax) etagMax = n;
    }
    this.metaFirst = 0;
    this.metaEtagMax = etagMax;
    return (this.metaNumbers = numbers);
  }
}

/**
 * Builds a PackedRows by copying rows into growing buffers (sized by the hints, doubled as
 * needed). `finish` hands the buffers to the batch without copying and starts the builder afresh.
 */
export class PackedRowsBuilder {
  private readonly rowsHint: number;
  private readonly bytesHint: number;
  private readonly pool: BatchBufferPool | undefined;
  private lens = new Uint32Array(0);
  private data: Buffer = EMPTY;
  private metaBuf: Buffer = EMPTY;
  private offsets = new Float64Array(0);
  private rows = 0;
  private used = 0;
  private withMeta = false;

  /**
   * `rowsHint` and `bytesHint`: the rows and key + value bytes expected, to size the buffers once.
   * `pool`: the key and value bytes go into a buffer taken from it (outgrown ones are given back);
   * the caller gives the finished batch's `toMessage().data` back once nothing reads it.
   */
  constructor(options: { rowsHint?: number; bytesHint?: number; pool?: BatchBufferPool } = {}) {
    this.rowsHint = Math.max(1, Math.floor(options.rowsHint ?? 1024));
    this.bytesHint = Math.max(1, Math.floor(options.bytesHint ?? 64 * 1024));
    this.pool = options.pool;
  }

  /** Rows added since the last finish. */
  get count(): number {
    return this.rows;
  }

  /** Key and value bytes added since the last finish. */
  get bytes(): number {
    return this.used;
  }

  /** Appends a row, copying its key and value (and metadata, when given). */
  add(key: Uint8Array, value: Uint8Array, meta?: RowMeta): void {
    const size = key.byteLength + value.byteLength;
    this.reserve(this.rows + 1, this.used + size);
    this.lens[2 * this.rows] = key.byteLength;
    this.lens[2 * this.rows + 1] = value.byteLength;
    copyBytes(key, 0, key.byteLength, this.data, this.used);
    copyBytes(value, 0, value.byteLength, this.data, this.used + key.byteLength);
    this.offsets[this.rows] = this.used;
    if (meta !== undefined && ((meta.etag ?? 0) !== 0 || (meta.updatedAtMs ?? 0) !== 0 || (meta.expiresAtMs ?? 0) !== 0)) {
      if (!this.withMeta) this.startMeta();
      const m = this.rows * PACKED_META_BYTES;
      writeU64LE(this.metaBuf, m, meta.etag ?? 0);
      writeU64LE(this.metaBuf, m + 8, meta.updatedAtMs ?? 0);
      writeU64LE(this.metaBuf, m + 16, meta.expiresAtMs ?? 0);
    } else if (this.withMeta) {
      this.metaBuf.fill(0, this.rows * PACKED_META_BYTES, (this.rows + 1) * PACKED_META_BYTES);
    }
    this.rows++;
    this.used += size;
  }

  /**
   * Appends a row without metadata whose key and value lie in `source` (`[keyStart, +keyLength)`,
   * `[valueStart, +valueLength)`), copying them: for rows decoded as spans of a received message,
   * without a view per row.
   */
  addSpan(source: Uint8Array, keyStart: number, keyLength: number, valueStart: number, valueLength: number): void {
    const size = keyLength + valueLength;
    this.reserve(this.rows + 1, this.used + size);
    this.lens[2 * this.rows] = keyLength;
    this.lens[2 * this.rows + 1] = valueLength;
    copyBytes(source, keyStart, keyLength, this.data, this.used);
    copyBytes(source, valueStart, valueLength, this.data, this.used + keyLength);
    this.offsets[this.rows] = this.used;
    if (this.withMeta) this.metaBuf.fill(0, this.rows * PACKED_META_BYTES, (this.rows + 1) * PACKED_META_BYTES);
    this.rows++;
    this.used += size;
  }

  /** The rows added so far as a batch; the builder starts empty again. */
  finish(): PackedRows {
    const offsets = this.rows === 0 ? new Float64Array(1) : this.offsets.subarray(0, this.rows + 1);
    offsets[this.rows] = this.used;
    const lens = this.lens.subarray(0, 2 * this.rows);
    const packed = new PackedRows(
      this.rows,
      lengthsBytes(lens),
      this.data.subarray(0, this.used),
      this.withMeta ? this.metaBuf.subarray(0, this.rows * PACKED_META_BYTES) : EMPTY,
      offsets,
      lens,
      0,
    );
    this.lens = new Uint32Array(0);
    this.data = EMPTY;
    this.metaBuf = EMPTY;
    this.offsets = new Float64Array(0);
    this.rows = 0;
    this.used = 0;
    this.withMeta = false;
    return packed;
  }

  private reserve(rows: number, bytes: number): void {
    if (rows + 1 > this.offsets.length) {
      const capacity = Math.max(rows + 1, this.offsets.length === 0 ? this.rowsHint + 1 : this.offsets.length * 2);
      const offsets = new Float64Array(capacity);
      offsets.set(this.offsets.subarray(0, this.rows));
      this.offsets = offsets;
      const lens = new Uint32Array(2 * capacity);
      lens.set(this.lens.subarray(0, 2 * this.rows));
      this.lens = lens;
      if (this.withMeta) this.metaBuf = grow(this.metaBuf, capacity * PACKED_META_BYTES, this.rows * PACKED_META_BYTES);
    }
    if (bytes > this.data.length) {
      const capacity = Math.max(bytes, this.data.length === 0 ? this.bytesHint : this.data.length * 2);
      if (this.pool === undefined) {
        this.data = grow(this.data, capacity, this.used);
      } else {
        const data = this.pool.take(capacity);
        this.data.copy(data, 0, 0, this.used);
        this.pool.give(this.data);
        this.data = data;
      }
    }
  }

  /** The first row with metadata: earlier rows get zeros (unset). */
  private startMeta(): void {
    this.withMeta = true;
    this.metaBuf = Buffer.alloc(this.offsets.length * PACKED_META_BYTES);
  }
}

const LITTLE_ENDIAN = endianness() === 'LE';

/** The wire `lengths` of decoded lengths: on little-endian machines a view of the same memory. */
function lengthsBytes(lens: Uint32Array): Buffer {
  if (LITTLE_ENDIAN) return Buffer.from(lens.buffer, lens.byteOffset, lens.byteLength);
  const out = Buffer.allocUnsafe(lens.length * 4);
  for (let i = 0; i < lens.length; i++) out.writeUInt32LE(lens[i]!, i * 4);
  return out;
}

/** Little-endian u32s (`lengths`, `meta`) copied into aligned memory (and byte-swapped on big-endian machines). */
function decodeU32s(bytes: Buffer): Uint32Array {
  const words = new Uint32Array(bytes.length / 4);
  if (LITTLE_ENDIAN) new Uint8Array(words.buffer).set(bytes);
  else for (let i = 0; i < words.length; i++) words[i] = bytes.readUInt32LE(i * 4);
  return words;
}

/** Bytewise comparison of `bytes[a, a + aLength)` and `bytes[b, b + bLength)`, a word (`words`, the same memory) at a time. */
function compareWords(words: DataView, bytes: Uint8Array, a: number, aLength: number, b: number, bLength: number): number {
  const n = Math.min(aLength, bLength);
  let k = 0;
  for (; k + 4 <= n; k += 4) {
    const x = words.getUint32(a + k);
    const y = words.getUint32(b + k);
    if (x !== y) return x < y ? -1 : 1;
  }
  // The first k bytes are equal: the rest (under 4 in common) orders the two.
  return compareBytes(bytes, a + k, a + aLength, bytes, b + k, b + bLength);
}

function grow(buf: Buffer, capacity: number, used: number): Buffer {
  const out = Buffer.allocUnsafe(capacity);
  buf.copy(out, 0, 0, used);
  return out;
}

/** A row's metadata field (a safe integer ≥ 0, else RangeError) as u64 little-endian, the packed form's layout. */
export function writeU64LE(buf: Buffer, at: number, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`packed row metadata must be a whole number 0–${Number.MAX_SAFE_INTEGER}, got ${n}`);
  buf.writeUInt32LE(n >>> 0, at);
  buf.writeUInt32LE(Math.floor(n / TWO_32), at + 4);
}

function invalid(field: string, message: string, value: number): StoreError {
  return new StoreError('STORE_INVALID_ARGUMENT', message, { context: { field, value: String(value) } });
}
