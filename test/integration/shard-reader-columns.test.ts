import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupError, parquetShardStream, readShardColumns, readShardRows, type ShardColumnsChunk } from '../../backup/index.js';
import { statDataFile, type DataFile } from '../../files/index.js';
import { RangeDigest, type StoredEntry } from '../../store/index.js';
import { rejectionOf } from '../helpers/rejection.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const NOW = 1_760_000_000_000;

function entry(i: number): StoredEntry {
  return { key: Buffer.from(`k${String(i).padStart(6, '0')}`), value: Buffer.from(`value-${i}-`.repeat(1 + (i % 5))), etag: 1000 + i, updatedAtMs: NOW - i, expiresAtMs: i % 3 === 0 ? NOW + i : 0 };
}

/** The entries as a real shard file (backup's own writer), row groups of `rowGroupRows`. */
async function shardFile(tmp: TempDir, name: string, entries: StoredEntry[], rowGroupRows = 64): Promise<DataFile> {
  const path = tmp.sub(name);
  const stats = { rows: 0, digest: new RangeDigest() };
  async function* source(): AsyncGenerator<StoredEntry[]> {
    for (let i = 0; i < entries.length; i += 50) yield entries.slice(i, i + 50);
  }
  await pipeline(Readable.from(parquetShardStream(source(), { backupId: '20260101T000000Z-000000', shard: 0, rangeStart: Buffer.alloc(0), rangeEnd: Buffer.alloc(0) }, stats, { rowGroupRows })), createWriteStream(path));
  return statDataFile(path, 'parquet');
}

function rowsOf(chunk: ShardColumnsChunk): StoredEntry[] {
  const c = chunk.columns;
  const out: StoredEntry[] = [];
  for (let i = chunk.from; i < chunk.to; i++) {
    out.push({
      key: Buffer.from(c.keys.subarray(c.keyOffsets[i]!, c.keyOffsets[i + 1]!)),
      value: Buffer.from(c.values.subarray(c.valueOffsets[i]!, c.valueOffsets[i + 1]!)),
      etag: c.etag(i),
      updatedAtMs: c.updatedAtMs(i),
      expiresAtMs: c.expiresAtMs(i),
    });
  }
  return out;
}

/** The error reading every chunk ends with (fails the test when it ends without one). */
async function readError(chunks: AsyncIterable<ShardColumnsChunk>, onChunk: (chunk: ShardColumnsChunk) => void = () => undefined): Promise<BackupError> {
  return rejectionOf(
    (async () => {
      for await (const chunk of chunks) onChunk(chunk);
    })(),
    BackupError,
  );
}

const WHOLE = { start: Buffer.alloc(0), end: Buffer.alloc(0) };

describe('backup shard reader: column chunks (restore fast path) and the per-row checks on them', () => {
  let tmp: TempDir;
  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-shard-columns-');
  });
  afterAll(async () => {
    await tmp?.remove();
  });

  it('column chunks hold every row as written (null expiry = 0), resume inside a row group, and agree with readShardRows', async () => {
    const entries = Array.from({ length: 300 }, (_, i) => entry(i));
    const file = await shardFile(tmp, 'ok.parquet', entries);
    const read: StoredEntry[] = [];
    const positions: Array<[number, number, number]> = [];
    for await (const chunk of readShardColumns(file, { chunkRows: 40, range: WHOLE })) {
      read.push(...rowsOf(chunk));
      positions.push([chunk.rowGroup, chunk.rowOffset, chunk.to - chunk.from]);
    }
    expect(read).toEqual(entries);
    // Row groups of 64 rows cut into chunks of at most 40.
    expect(positions.slice(0, 3)).toEqual([[0, 0, 40], [0, 40, 24], [1, 0, 40]]);

    const resumed: StoredEntry[] = [];
    for await (const chunk of readShardColumns(file, { rowGroup: 2, rowOffset: 10, chunkRows: 1000, range: WHOLE })) resumed.push(...rowsOf(chunk));
    expect(resumed).toEqual(entries.slice(2 * 64 + 10));

    const asRows: StoredEntry[] = [];
    for await (const chunk of readShardRows(file, { chunkRows: 33, range: WHOLE })) asRows.push(...chunk.rows.map((r) => ({ ...r, key: Buffer.from(r.key), value: Buffer.from(r.value) })));
    expect(asRows).toEqual(entries);
  });

  it('a key not above the one before — also across chunks and row groups — is BACKUP_CORRUPT_FILE naming row group, row and both keys', async () => {
    for (const at of [5, 40, 64]) {
      const entries = Array.from({ length: 100 }, (_, i) => entry(i));
      entries[at] = { ...entries[at]!, key: entries[at - 1]!.key };
      const file = await shardFile(tmp, `order-${at}.parquet`, entries);
      const err = await readError(readShardColumns(file, { chunkRows: 40, range: WHOLE }));
      const rowGroup = Math.floor(at / 64);
      expect(err).toMatchObject({ code: 'BACKUP_CORRUPT_FILE', context: { rowGroup, row: at - rowGroup * 64 } });
      const hex = entries[at]!.key.toString('hex');
      expect(err.message).toContain(`row group ${rowGroup}, row ${at - rowGroup * 64}: key ${hex} is not above the previous key ${hex}`);
    }
  });

  it("a key outside the shard's range, an empty key and an etag below 1 are each named", async () => {
    const entries = Array.from({ length: 100 }, (_, i) => entry(i));
    const file = await shardFile(tmp, 'range.parquet', entries);
    const first = (range: { start: Buffer; end: Buffer }): Promise<BackupError> => readError(readShardColumns(file, { chunkRows: 40, range }));
    const below = await first({ start: entries[1]!.key, end: Buffer.alloc(0) });
    expect(below).toMatchObject({ code: 'BACKUP_CORRUPT_FILE', context: { rowGroup: 0, row: 0 } });
    expect(below.message).toContain(`key ${entries[0]!.key.toString('hex')} lies outside the shard's range [${entries[1]!.key.toString('hex')}, +∞)`);
    const above = await first({ start: Buffer.alloc(0), end: entries[70]!.key });
    expect(above).toMatchObject({ code: 'BACKUP_CORRUPT_FILE', context: { rowGroup: 1, row: 6 } });

    // Two faults in one chunk: the first row at fault is the one named.
    const both = Array.from({ length: 100 }, (_, i) => entry(i));
    both[20] = { ...both[20]!, key: both[19]!.key };
    const bothFile = await shardFile(tmp, 'both.parquet', both);
    const bothErr = await readError(readShardColumns(bothFile, { chunkRows: 40, range: { start: Buffer.alloc(0), end: both[10]!.key } }));
    expect(bothErr).toMatchObject({ code: 'BACKUP_CORRUPT_FILE', context: { rowGroup: 0, row: 10 } });
    expect(bothErr.message).toContain('lies outside');

    const empty = Array.from({ length: 10 }, (_, i) => entry(i));
    empty[0] = { ...empty[0]!, key: Buffer.alloc(0) };
    const emptyFile = await shardFile(tmp, 'empty-key.parquet', empty);
    const emptyErr = await readError(readShardColumns(emptyFile, { range: WHOLE }));
    expect(emptyErr.message).toContain('row group 0, row 0: empty key');

    const zero = Array.from({ length: 10 }, (_, i) => entry(i));
    zero[7] = { ...zero[7]!, etag: 0 };
    const zeroFile = await shardFile(tmp, 'etag-zero.parquet', zero);
    const zeroErr = await readError(readShardColumns(zeroFile, { range: WHOLE }));
    expect(zeroErr).toMatchObject({ code: 'BACKUP_CORRUPT_FILE', context: { rowGroup: 0, row: 7 } });
    expect(zeroErr.message).toContain('etag 0 (etags are ≥ 1)');
  });

  it('a negative or unsafe 64-bit etag or time is BACKUP_CORRUPT_FILE before its chunk is handed out, with or without range checks', async () => {
    for (const [field, value] of [['etag', -5], ['updatedAtMs', 2 ** 60], ['expiresAtMs', 2 ** 55]] as const) {
      const entries = Array.from({ length: 10 }, (_, i) => entry(i));
      entries[4] = { ...entries[4]!, [field]: value };
      const file = await shardFile(tmp, `bad-${field}.parquet`, entries);
      for (const range of [WHOLE, undefined]) {
        let handedOut = 0;
        const err = await readError(readShardColumns(file, { range }), (chunk) => (handedOut += chunk.to - chunk.from));
        expect(err).toMatchObject({ code: 'BACKUP_CORRUPT_FILE', context: { rowGroup: 0, row: 4 } });
        expect(err.message).toContain('not a time or etag');
        expect(handedOut).toBe(0);
      }
    }
  });
});
