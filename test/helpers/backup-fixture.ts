import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Binary, Field, Int64, RecordBatch, Schema, Struct, Table, makeData, tableToIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { serializeManifest, shardFileName, type BackupManifest } from '../../backup/index.js';
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
}

const SCHEMA = new Schema([
  new Field('key', new Binary(), false),
  new Field('value', new Binary(), false),
  new Field('etag', new Int64(), false),
  new Field('updated_at_ms', new Int64(), false),
  new Field('expires_at_ms', new Int64(), true),
]);

/**
 * Writes a complete backup of `entries` (sorted, distinct keys) into `<targetDir>/<backupId>/` the
 * way backup/FORMAT.md describes it — zstd shard files by parquet-wasm with the key-value metadata,
 * checksums by RangeDigest, the manifest last — so restore can be tested against the format itself,
 * independently of the backup code that writes it.
 */
export async function writeBackupFixture(targetDir: string, entries: readonly FixtureEntry[], options: BackupFixtureOptions): Promise<BackupManifest> {
  const folder = join(targetDir, options.backupId);
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
    shards.push({ index: i, start: bounds[i]!, end, file, rows: rows.length, bytes: bytes.byteLength, checksum: digest.toHex() });
  }
  const now = new Date().toISOString();
  const manifest: BackupManifest = {
    formatVersion: 1,
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

/** Parquet bytes of one shard file in the FORMAT.md layout. */
export function shardParquet(rows: readonly FixtureEntry[], meta: { backupId: string; shard: number; start: string; end: string }, rowGroupRows: number): Uint8Array {
  const n = rows.length;
  const binary = (pick: (r: FixtureEntry) => Buffer) => {
    const offsets = new Int32Array(n + 1);
    for (let i = 0; i < n; i++) offsets[i + 1] = offsets[i]! + pick(rows[i]!).length;
    const data = new Uint8Array(offsets[n]!);
    for (let i = 0; i < n; i++) data.set(pick(rows[i]!), offsets[i]!);
    return makeData({ type: new Binary(), length: n, nullCount: 0, valueOffsets: offsets, data });
  };
  const int64 = (pick: (r: FixtureEntry) => number, nullWhenZero: boolean) => {
    const data = new BigInt64Array(n);
    const bitmap = new Uint8Array(Math.ceil(n / 8));
    let nulls = 0;
    for (let i = 0; i < n; i++) {
      const v = pick(rows[i]!);
      if (nullWhenZero && v === 0) nulls++;
      else bitmap[i >> 3]! |= 1 << (i & 7);
      data[i] = BigInt(v);
    }
    return makeData({ type: new Int64(), length: n, nullCount: nulls, data, nullBitmap: nulls > 0 ? bitmap : undefined });
  };
  const children = [binary((r) => r.key), binary((r) => r.value), int64((r) => r.etag, false), int64((r) => r.updatedAtMs, false), int64((r) => r.expiresAtMs, true)];
  const batch = new RecordBatch(SCHEMA, makeData({ type: new Struct(SCHEMA.fields), length: n, nullCount: 0, children }));
  const wasmTable = parquet.Table.fromIPCStream(tableToIPC(new Table(SCHEMA, [batch]), 'stream'));
  const metadata = new Map([
    ['shardpipe.format', '1'],
    ['shardpipe.backup_id', meta.backupId],
    ['shardpipe.shard', String(meta.shard)],
    ['shardpipe.range_start', meta.start],
    ['shardpipe.range_end', meta.end],
  ]);
  const props = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.ZSTD).setMaxRowGroupSize(rowGroupRows).setKeyValueMetadata(metadata).build();
  return parquet.writeParquet(wasmTable, props);
}
