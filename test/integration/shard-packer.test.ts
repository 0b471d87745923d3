import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parquetShardStream, readShardColumns } from '../../backup/index.js';
import { statDataFile } from '../../files/index.js';
import { SortedRangeFilter, packShardChunk } from '../../restore/index.js';
import { RangeDigest, type StoredEntry } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const NOW = 1_760_000_000_000;

/** Every 4th row expired at NOW, every 4th + 1 expiring later, the rest without expiry. */
function entry(i: number): StoredEntry {
  const expiresAtMs = i % 4 === 0 ? NOW - 1 + (i % 8 === 0 ? 1 : 0) : i % 4 === 1 ? NOW + 1000 + i : 0;
  return { key: Buffer.from(`k${String(i).padStart(5, '0')}`), value: Buffer.from(`v${i}`.repeat(1 + (i % 3))), etag: 2 ** 40 + i, updatedAtMs: NOW - 5000 + i, expiresAtMs };
}

describe('restore: a shard chunk packed straight from its columns', () => {
  let tmp: TempDir;
  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-shard-packer-');
  });
  afterAll(async () => {
    await tmp?.remove();
  });

  it('keeps the live rows inside the selection with etag, update time and expiry; counts the skipped; digests every row read; into reused buffers', async () => {
    const entries = Array.from({ length: 200 }, (_, i) => entry(i));
    const path = tmp.sub('shard.parquet');
    const written = { rows: 0, digest: new RangeDigest() };
    async function* source(): AsyncGenerator<StoredEntry[]> {
      yield entries;
    }
    await pipeline(Readable.from(parquetShardStream(source(), { backupId: '20260101T000000Z-000000', shard: 0, rangeStart: Buffer.alloc(0), rangeEnd: Buffer.alloc(0) }, written, { rowGroupRows: 64 })), createWriteStream(path));
    // Keys k00050 up to (not including) k00120 are selected.
    const selected = new SortedRangeFilter([{ start: Buffer.from('k00050').toString('hex'), end: Buffer.from('k00120').toString('hex') }]);
    const digest = new RangeDigest();
    const kept: StoredEntry[] = [];
    let expired = 0;
    let outside = 0;
    let first = 0;
    // Each chunk is packed into the buffers of the one before (copied out below): reused when large enough.
    let spare: ReturnType<typeof packShardChunk>['buffers'] | undefined;
    let reused = 0;
    for await (const chunk of readShardColumns(await statDataFile(path, 'parquet'), { chunkRows: 30 })) {
      const out = packShardChunk(chunk, { digest, selected, now: NOW, firstExpiresAtMs: first, reuse: spare });
      if (spare !== undefined && out.buffers.data === spare.data) reused++;
      spare = out.buffers;
      expired += out.expired;
      outside += out.outside;
      first = out.firstExpiresAtMs;
      expect(out.packed.count + out.expired + out.outside).toBe(chunk.to - chunk.from);
      for (let i = 0; i < out.packed.count; i++) {
        kept.push({ key: Buffer.from(out.packed.key(i)), value: Buffer.from(out.packed.value(i)), etag: out.packed.metaField(i, 0), updatedAtMs: out.packed.metaField(i, 1), expiresAtMs: out.packed.metaField(i, 2) });
      }
    }
    const inside = entries.filter((e) => e.key.toString() >= 'k00050' && e.key.toString() < 'k00120');
    const live = inside.filter((e) => e.expiresAtMs === 0 || e.expiresAtMs > NOW);
    expect(kept).toEqual(live);
    expect(expired).toBe(inside.length - live.length);
    expect(expired).toBeGreaterThan(0);
    expect(outside).toBe(entries.length - inside.length);
    expect(first).toBe(Math.min(...inside.filter((e) => e.expiresAtMs > 0).map((e) => e.expiresAtMs)));
    expect(digest.count).toBe(entries.length);
    expect(digest.toHex()).toBe(written.digest.toHex());
    expect(reused).toBeGreaterThan(0);
  });
});
