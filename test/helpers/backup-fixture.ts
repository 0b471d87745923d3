import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Table, tableToIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { ShardContentHash, serializeManifest, shardFileName, shardKeyValueMetadata, shardRecordBatch, type BackupManifest } from '../../backup/index.js';
import { RangeDigest } from '../../store/index.js';

/** One entry as a backup holds it. Times in Unix ms; expiresAtMs 0 = none. */
export interface FixtureEntry {
  key: Buffer;
  value: Buffer;
  etag: number;
  updatedAtMs: number;
  expiresAtMs: number;
}

export interface BackupFixtureOptions {
  backupId: string;
  /** Shard boundaries (hex, sorted); n splits make n + 1 shards. */
  splits: string[];
  /** Rows per row group. Default 1000. */
  rowGroupRows?: number;
  /** The backed-up cluster's partitions, for the manifest. Default one partition. */
  partitions?: BackupManifest['partitions'];
  mapVersion?: number;
  /** Manifest format: 2 (default) gives every shard its content hash, 1 is the older format without. */
  formatVersion?: 1 | 2;
}

/**
 * Writes a complete backup of `entries` (sorted, distinct keys) into `<targetDir>/<backupId>/` the
 * way backup/FORMAT.md describes it — zstd shard files by parquet-wasm's whole-table writer with the
 * format's schema and key-value metadata (backup/shard-format.ts), checksums by RangeDigest, content
 * hashes by ShardContentHash (format 2), the manifest last — so restore can be tested without backup's streaming writer or a cluster.
 */
export async function writeBackupFixture(targetDir: string, entries: readonly FixtureEntry[], options: BackupFixtureOptions): Promise<BackupManifest> {
  const folder = join(targetDir, options.backupId);
  const formatVersion = options.formatVersion ?? 2;
  await mkdir(folder, { recursive: true });
  const bounds = ['', ...options.splits, ''];
  const shards: BackupManifest['shards'] = [];
  let next = 0;
  for (let i = 0; i + 1 < bounds.length; i++) {
    const end = bounds[i + 1]!;
    const rows: FixtureEntry[] = [];
    while (next < entries.length && (end === '' || Buffer.compare(entries[next]!.key, Buffer.from(end, 'hex')) < 0)) rows.push(entries[next++]!);
    const digest = new RangeDigest();
    for (const r of rows) digest.add(r.key, r.value, r.expiresAtMs, r.etag);
    const bytes = shardParquet(rows, { backupId: options.backupId, shard: i, start: bounds[i]!, end }, options.rowGroupRows ?? 1000);
    const file = shardFileName(i);
    await writeFile(join(folder, file), bytes);
    const hashed = formatVersion === 2 ? { contentHash: shardContentHash(rows) } : {};
    shards.push({ index: i, start: bounds[i]!, end, file, rows: rows.length, bytes: bytes.byteLength, checksum: digest.toHex(), ...hashed });
  }
  const now = new Date().toISOString();
  const manifest: BackupManifest = {
    formatVersion,
    backupId: options.backupId,
    startedAt: now,
    finishedAt: now,
    mapVersion: options.mapVersion ?? 1,
    snapshotAt: now,
    partitions: options.partitions ?? [{ id: 0, start: '', end: '', node: '127.0.0.1:1', rows: entries.length }],
    shards,
    totals: { rows: shards.reduce((n, s) => n + s.rows, 0), bytes: shards.reduce((n, s) => n + s.bytes, 0) },
  };
  await writeFile(join(folder, 'manifest.json'), serializeManifest(manifest));
  return manifest;
}

/** The content hash (FORMAT.md) of rows as one shard holds them. */
export function shardContentHash(rows: readonly FixtureEntry[]): string {
  const hash = new ShardContentHash();
  hash.addRecordBatch(shardRecordBatch(rows));
  return hash.toHex();
}

/** Parquet bytes of one shard file in the FORMAT.md layout. */
export function shardParquet(rows: readonly FixtureEntry[], meta: { backupId: string; shard: number; start: string; end: string }, rowGroupRows: number): Uint8Array {
  const wasmTable = parquet.Table.fromIPCStream(tableToIPC(new Table([shardRecordBatch(rows)]), 'stream'));
  const metadata = shardKeyValueMetadata({ backupId: meta.backupId, shard: meta.shard, rangeStart: Buffer.from(meta.start, 'hex'), rangeEnd: Buffer.from(meta.end, 'hex') });
  const props = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.ZSTD).setMaxRowGroupSize(rowGroupRows).setKeyValueMetadata(metadata).build();
  return parquet.writeParquet(wasmTable, props);
}

/**
 * A manifest of one shard covering the whole keyspace (file `shard-00000.parquet`), started at
 * `startedAt` and finished a minute later: for tests of targets and retention, not of shard contents.
 */
export function oneShardManifest(backupId: string, options: { startedAt: string; rows: number; bytes: number }): BackupManifest {
  const { startedAt, rows, bytes } = options;
  return {
    formatVersion: 1,
    backupId,
    startedAt,
    finishedAt: new Date(Date.parse(startedAt) + 60_000).toISOString(),
    mapVersion: 1,
    snapshotAt: startedAt,
    partitions: [{ id: 0, start: '', end: '', node: '127.0.0.1:7001', rows }],
    shards: [{ index: 0, start: '', end: '', file: 'shard-00000.parquet', rows, bytes, checksum: '0'.repeat(64) }],
    totals: { rows, bytes },
  };
}
