import type { ClassicLevel } from 'classic-level';
import { parseDurationMs } from '../common/index.js';
import type { PackedRows } from './packed-rows.js';
import { readU64, writeU64 } from './record.js';

/**
 * How much of a partition's change log is kept: entries are trimmed from the oldest once the log
 * holds more than `maxKeys` keys or once they are older than `maxAgeMs`, whichever comes first.
 * `maxKeys` 0 keeps no log (every sync of the partition is a full copy).
 */
export interface ChangeLogRetention {
  /** Keys the log holds at most (summed over its entries). Default 1,000,000. */
  maxKeys: number;
  /** Oldest entry kept, ms. Default 3,600,000 (1 h). */
  maxAgeMs: number;
}

export const DEFAULT_CHANGE_LOG_RETENTION: Readonly<ChangeLogRetention> = Object.freeze({ maxKeys: 1_000_000, maxAgeMs: 3_600_000 });

/** Most keys `--change-log-retention` accepts (about 100 bytes of disk each). */
export const MAX_CHANGE_LOG_KEYS = 100_000_000;

/** Parses `--change-log-retention KEYS,DURATION` ("1000000,1h"); RangeError naming the allowed ranges otherwise. */
export function parseChangeLogRetention(text: string): ChangeLogRetention {
  const parts = text.split(',');
  if (parts.length !== 2) throw new RangeError(`--change-log-retention must be KEYS,DURATION (e.g. 1000000,1h), got "${text}"`);
  const maxKeys = Number(parts[0]!.trim());
  if (!Number.isSafeInteger(maxKeys) || maxKeys < 0 || maxKeys > MAX_CHANGE_LOG_KEYS) {
    throw new RangeError(`--change-log-retention keys must be a whole number 0–${MAX_CHANGE_LOG_KEYS} (0 = no log), got "${parts[0]}"`);
  }
  const maxAgeMs = parseDurationMs(parts[1]!, { minMs: 1000, maxMs: 30 * 86_400_000, name: '--change-log-retention age' });
  return { maxKeys, maxAgeMs };
}

/**
 * The change log's namespace inside a partition's LevelDB ('n'): data scans, counts and checksums
 * never read it. Above the data ('d') and the state key ('m'): a sorted bulk load's memtable then
 * spans from its lowest new data key up, so LevelDB's level-0 compactions rewrite only the newest
 * level-1 file. Below the data (where it was, 'c'), every level-0 file spanned all of level 1 and
 * each compaction rewrote it whole (a bulk load cost each replica about a quarter more
 * LevelDB background CPU).
 */
export const NS_CHANGES = 0x6e;
const LOG_END = Buffer.from([NS_CHANGES + 1]);
/** Where earlier versions kept the log ('c'): dropped on open (a sync from that partition then copies it whole once). */
const LEGACY_NS_CHANGES = 0x63;
// atMs, seq, keysBefore (u64 each), keyCount (u32), flags (u8), stream length (u8); then the stream, then each key as u32 length + bytes.
const HEADER_BYTES = 30;
const FLAG_GAP = 1;
// The entry holds the first and last key of a sorted bulk batch instead of its keys.
const FLAG_RANGE = 2;
/**
 * A strictly sorted bulk batch of at least this many rows is logged as its key range (two keys),
 * not its keys: a bulk load then writes one small entry per batch (its keys again would cost the
 * write path about a fifth more CPU), and a fast sync copies every snapshot row of the range.
 */
export const RANGE_ENTRY_MIN_ROWS = 64;
// Entries read per trimming step: a bulk batch's entry holds all its keys, so pages stay small.
const TRIM_BATCH = 64;

/** The header of one log entry: the write's place in its stream and when it was written. */
export interface ChangeEntryHeader {
  atMs: number;
  seq: number;
  stream: string;
  /** Keys logged before this entry since the log began (so the log's size is a subtraction). */
  keysBefore: number;
  keyCount: number;
  /** The write does not follow the one before in its stream (a new stream, or a jump: a sync's snapshot position): the keys it changed are not known. */
  gap: boolean;
}

/** What a partition's log covers, for a sync from a replica at `after`. */
export type ChangesSince =
  | { covered: true; keys: Buffer[]; ranges: KeyRange[]; entries: number }
  | { covered: false; reason: string };

function logKey(index: number): Buffer {
  const out = Buffer.allocUnsafe(9);
  out[0] = NS_CHANGES;
  writeU64(out, 1, index);
  return out;
}

function decodeHeader(raw: Buffer): ChangeEntryHeader {
  const streamLength = raw[29]!;
  return {
    atMs: readU64(raw, 0),
    seq: readU64(raw, 8),
    keysBefore: readU64(raw, 16),
    keyCount: raw.readUInt32BE(24),
    gap: (raw[28]! & FLAG_GAP) !== 0,
    stream: raw.toString('latin1', HEADER_BYTES, HEADER_BYTES + streamLength),
  };
}

/** The keys of an entry (views of `raw`). */
function entryKeys(raw: Buffer): Buffer[] {
  const keys: Buffer[] = [];
  let at = HEADER_BYTES + raw[29]!;
  while (at < raw.length) {
    const length = raw.readUInt32BE(at);
    keys.push(raw.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return keys;
}

/** Keys from `first` to `last`, both included. */
export interface KeyRange {
  first: Buffer;
  last: Buffer;
}

/** The keys one write changed: a bulk batch's rows, or point keys. */
export type ChangedKeys = PackedRows | readonly Buffer[];

/**
 * A partition's bounded change log: one entry per write-stream sequence number (a bulk batch's
 * keys packed into it, not one entry per row), written by the partition store in the same LevelDB
 * batch as the write, in its own key space (`n` + u64 index). A snapshot of the partition sees the
 * log exactly as far as its data. Trimmed from the oldest by `trim`.
 */
export class ChangeLog {
  readonly retention: ChangeLogRetention;
  private readonly db: ClassicLevel<Buffer, Buffer>;
  private readonly now: () => number;
  /** Index of the oldest entry kept (== next when empty). */
  private first = 0;
  private next = 0;
  /** keysBefore of the oldest kept entry, and of the next one written. */
  private firstKeysBefore = 0;
  private keysTotal = 0;
  private oldestMs = 0;

  constructor(db: ClassicLevel<Buffer, Buffer>, retention: ChangeLogRetention, now: () => number) {
    this.db = db;
    this.retention = retention;
    this.now = now;
  }

  get enabled(): boolean {
    return this.retention.maxKeys > 0;
  }

  /** Entries and keys held, and the oldest entry's time (0: empty). */
  get size(): { entries: number; keys: number; oldestMs: number } {
    return { entries: this.next - this.first, keys: this.keysTotal - this.firstKeysBefore, oldestMs: this.next > this.first ? this.oldestMs : 0 };
  }

  /** Reads the log's bounds from LevelDB (on open, and after the partition reopened its LevelDB). */
  async load(): Promise<void> {
    const legacy = { gte: Buffer.from([LEGACY_NS_CHANGES]), lt: Buffer.from([LEGACY_NS_CHANGES + 1]) };
    if ((await this.db.keys({ ...legacy, limit: 1 }).all()).length > 0) await this.db.clear(legacy);
    const [first] = await this.db.iterator({ gte: Buffer.from([NS_CHANGES]), lt: LOG_END, limit: 1 }).all();
    const [last] = await this.db.iterator({ gte: Buffer.from([NS_CHANGES]), lt: LOG_END, limit: 1, reverse: true }).all();
    if (first === undefined || last === undefined) {
      this.first = this.next;
      this.firstKeysBefore = this.keysTotal;
      return;
    }
    const head = decodeHeader(first[1]);
    const tail = decodeHeader(last[1]);
    this.first = readU64(first[0], 1);
    this.next = readU64(last[0], 1) + 1;
    this.firstKeysBefore = head.keysBefore;
    this.keysTotal = tail.keysBefore + tail.keyCount;
    this.oldestMs = head.atMs;
  }

  /**
   * The LevelDB key and value of the entry for one write (the caller puts them in the write's
   * batch). Numbered now, in build order, which is commit order; a write that then fails leaves a
   * hole in the numbering, which nothing reads.
   */
  entry(position: { stream: string; seq: number }, gap: boolean, keys: ChangedKeys, atMs: number): [Buffer, Buffer] {
    const stream = Buffer.from(position.stream, 'latin1');
    if (stream.length > 255) throw new RangeError(`a write stream id is at most 255 bytes, got ${stream.length}`);
    const packed = !Array.isArray(keys);
    const rows = keys as PackedRows;
    const count = packed ? rows.count : (keys as readonly Buffer[]).length;
    const range = packed && count >= RANGE_ENTRY_MIN_ROWS && rows.isStrictlySorted();
    // As a range, the entry holds two keys: the batch's first and last.
    const list = range ? [rows.key(0), rows.key(count - 1)] : (keys as readonly Buffer[]);
    const listed = range ? 2 : count;
    let bytes = HEADER_BYTES + stream.length + 4 * listed;
    for (let i = 0; i < listed; i++) bytes += packed && !range ? rows.keyLength(i) : list[i]!.length;
    const out = Buffer.allocUnsafe(bytes);
    writeU64(out, 0, atMs);
    writeU64(out, 8, position.seq);
    writeU64(out, 16, this.keysTotal);
    out.writeUInt32BE(count, 24);
    out[28] = (gap ? FLAG_GAP : 0) | (range ? FLAG_RANGE : 0);
    out[29] = stream.length;
    stream.copy(out, HEADER_BYTES);
    let at = HEADER_BYTES + stream.length;
    for (let i = 0; i < listed; i++) {
      if (packed && !range) {
        out.writeUInt32BE(rows.keyLength(i), at);
        at += 4 + rows.copyKey(i, out, at + 4);
      } else {
        const key = list[i]!;
        out.writeUInt32BE(key.length, at);
        at += 4 + key.copy(out, at + 4);
      }
    }
    if (this.next === this.first) this.oldestMs = atMs;
    this.keysTotal += count;
    return [logKey(this.next++), out];
  }

  /**
   * Deletes the oldest entries while the log holds more than `maxKeys` keys or they are older than
   * `maxAgeMs`; resolves how many entries went. Not in the write queue: it touches only log keys,
   * which writes only append to, and a snapshot keeps its own view.
   */
  async trim(): Promise<number> {
    let trimmed = 0;
    const cutoffMs = this.now() - this.retention.maxAgeMs;
    for (;;) {
      const over = this.keysTotal - this.firstKeysBefore - this.retention.maxKeys;
      // Nothing due (known from memory): no read at all, so the timer costs nothing on a busy partition.
      if (over <= 0 && (this.next === this.first || this.oldestMs >= cutoffMs)) return trimmed;
      const page = await this.db.iterator({ gte: logKey(this.first), lt: LOG_END, limit: TRIM_BATCH }).all();
      if (page.length === 0) {
        this.first = this.next;
        this.firstKeysBefore = this.keysTotal;
        return trimmed;
      }
      const dels: Array<{ type: 'del'; key: Buffer }> = [];
      let dropped = 0;
      for (const [k, v] of page) {
        const h = decodeHeader(v);
        if (dropped < over || h.atMs < cutoffMs) {
          dels.push({ type: 'del', key: k });
          dropped += h.keyCount;
          continue;
        }
        this.oldestMs = h.atMs;
        break;
      }
      if (dels.length === 0) return trimmed;
      await this.db.batch(dels);
      const last = dels[dels.length - 1]!.key;
      const lastIndex = readU64(last, 1);
      this.first = lastIndex + 1;
      this.firstKeysBefore += dropped;
      trimmed += dels.length;
      if (dels.length < page.length) return trimmed;
    }
  }

  /**
   * The keys changed after `after` up to the end of the log as `snapshot` sees it, whose last write
   * is `upTo` (the snapshot's chain position): covered only when the log there holds, in stream
   * `upTo.stream`, an entry for every sequence number after `after.seq`, none of them a gap.
   * Distinct keys, in no particular order.
   */
  async changesSince(after: { stream: string; seq: number }, upTo: { stream: string; seq: number }, snapshot: ReturnType<ClassicLevel<Buffer, Buffer>['snapshot']> | undefined): Promise<ChangesSince> {
    if (!this.enabled) return { covered: false, reason: 'this node keeps no change log (--change-log-retention 0)' };
    if (after.stream === '' || after.stream !== upTo.stream) return { covered: false, reason: `the replica is at stream "${after.stream}", the source at "${upTo.stream}"` };
    if (after.seq > upTo.seq) return { covered: false, reason: `the replica is ahead of the source (${after.seq} > ${upTo.seq})` };
    const seen = new Set<string>();
    const keys: Buffer[] = [];
    const ranges: KeyRange[] = [];
    let expected = upTo.seq;
    let entries = 0;
    if (expected === after.seq) return { covered: true, keys, ranges, entries };
    const iterator = this.db.iterator({ gte: Buffer.from([NS_CHANGES]), lt: LOG_END, reverse: true, snapshot });
    try {
      for (;;) {
        const page = await iterator.nextv(256);
        if (page.length === 0) return { covered: false, reason: `the log reaches back to sequence ${expected + 1}, not ${after.seq + 1}` };
        for (const [, v] of page) {
          const h = decodeHeader(v);
          if (h.stream !== upTo.stream || h.seq !== expected) return { covered: false, reason: `the log has no entry for sequence ${expected} of the stream (found ${h.stream}:${h.seq})` };
          if (h.gap) return { covered: false, reason: `sequence ${expected} follows a jump in the source's stream (its own sync)` };
          if ((v[28]! & FLAG_RANGE) !== 0) {
            const [first, last] = entryKeys(v);
            ranges.push({ first: Buffer.from(first!), last: Buffer.from(last!) });
          } else for (const key of entryKeys(v)) {
            const id = key.toString('latin1');
            if (seen.has(id)) continue;
            seen.add(id);
            keys.push(Buffer.from(key));
          }
          entries++;
          expected--;
          if (expected === after.seq) return { covered: true, keys, ranges, entries };
        }
      }
    } finally {
      await iterator.close();
    }
  }
}
