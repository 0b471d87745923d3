import { RangeDigest, type StoreClient } from '../store/index.js';
import { describeCause } from './restore-errors.js';
import type { ShardChunk, ShardSpec } from './shard-reader.js';

/** One shard range whose store contents differ from what the backup says it must hold. */
export interface VerifyMismatch {
  shard: number;
  file: string;
  /** The range, hex ("" = open end). */
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
  mismatches: VerifyMismatch[];
  /** Shards whose expectation had to be recomputed from the file because some of their rows had expired. */
  shardsReread: number;
}

export interface VerifyOptions {
  /**
   * Per shard index: the earliest expiry among the shard's rows (Unix ms; 0 = none expires), as the
   * restore recorded it. A shard missing here is read again whenever it is checked.
   */
  firstExpiresAtMs?: ReadonlyMap<number, number>;
  /** Reads a shard file's rows again, when rows have expired since the backup. */
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
 */
export async function verifyRestore(client: StoreClient, shards: readonly ShardSpec[], options: VerifyOptions): Promise<VerifyReport> {
  const concurrency = options.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be an integer ≥ 1, got ${concurrency}`);
  const attempts = options.attempts ?? 3;
  const now = options.now ?? Date.now;
  const mismatches: VerifyMismatch[] = [];
  let shardsReread = 0;
  let next = 0;

  const checkShard = async (shard: ShardSpec): Promise<void> => {
    const first = options.firstExpiresAtMs?.get(shard.index);
    for (let attempt = 1; ; attempt++) {
      options.signal?.throwIfAborted();
      const before = now();
      const actual = await client.checksum(Buffer.from(shard.start, 'hex'), Buffer.from(shard.end, 'hex'), { includeEtag: true, signal: options.signal });
      const after = now();
      const base = { shard: shard.index, file: shard.file, start: shard.start, end: shard.end, actualRows: actual.count, actualDigest: actual.toHex() };
      if (first === 0 || (first !== undefined && first > after)) {
        if (actual.count !== shard.rows || actual.toHex() !== shard.checksum) mismatches.push({ ...base, expectedRows: shard.rows, expectedDigest: shard.checksum });
        return;
      }
      shardsReread++;
      let expected: { digest: RangeDigest; ambiguous: number; file: RangeDigest };
      try {
        expected = await liveDigest(options.readShard(shard, options.signal), before, after);
      } catch (err) {
        mismatches.push({ ...base, expectedRows: shard.rows, expectedDigest: shard.checksum, reason: `cannot read the shard file again: ${describeCause(err)}` });
        return;
      }
      // The expectation is derived from the file only while the file is still what the manifest says.
      if (expected.file.count !== shard.rows || expected.file.toHex() !== shard.checksum) {
        mismatches.push({
          ...base,
          expectedRows: shard.rows,
          expectedDigest: shard.checksum,
          reason: `the shard file no longer matches the manifest (its ${expected.file.count} rows have checksum ${expected.file.toHex()}), so what the range must hold is unknown`,
        });
        return;
      }
      if (expected.ambiguous > 0 && attempt < attempts) continue;
      if (actual.count !== expected.digest.count || actual.toHex() !== expected.digest.toHex()) {
        mismatches.push({
          ...base,
          expectedRows: expected.digest.count,
          expectedDigest: expected.digest.toHex(),
          ...(expected.ambiguous > 0 ? { reason: `${expected.ambiguous} rows expired while the range was being checked` } : {}),
        });
      }
      return;
    }
  };

  const lanes = Array.from({ length: Math.min(concurrency, shards.length) }, async () => {
    while (next < shards.length) await checkShard(shards[next++]!);
  });
  await Promise.all(lanes);
  mismatches.sort((a, b) => a.shard - b.shard);
  return { shardsChecked: shards.length, mismatches, shardsReread };
}

/**
 * Digest of the rows live at `after`, how many expire in (before, after] (live or not depends on
 * when the store looked), and the digest of every row (to check the file against the manifest).
 */
async function liveDigest(chunks: AsyncIterable<ShardChunk>, before: number, after: number): Promise<{ digest: RangeDigest; ambiguous: number; file: RangeDigest }> {
  const digest = new RangeDigest();
  const file = new RangeDigest();
  let ambiguous = 0;
  for await (const chunk of chunks) {
    for (const row of chunk.rows) {
      file.add(row.key, row.value, row.expiresAtMs, row.etag);
      if (row.expiresAtMs > 0 && row.expiresAtMs <= after) {
        if (row.expiresAtMs > before) ambiguous++;
        continue;
      }
      digest.add(row.key, row.value, row.expiresAtMs, row.etag);
    }
  }
  return { digest, ambiguous, file };
}
