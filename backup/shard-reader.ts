import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Data, RecordBatch, Vector } from 'apache-arrow';
import { IngestError, readRecordBatches, scanDrop } from '../ingest/index.js';
import type { StoredEntry } from '../store/index.js';
import { describeCause } from '../common/index.js';
import { BackupError } from './backup-errors.js';
import type { BackupTarget } from './backup-target.js';

/** Options of `readShardFile`. */
export interface ReadShardFileOptions {
  /**
   * Where a remote target's file is downloaded before it is decoded (Parquet needs random access);
   * removed afterwards. Default: the OS temp folder.
   */
  tempDir?: string;
  signal?: AbortSignal;
}

/** The columns a shard file must have (FORMAT.md). */
const COLUMNS = ['key', 'value', 'etag', 'updated_at_ms', 'expires_at_ms'] as const;

/**
 * Reads a shard file of a backup as batches of entries in file order (one batch per row group),
 * decoded by ingest's Parquet reader (parquet-wasm on a decoder thread: a damaged file cannot take
 * the process down). A local target's file is read in place; a remote one is first streamed into
 * a temporary file. Keys and values are views into the decoded batch. `expiresAtMs` is 0 for null.
 *
 * Throws BackupError BACKUP_CORRUPT_FILE (the file cannot be decoded or lacks the format's columns),
 * BACKUP_NOT_FOUND, and the target's errors.
 */
export async function* readShardFile(target: BackupTarget, backupId: string, name: string, options: ReadShardFileOptions = {}): AsyncGenerator<StoredEntry[]> {
  const { signal } = options;
  const context = { target: target.url, backupId, file: name };
  let path = target.localPath(backupId, name);
  let tempFolder: string | undefined;
  try {
    if (path === undefined) {
      const source = await target.openRead(backupId, name, { signal });
      tempFolder = await mkdtemp(join(options.tempDir ?? tmpdir(), 'shardpipe-shard-'));
      path = join(tempFolder, name);
      await pipeline(source, createWriteStream(path), { signal });
    } else if ((await target.stat(backupId, name, { signal })) === undefined) {
      throw new BackupError('BACKUP_NOT_FOUND', `${target.url}/${backupId}/${name} does not exist`, { context });
    }
    try {
      const scan = await scanDrop(path, { requireSuccess: false, signal });
      const file = scan.files[0];
      if (file === undefined || file.format !== 'parquet') throw new BackupError('BACKUP_CORRUPT_FILE', `${target.url}/${backupId}/${name} is not a Parquet file`, { context });
      for await (const { batch } of readRecordBatches(file, { signal })) yield entriesOf(batch, `${target.url}/${backupId}/${name}`, context);
    } catch (err) {
      if (err instanceof IngestError && err.code !== 'INGEST_SOURCE_NOT_FOUND') {
        throw new BackupError('BACKUP_CORRUPT_FILE', `${target.url}/${backupId}/${name} cannot be read: ${err.message}`, { cause: err, context });
      }
      throw err;
    }
  } finally {
    if (tempFolder !== undefined) await rm(tempFolder, { recursive: true, force: true });
  }
}

function entriesOf(batch: RecordBatch, where: string, context: { target: string; backupId: string; file: string }): StoredEntry[] {
  const columns = COLUMNS.map((name) => {
    const child = batch.getChild(name);
    if (child === null) throw new BackupError('BACKUP_CORRUPT_FILE', `${where} has no column "${name}" (a shard file has ${COLUMNS.join(', ')})`, { context });
    return child;
  });
  const [keys, values, etags, updated, expires] = columns as [Vector, Vector, Vector, Vector, Vector];
  const n = batch.numRows;
  const out: StoredEntry[] = new Array(n);
  try {
    const keyData = single(keys);
    const valueData = single(values);
    for (let i = 0; i < n; i++) {
      const expiresAt = expires.get(i) as bigint | null;
      out[i] = {
        key: binaryAt(keyData, i),
        value: binaryAt(valueData, i),
        etag: Number(etags.get(i) as bigint),
        updatedAtMs: Number(updated.get(i) as bigint),
        expiresAtMs: expiresAt === null ? 0 : Number(expiresAt),
      };
    }
  } catch (err) {
    if (err instanceof BackupError) throw err;
    throw new BackupError('BACKUP_CORRUPT_FILE', `${where} has columns of the wrong types: ${describeCause(err)}`, { cause: err, context });
  }
  return out;
}

function single(vector: Vector): Data {
  if (vector.data.length !== 1) throw new TypeError(`expected one chunk per column in a record batch, got ${vector.data.length}`);
  const data = vector.data[0]!;
  if (data.valueOffsets === undefined || !(data.values instanceof Uint8Array)) throw new TypeError(`column type ${String(vector.type)} is not binary`);
  return data;
}

function binaryAt(data: Data, i: number): Buffer {
  const offsets = data.valueOffsets as ArrayLike<number | bigint>;
  const start = Number(offsets[data.offset + i]!);
  const end = Number(offsets[data.offset + i + 1]!);
  const values = data.values as Uint8Array;
  return Buffer.from(values.buffer, values.byteOffset + start, end - start);
}
