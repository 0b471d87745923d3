import { once } from 'node:events';
import { cp, open, readdir, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import { openBackupTarget, readManifest, readShardFile, type BackupManifest } from '../../backup/index.js';
import { BackupWorkers, connectionFromUrl, submitBackup, watchBackup } from '../../jobs/index.js';
import { createLogger } from '../../common/index.js';
import { Key, type BulkRowInput } from '../../store/index.js';
import { runCli, sortedRows } from '../helpers/store-cluster.js';
import { useStack } from '../helpers/stack.js';

const ROWS = 60_000;
/** sortedRows chunks hold 5000 rows; every third of a chunk expires. */
const EXPIRING = (ROWS / 5000) * Math.ceil(5000 / 3);
const logger = createLogger({ level: 'warn', pretty: false });

describe('shardpipe backup: a real 3-node cluster to a folder', () => {
  let targetUrl: string;
  let backupId: string;
  let manifest: BackupManifest;
  const stack = useStack({
    prefix: 'shardpipe-backup-',
    nodes: 3,
    partitions: 6,
    seed: async ({ dir, client }) => {
      targetUrl = pathToFileURL(join(dir, 'backups')).href;
      // Rows with etags, update times and (every third) an expiry far ahead, as a restore must keep them.
      for (const chunk of sortedRows(ROWS, 7)) {
        const rows: BulkRowInput[] = chunk.map((r, i) => ({ ...r, etag: 1000 + i, updatedAtMs: 1_700_000_000_000 + i, expiresAtMs: i % 3 === 0 ? Date.now() + 86_400_000 * 30 : 0 }));
        await client.bulkPutAll([rows]);
      }
    },
  });

  const cli = (...args: string[]) => runCli([...args, '--log-level', 'warn']);

  it('backs up every row into shard files and a manifest whose checksums the store reproduces', async () => {
    const r = await cli('backup', 'run', '--target', targetUrl, '--shard-rows', '4000', ...stack.cliArgs, '--json', '--row-group-rows', '1000');
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ rows: ROWS, target: targetUrl });
    backupId = report.backupId;
    manifest = await readManifest(openBackupTarget(targetUrl), backupId);
    expect(manifest.totals.rows).toBe(ROWS);
    // 6 partitions of ~10,000 rows: each is cut at split keys the node computes.
    expect(manifest.shards.length).toBeGreaterThan(6);
    expect(manifest.partitions.map((p) => p.rows).reduce((a, b) => a + b)).toBe(ROWS);
    const files = await readdir(join(stack.dir, 'backups', backupId));
    expect(files.sort()).toEqual(['manifest.json', ...manifest.shards.map((s) => s.file)].sort());
    for (const s of manifest.shards) {
      const digest = await stack.client.checksum(Buffer.from(s.start, 'hex'), Buffer.from(s.end, 'hex'), { includeEtag: true });
      expect({ shard: s.index, rows: digest.count, checksum: digest.toHex() }).toEqual({ shard: s.index, rows: s.rows, checksum: s.checksum });
      expect((await stat(join(stack.dir, 'backups', backupId, s.file))).size).toBe(s.bytes);
    }
  });

  it('writes files DuckDB reads: FORMAT.md columns, zstd, row groups, key-value metadata, the exact rows', async () => {
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    const glob = join(stack.dir, 'backups', backupId, 'shard-*.parquet');
    const rows = async (sql: string) => (await conn.runAndReadAll(sql)).getRowsJson();
    expect(await rows(`select count(*), count(distinct key), count(expires_at_ms) from read_parquet('${glob}')`)).toEqual([[String(ROWS), String(ROWS), String(EXPIRING)]]);
    expect(await rows(`select name, type from parquet_schema('${join(stack.dir, 'backups', backupId, manifest.shards[0]!.file)}') where name <> 'arrow_schema' order by name`)).toEqual([
      ['etag', 'INT64'],
      ['expires_at_ms', 'INT64'],
      ['key', 'BYTE_ARRAY'],
      ['updated_at_ms', 'INT64'],
      ['value', 'BYTE_ARRAY'],
    ]);
    const groups = await rows(`select distinct compression, max(row_group_num_rows) over () from parquet_metadata('${glob}')`);
    expect(groups).toEqual([['ZSTD', '1000']]);
    const shard = manifest.shards[1]!;
    const meta = Object.fromEntries(
      (await rows(`select decode(key), decode(value) from parquet_kv_metadata('${join(stack.dir, 'backups', backupId, shard.file)}') where decode(key) like 'shardpipe.%'`)) as Array<[string, string]>,
    );
    expect(meta).toEqual({
      'shardpipe.format': '1',
      'shardpipe.backup_id': backupId,
      'shardpipe.shard': String(shard.index),
      'shardpipe.range_start': shard.start,
      'shardpipe.range_end': shard.end,
    });
    // One row compared field by field with the store.
    const [row] = (await rows(`select hex(key), hex(value), etag, updated_at_ms, expires_at_ms from read_parquet('${glob}') order by key limit 1 offset 12345`)) as Array<[string, string, string, string, string | null]>;
    const stored = await stack.client.get(Key.fromBytes(Buffer.from(row![0], 'hex')));
    expect(stored).toBeDefined();
    expect([row![1].toLowerCase(), Number(row![2]), Number(row![3]), row![4] === null ? 0 : Number(row![4])]).toEqual([
      stored!.value.toString('hex'),
      stored!.etag,
      stored!.updatedAtMs,
      stored!.expiresAtMs,
    ]);
    conn.closeSync();
  });

  it('lists, shows and verifies the backup', async () => {
    const list = await cli('backup', 'list', '--target', targetUrl, '--json');
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).backups).toEqual([expect.objectContaining({ id: backupId, state: 'complete', rows: ROWS })]);
    const show = await cli('backup', 'show', backupId, '--target', targetUrl, '--json');
    expect(JSON.parse(show.stdout)).toEqual(manifest);
    const verify = await cli('backup', 'verify', backupId, '--target', targetUrl, '--json');
    expect(verify.code, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, rowsChecked: ROWS, shards: manifest.shards.length, problems: [] });
  });

  it('verify names every corrupted, truncated or missing shard file and exits 2', async () => {
    const copy = join(stack.dir, 'copy');
    await cp(join(stack.dir, 'backups', backupId), join(copy, backupId), { recursive: true });
    const copyUrl = pathToFileURL(copy).href;
    const [a, b, c] = manifest.shards;
    // Bytes flipped inside a data page (same size), a file cut short, a file removed.
    const flip = await open(join(copy, backupId, a!.file), 'r+');
    const middle = Math.floor(a!.bytes / 2);
    const buf = Buffer.alloc(64);
    await flip.read(buf, 0, 64, middle);
    for (let i = 0; i < 64; i++) buf[i] = buf[i]! ^ 0xff;
    await flip.write(buf, 0, 64, middle);
    await flip.close();
    const cut = await open(join(copy, backupId, b!.file), 'r+');
    await cut.truncate(b!.bytes - 100);
    await cut.close();
    await rm(join(copy, backupId, c!.file));

    const verify = await cli('backup', 'verify', backupId, '--target', copyUrl, '--json');
    expect(verify.code, verify.stderr).toBe(2);
    expect(verify.stderr).toContain('BACKUP_VERIFY_FAILED');
    const report = JSON.parse(verify.stdout);
    expect(report.ok).toBe(false);
    expect([...new Set(report.problems.map((p: { file: string }) => p.file))].sort()).toEqual([a!.file, b!.file, c!.file].sort());
    expect(report.shardsOk).toBe(manifest.shards.length - 3);
    const text = await cli('backup', 'verify', backupId, '--target', copyUrl);
    expect(text.stdout).toContain(`BAD shard ${c!.index} (${c!.file}): the file is missing`);
  });

  it("plans with a metrics server's /api/shards when --metrics-url is given (a stand-in HTTP server answering with the store's plan)", async () => {
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(req.url ?? '');
      const targetRows = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('targetRows'));
      stack.client.planShards({ targetRows }).then(
        (shards) => {
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ target: { targetRows }, mapVersion: 1, shards: shards.map((s) => ({ ...s, start: s.start.toString('hex'), end: s.end.toString('hex') })) }));
        },
        (err: unknown) => {
          res.statusCode = 500;
          res.end(String(err));
        },
      );
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const metricsUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const r = await cli('backup', 'run', '--target', targetUrl, '--shard-rows', '30000', '--metrics-url', metricsUrl, ...stack.cliArgs, '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(requests).toEqual(['/api/shards?targetRows=30000']);
      const report = JSON.parse(r.stdout);
      expect(report.rows).toBe(ROWS);
      const planned = await stack.client.planShards({ targetRows: 30_000 });
      const m = await readManifest(openBackupTarget(targetUrl), report.backupId);
      expect(m.shards.map((s) => [s.start, s.end])).toEqual(planned.map((s) => [s.start.toString('hex'), s.end.toString('hex')]));
      await openBackupTarget(targetUrl).deleteBackup(report.backupId);
    } finally {
      server.close();
    }
    const down = await cli('backup', 'run', '--target', targetUrl, '--metrics-url', metricsUrl, ...stack.cliArgs);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('BACKUP_PLAN_FAILED');
  });

  it('writes during a backup are either wholly in a partition snapshot or not at all', async () => {
    // Two groups of keys, each inside one partition; every write rewrites a whole group in one
    // BulkInsert (one atomic LevelDB batch) with the generation number as value.
    const groups = [0x1000, 0x9000].map((base) =>
      Array.from({ length: 50 }, (_, i) => {
        const key = Buffer.alloc(8);
        key.writeUInt16BE(base, 0);
        key.writeUInt32BE(i, 4);
        return key;
      }),
    );
    let generation = 0;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        generation++;
        for (const keys of groups) await stack.client.bulkPutAll([keys.map((key) => ({ key, value: Buffer.from(String(generation).padStart(8, '0')) }))]);
      }
    })();
    const connection = connectionFromUrl(stack.redis.url);
    while (generation < 5) await new Promise((r) => setImmediate(r));
    const before = generation;
    const submitted = await submitBackup(connection, stack.client, { target: targetUrl, shardTarget: { targetRows: 20_000 }, leaseMs: 60_000 }, { logger });
    const after = generation;
    const workers = BackupWorkers.start({ connection, client: stack.client, logger });
    try {
      await watchBackup(connection, submitted.backupId);
    } finally {
      writing = false;
      await writer;
      await workers.close();
    }
    const target = openBackupTarget(targetUrl);
    const m = await readManifest(target, submitted.backupId);
    const seen = new Map<string, string>();
    const wanted = new Set(groups.flat().map((k) => k.toString('hex')));
    for (const s of m.shards) {
      for await (const entries of readShardFile(target, submitted.backupId, s.file)) {
        for (const e of entries) if (wanted.has(e.key.toString('hex'))) seen.set(e.key.toString('hex'), e.value.toString());
      }
    }
    expect(seen.size).toBe(100);
    for (const keys of groups) {
      const values = new Set(keys.map((k) => seen.get(k.toString('hex'))));
      // One generation per group: never half of one write and half of another.
      expect(values.size).toBe(1);
      const g = Number([...values][0]);
      // The snapshot was taken while submitBackup ran.
      expect(g).toBeGreaterThanOrEqual(before - 1);
      expect(g).toBeLessThanOrEqual(after);
    }
    // The writes kept going after the snapshot, yet the backup is still internally consistent.
    expect(generation).toBeGreaterThan(after);
    const verify = await cli('backup', 'verify', submitted.backupId, '--target', targetUrl, '--json');
    expect(JSON.parse(verify.stdout).ok).toBe(true);
  });
});
