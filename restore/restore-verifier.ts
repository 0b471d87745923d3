import { RangeDigest, type StoreClient } from '../store/index.js';
import { describeCause } from '../common/index.js';
import { SortedRangeFilter, intersectRanges, normalizeRanges, type KeyRange } from './restore-selection.js';
import type { ShardChunk, ShardSpec } from './shard-file.js';

/** One range of a shard whose store contents differ from what the backup says it must hold. */
export interface VerifyMismatch {
  shard: number;
  file: string;
  /** The range checked, hex ("" = open end): the shard's range, or its piece inside the selection. */
  start: string;
  end: string;
  expectedRows: number;
  actualRows: number;
  expectedDigest: string;
  actualDigest: string;
  /** Set when no expectation could be computed (the shard file could not be read again). */
  reason?: string;
}

export interface VerifyReport {
  shardsChecked: number;
  /** Ranges compared: one per shard, or one per piece of a shard inside the selection. */
  rangesChecked: number;
  mismatches: VerifyMismatch[];
  /** Shards whose expectation had to be computed from the file: rows had expired since the backup, or only part of the shard was selected. */
  shardsReread: number;
}

export interface VerifyOptions {
  /**
   * Per shard index: the earliest expiry among the shard's rows (Unix ms; 0 = none expires), as the
   * restore recorded it. A shard missing here is read again whenever it is checked.
   */
  firstExpiresAtMs?: ReadonlyMap<number, number>;
  /**
   * Check only these key ranges (a partial restore): each shard is checked piece by piece, its
   * range ∩ the selection; shards outside the selection are not checked. Absent = every shard's
   * whole range.
   */
  selection?: readonly KeyRange[];
  /** Reads a shard file's rows again, when rows have expired since the backup or the shard is cut by the selection. */
  readShard: (shard: ShardSpec, signal?: AbortSignal) => AsyncIterable<ShardChunk>;
  /** Shards checked at once. Default 4. */
  concurrency?: number;
  /** Attempts when rows expire while a shard is being checked. Default 3. */
  attempts?: number;
  /** Clock; must agree with the store nodes' clocks. Default Date.now. */
  now?: () => number;
  signal?: AbortSignal;
}

/**
 * Compares every shard range of the store with the backup: the store's order-independent checksum
 * (etags included) and count of the range against what the shard must hold **now**.
 *
 * The rule: a shard's range must hold exactly the shard file's rows that are live at verification
 * time. When no row of the shard has an expiry at or before the moment of the check, that is the
 * manifest's checksum and row count as written. Otherwise rows have expired since the backup
 * (skipped by the restore, or gone since): the file is read again and the expectation is the digest
 * of its rows still live — provided the file still adds up to the manifest's checksum (else the
 * shard is a mismatch: what it must hold is unknown). A row expiring while its range is being checked makes the answer
 * ambiguous; that shard is checked again (up to `attempts` times).
 *
 * With a `selection` the same rule holds per piece (shard range ∩ selection): a piece must hold
 * exactly the file's rows in that piece that are live now. A piece smaller than its shard has no
 * manifest figure, so its file is always read again (and must still match the manifest).
 */
export async function verifyRestore(client: StoreClient, shards: readonly ShardSpec[], options: VerifyOptions): Promise<VerifyReport> {
  const concurrency = options.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be an integer ≥ 1, got ${concurrency}`);
  const attempts = options.attempts ?? 3;
  const now = options.now ?? Date.now;
  const selection = options.selection === undefined ? undefined : normalizeRanges(options.selection);
  const work = shards
    .map((shard) => ({ shard, pieces: selection === undefined ? [{ start: shard.start, end: shard.end }] : intersectRanges({ start: shard.start, end: shard.end }, selection) }))
    .filter((w) => w.pieces.length > 0);
  const mismatches: VerifyMismatch[] = [];
  let shardsReread = 0;
  let next = 0;

  const checkShard = async (shard: ShardSpec, pieces: KeyRange[]): Promise<void> => {
    const first = options.firstExpiresAtMs?.get(shard.index);
    const whole = pieces.length === 1 && pieces[0]!.start === shard.start && pieces[0]!.end === shard.end;
    for (let attempt = 1; ; attempt++) {
      options.signal?.throwIfAborted();
      const before = now();
      const actual: RangeDigest[] = [];
      for (const piece of pieces) actual.push(await client.checksum(Buffer.from(piece.start, 'hex'), Buffer.from(piece.end, 'hex'), { includeEtag: true, signal: options.signal }));
      const after = now();
      const base = (i: number) => ({ shard: shard.index, file: shard.file, start: pieces[i]!.start, end: pieces[i]!.end, actualRows: actual[i]!.count, actualDigest: actual[i]!.toHex() });
      if (whole && (first === 0 || (first !== undefined && first > after))) {
        if (actual[0]!.count !== shard.rows || actual[0]!.toHex() !== shard.checksum) mismatches.push({ ...base(0), expectedRows: shard.rows, expectedDigest: shard.checksum });
        return;
      }
      shardsReread++;
      let expected: { pieces: Array<{ digest: RangeDigest; ambiguous: number }>; file: RangeDigest };
      try {
        expected = await liveDigests(options.readShard(shard, options.signal), pieces, before, after);
      } catch (err) {
        for (let i = 0; i < pieces.length; i++) {
          mismatches.push({ ...base(i), expectedRows: whole ? shard.rows : -1, expectedDigest: whole ? shard.checksum : '', reason: `cannot read the shard file again: ${describeCause(err)}` });
        }
        return;
      }
      // The expectation is derived from the file only while the file is still what the manifest says.
      if (expected.file.count !== shard.rows || expected.file.toHex() !== shard.checksum) {
        for (let i = 0; i < pieces.length; i++) {
          mismatches.push({
            ...base(i),
            expectedRows: whole ? shard.rows : -1,
            expectedDigest: whole ? shard.checksum : '',
            reason: `the shard file no longer matches the manifest (its ${expected.file.count} rows have checksum ${expected.file.toHex()}), so what the range must hold is unknown`,
          });
        }
        return;
      }
      if (expected.pieces.some((p) => p.ambiguous > 0) && attempt < attempts) continue;
      for (const [i, want] of expected.pieces.entries()) {
        if (actual[i]!.count !== want.digest.count || actual[i]!.toHex() !== want.digest.toHex()) {
          mismatches.push({
            ...base(i),
            expectedRows: want.digest.count,
            expectedDigest: want.digest.toHex(),
            ...(want.ambiguous > 0 ? { reason: `${want.ambiguous} rows expired while the range was being checked` } : {}),
          });
        }
      }
      return;
    }
  };

  const lanes = Array.from({ length: Math.min(concurrency, work.length) }, async () => {
    while (next < work.length) {
      const w = work[next++]!;
      await checkShard(w.shard, w.pieces);
    }
  });
  await Promise.all(lanes);
  mismatches.sort((a, b) => a.shard - b.shard || Buffer.compare(Buffer.from(a.start, 'hex'), Buffer.from(b.start, 'hex')));
  return { shardsChecked: work.length, rangesChecked: work.reduce((n, w) => n + w.pieces.length, 0), mismatches, shardsReread };
}

/**
 * Per piece: the digest of the file's rows in it that are live at `after`, and how many of them
 * expire in (before, after] (live or not depends on when the store looked); plus the digest of
 * every row of the file (to check the file against the manifest).
 */
async function liveDigests(
  chunks: AsyncIterable<ShardChunk>,
  pieces: readonly KeyRange[],
  before: number,
  after: number,
): Promise<{ pieces: Array<{ digest: RangeDigest; ambiguous: number }>; file: RangeDigest }> {
  const out = pieces.map(() => ({ digest: new RangeDigest(), ambiguous: 0 }));
  const file = new RangeDigest();
  const filter = new SortedRangeFilter(pieces);
  for await (const chunk of chunks) {
    for (const row of chunk.rows) {
      file.add(row.key, row.value, row.expiresAtMs, row.etag);
      const at = filter.pieceOf(row.key);
      if (at < 0) continue;
      const piece = out[at]!;
      if (row.expiresAtMs > 0 && row.expiresAtMs <= after) {
        if (row.expiresAtMs > before) piece.ambiguous++;
        continue;
      }
      piece.digest.add(row.key, row.value, row.expiresAtMs, row.etag);
    }
  }
  return { pieces: out, file };
}
