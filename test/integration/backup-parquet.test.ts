import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_ROW_GROUP_ROWS, PLAIN_SHARD_COLUMNS, newBackupId, openBackupTarget, parquetShardStream, readShardFile, type BackupTarget, type ShardStreamStats } from '../../backup/index.js';
import { RangeDigest, type StoredEntry } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

function entry(i: number, valueBytes = 20): StoredEntry {
  const key = Buffer.alloc(8);
  key.writeUInt32BE(Math.floor(i / 2 ** 32), 0);
  key.writeUInt32BE(i % 2 ** 32, 4);
  return { key, value: Buffer.alloc(valueBytes, i % 251), etag: i * 3 + 1, updatedAtMs: 1_700_000_000_000 + i, expiresAtMs: i % 4 === 0 ? 1_900_000_000_000 + i : 0 };
}

async function* batches(count: number, batchRows = 1000, valueBytes = 20): AsyncGenerator<StoredEntry[]> {
  for (let from = 0; from < count; from += batchRows) {
    yield Array.from({ length: Math.min(batchRows, count - from) }, (_, j) => entry(from + j, valueBytes));
  }
}

describe('Parquet shard files: one file, many row groups, read back by DuckDB and by readShardFile', () => {
  let tmp: TempDir;
  let target: BackupTarget;
  let db: DuckDBInstance;
  let conn: DuckDBConnection;
  const backupId = newBackupId();

  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-parquet-');
    target = openBackupTarget(`file://${tmp.path}`);
    db = await DuckDBInstance.create(':memory:');
    conn = await db.connect();
  });

  afterAll(async () => {
    conn?.closeSync();
    await tmp?.remove();
  });

  const rows = async (sql: string) => (await conn.runAndReadAll(sql)).getRowsJson();

  async function write(name: string, source: AsyncIterable<StoredEntry[]>, rowGroupRows?: number): Promise<ShardStreamStats & { bytes: number }> {
    const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
    const { bytes } = await target.writeFile(backupId, name, parquetShardStream(source, { backupId, shard: 0, rangeStart: Buffer.alloc(0), rangeEnd: Buffer.alloc(0) }, stats, { rowGroupRows }));
    return { ...stats, bytes };
  }

  it('caps row groups at 65,536 rows in a single file and round-trips every field', async () => {
    const count = MAX_ROW_GROUP_ROWS + 4_464;
    const stats = await write('shard-00000.parquet', batches(count, 777));
    expect(stats.rows).toBe(count);
    const path = target.localPath(backupId, 'shard-00000.parquet')!;
    expect(await rows(`select row_group_id, row_group_num_rows from parquet_metadata('${path}') group by all order by 1`)).toEqual([
      ['0', String(MAX_ROW_GROUP_ROWS)],
      ['1', '4464'],
    ]);
    expect(await rows(`select count(*), sum(etag), count(expires_at_ms) from read_parquet('${path}')`)).toEqual([[String(count), String((3 * count * (count - 1)) / 2 + count), String(count / 4)]]);

    const expected = new RangeDigest();
    for await (const batch of batches(count)) for (const e of batch) expected.add(e.key, e.value, e.expiresAtMs, e.etag);
    expect(stats.digest.toHex()).toBe(expected.toHex());

    const readBack = new RangeDigest();
    let i = 0;
    for await (const entries of readShardFile(target, backupId, 'shard-00000.parquet')) {
      for (const e of entries) {
        if (i === 12_345) expect(e).toEqual(entry(12_345));
        readBack.add(e.key, e.value, e.expiresAtMs, e.etag);
        i++;
      }
    }
    expect(i).toBe(count);
    expect(readBack.toHex()).toBe(expected.toHex());
  });

  it('writes key, value and etag without a dictionary and the two timestamps with one (DuckDB reads the column chunks); both forms read back the same', async () => {
    const count = 20_000;
    await write('shard-encodings.parquet', batches(count));
    const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
    await target.writeFile(backupId, 'shard-dictionaries.parquet', parquetShardStream(batches(count), { backupId, shard: 0, rangeStart: Buffer.alloc(0), rangeEnd: Buffer.alloc(0) }, stats, { dictionaryEverywhere: true }));
    const dictionaryColumns = async (name: string) =>
      (await rows(`select path_in_schema from parquet_metadata('${target.localPath(backupId, name)!}') where dictionary_page_offset is not null group by all order by 1`)).map((r) => r[0]);
    expect(PLAIN_SHARD_COLUMNS).toEqual(['key', 'value', 'etag']);
    expect(await dictionaryColumns('shard-encodings.parquet')).toEqual(['expires_at_ms', 'updated_at_ms']);
    expect(await dictionaryColumns('shard-dictionaries.parquet')).toEqual(['etag', 'expires_at_ms', 'key', 'updated_at_ms', 'value']);
    const digestOf = async (name: string): Promise<string> => {
      const d = new RangeDigest();
      for await (const entries of readShardFile(target, backupId, name)) for (const e of entries) d.add(e.key, e.value, e.expiresAtMs, e.etag);
      return d.toHex();
    };
    expect(await digestOf('shard-encodings.parquet')).toBe(stats.digest.toHex());
    expect(await digestOf('shard-dictionaries.parquet')).toBe(stats.digest.toHex());
  });

  it('writes an empty shard as a valid file with the schema and no rows', async () => {
    const stats = await write('shard-00001.parquet', batches(0));
    expect(stats.rows).toBe(0);
    const path = target.localPath(backupId, 'shard-00001.parquet')!;
    expect(await rows(`select count(*) from read_parquet('${path}')`)).toEqual([['0']]);
    expect((await rows(`select name from parquet_schema('${path}') where name <> 'arrow_schema' order by name`)).flat()).toEqual(['etag', 'expires_at_ms', 'key', 'updated_at_ms', 'value']);
    const got: StoredEntry[] = [];
    for await (const entries of readShardFile(target, backupId, 'shard-00001.parquet')) got.push(...entries);
    expect(got).toEqual([]);
  });

  it('large values: batches are cut by bytes, the file still reads back whole', async () => {
    const stats = await write('shard-00002.parquet', batches(150, 50, 1 << 20), 100);
    expect(stats.rows).toBe(150);
    const path = target.localPath(backupId, 'shard-00002.parquet')!;
    expect(await rows(`select count(*), sum(octet_length(value)) from read_parquet('${path}')`)).toEqual([['150', String(150 * (1 << 20))]]);
  });

  it('a source that fails leaves no file behind', async () => {
    async function* broken(): AsyncGenerator<StoredEntry[]> {
      yield* batches(70_000, 1000);
      throw new Error('scan broke');
    }
    await expect(write('shard-00003.parquet', broken())).rejects.toThrow('scan broke');
    expect(await target.stat(backupId, 'shard-00003.parquet')).toBeUndefined();
  });
});
