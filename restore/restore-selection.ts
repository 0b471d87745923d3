import type { PartitionMap } from '../store/index.js';
import { RestoreError } from './restore-errors.js';

/** A key range `[start, end)` in lowercase hex; "" = open end (start or end of the keyspace). */
export interface KeyRange {
  start: string;
  end: string;
}

/**
 * Parses `START:END` (hex keys, either side empty = open end) as given to `restore --range`.
 * Throws RESTORE_INVALID_SELECTION naming the bad value.
 */
export function parseKeyRange(text: string): KeyRange {
  const bad = (why: string): never => {
    throw new RestoreError('RESTORE_INVALID_SELECTION', `range "${text}" ${why}; write START:END in hex, either side empty for an open end (e.g. 4000:8000, :4000, c000:)`);
  };
  const parts = text.trim().split(':');
  if (parts.length !== 2) bad('is not START:END');
  const [start, end] = parts.map((p) => p.trim().toLowerCase()) as [string, string];
  for (const [name, hex] of [['start', start], ['end', end]] as const) {
    if (!/^([0-9a-f]{2})*$/.test(hex)) bad(`has a ${name} that is not hex bytes ("${hex}")`);
  }
  if (start !== '' && end !== '' && Buffer.compare(Buffer.from(start, 'hex'), Buffer.from(end, 'hex')) >= 0) bad('is empty: its start is not below its end');
  return { start, end };
}

/**
 * The key ranges of the named partitions of `map`. Throws RESTORE_INVALID_SELECTION for an id the
 * map does not have, listing the ids it has.
 */
export function partitionRanges(map: PartitionMap, ids: readonly number[]): KeyRange[] {
  return ids.map((id) => {
    const partition = map.partitions.find((p) => p.id === id);
    if (partition === undefined) {
      throw new RestoreError(
        'RESTORE_INVALID_SELECTION',
        `partition ${id} is not in the target cluster's partition map (version ${map.version}); its partitions are ${map.partitions.map((p) => p.id).join(', ')} (see \`shardpipe cluster map\`)`,
      );
    }
    return { start: partition.start.toString('hex'), end: partition.end.toString('hex') };
  });
}

/** Sorts and merges overlapping or touching ranges: the canonical form of a selection. */
export function normalizeRanges(ranges: readonly KeyRange[]): KeyRange[] {
  const sorted = [...ranges].sort((a, b) => compareStart(a.start, b.start));
  const out: KeyRange[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    // Touching or overlapping: the next one starts at or before the last one's end.
    if (last !== undefined && (last.end === '' || compareStart(r.start, last.end) <= 0)) {
      if (compareEnd(r.end, last.end) > 0) last.end = r.end;
    } else out.push({ ...r });
  }
  return out;
}

/** True when the (normalized) selection is the whole keyspace. */
export function coversKeyspace(selection: readonly KeyRange[]): boolean {
  return selection.length === 1 && selection[0]!.start === '' && selection[0]!.end === '';
}

/** The pieces of `range` inside the (normalized) selection, in key order. */
export function intersectRanges(range: KeyRange, selection: readonly KeyRange[]): KeyRange[] {
  const out: KeyRange[] = [];
  for (const s of selection) {
    const start = compareStart(s.start, range.start) > 0 ? s.start : range.start;
    const end = compareEnd(s.end, range.end) < 0 ? s.end : range.end;
    if (end === '' || compareStart(start, end) < 0) out.push({ start, end });
  }
  return out;
}

/** The selection as text, e.g. `[2000, 6000) [a000, +∞)`. */
export function selectionText(selection: readonly KeyRange[]): string {
  return selection.map((r) => `[${r.start || '-∞'}, ${r.end || '+∞'})`).join(' ');
}

/**
 * Tells, for keys given in ascending order, whether each lies in one of `pieces` (sorted, disjoint):
 * one forward cursor, so a sorted shard costs O(rows + pieces).
 */
export class SortedRangeFilter {
  private readonly bounds: Array<{ start: Buffer; end: Buffer }>;
  private at = 0;

  constructor(pieces: readonly KeyRange[]) {
    this.bounds = pieces.map((p) => ({ start: Buffer.from(p.start, 'hex'), end: Buffer.from(p.end, 'hex') }));
  }

  /** Whether `key` is in a piece; keys must not go down between calls. */
  contains(key: Buffer): boolean {
    return this.pieceOf(key) >= 0;
  }

  /** The index of the piece holding `key`, or -1; keys must not go down between calls. */
  pieceOf(key: Buffer): number {
    while (this.at < this.bounds.length) {
      const b = this.bounds[this.at]!;
      if (b.end.length > 0 && Buffer.compare(key, b.end) >= 0) {
        this.at++;
        continue;
      }
      return Buffer.compare(key, b.start) >= 0 ? this.at : -1;
    }
    return -1;
  }
}

/** Orders range starts ("" = lowest). */
function compareStart(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}

/** Orders range ends ("" = highest). */
function compareEnd(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '') return 1;
  if (b === '') return -1;
  return compareStart(a, b);
}
