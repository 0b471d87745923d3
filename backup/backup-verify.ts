import { RangeDigest } from '../store/index.js';
import { describeCause } from '../common/index.js';
import { readManifest, type ManifestShard } from './backup-manifest.js';
import type { BackupTarget } from './backup-target.js';
import { ShardContentHash } from './shard-content-hash.js';
import { shardRecordBatch } from './shard-format.js';
import { readShardFile } from './shard-reader.js';

/** One thing wrong with one shard file. */
export interface VerifyProblem {
  shard: number;
  file: string;
  problem: string;
}

/** What `verifyBackup` found. */
export interface VerifyReport {
  backupId: string;
  target: string;
  ok: boolean;
  shards: number;
  shardsOk: number;
  rowsChecked: number;
  bytesChecked: number;
  /** Every bad shard file, by shard index. Empty when `ok`. */
  problems: VerifyProblem[];
  durationMs: number;
}

/** Options of `verifyBackup`. */
export interface VerifyBackupOptions {
  /** Download folder for a remote target's files (one at a time). Default: the OS temp folder. */
  tempDir?: string;
  /** Called after each shard. */
  onShard?: (shard: ManifestShard, problems: readonly VerifyProblem[]) => void;
  signal?: AbortSignal;
}

/**
 * Re-reads every shard file of a complete backup and checks it against the manifest: the file
 * exists with the manifest's byte size, decodes, holds exactly the manifest's row count of keys
 * sorted ascending inside the shard's range, and its checksum (RangeDigest with etags) and, in
 * format 2, its content hash (ShardContentHash) match.
 * Every bad file is named; the report is `ok` only when none is. Reads one file at a time.
 *
 * Throws (instead of reporting) only when the manifest itself cannot be read: BackupError
 * BACKUP_NOT_FOUND, BACKUP_INCOMPLETE, BACKUP_MANIFEST_INVALID, BACKUP_UNSUPPORTED_VERSION, or
 * the target's errors.
 */
export async function verifyBackup(target: BackupTarget, backupId: string, options: VerifyBackupOptions = {}): Promise<VerifyReport> {
  const started = performance.now();
  const { signal } = options;
  const manifest = await readManifest(target, backupId, { signal });
  const problems: VerifyProblem[] = [];
  let rowsChecked = 0;
  let bytesChecked = 0;
  let shardsOk = 0;
  for (const shard of manifest.shards) {
    signal?.throwIfAborted();
    const found: VerifyProblem[] = [];
    const problem = (text: string): void => void found.push({ shard: shard.index, file: shard.file, problem: text });
    const info = await target.stat(backupId, shard.file, { signal });
    if (info === undefined) {
      problem('the file is missing');
    } else {
      bytesChecked += info.bytes;
      if (info.bytes !== shard.bytes) problem(`the file has ${info.bytes} bytes, the manifest says ${shard.bytes}`);
      const start = Buffer.from(shard.start, 'hex');
      const end = Buffer.from(shard.end, 'hex');
      const digest = new RangeDigest();
      const hash = shard.contentHash === undefined ? undefined : new ShardContentHash();
      let previous: Buffer | undefined;
      let misplaced = 0;
      try {
        for await (const entries of readShardFile(target, backupId, shard.file, { tempDir: options.tempDir, signal })) {
          hash?.addRecordBatch(shardRecordBatch(entries));
          for (const e of entries) {
            if ((previous !== undefined && Buffer.compare(previous, e.key) >= 0) || Buffer.compare(e.key, start) < 0 || (end.length > 0 && Buffer.compare(e.key, end) >= 0)) misplaced++;
            previous = e.key;
            digest.add(e.key, e.value, e.expiresAtMs, e.etag);
          }
        }
        rowsChecked += digest.count;
        if (misplaced > 0) problem(`${misplaced} row(s) out of key order or outside the shard's range`);
        if (digest.count !== shard.rows) problem(`the file has ${digest.count} rows, the manifest says ${shard.rows}`);
        else if (digest.toHex() !== shard.checksum) problem(`the checksum is ${digest.toHex()}, the manifest says ${shard.checksum}`);
        else if (hash !== undefined && hash.toHex() !== shard.contentHash) problem(`the content hash is ${hash.toHex()}, the manifest says ${shard.contentHash}`);
      } catch (err) {
        if (signal?.aborted) throw err;
        problem(`the file cannot be read: ${describeCause(err)}`);
      }
    }
    if (found.length === 0) shardsOk++;
    problems.push(...found);
    options.onShard?.(shard, found);
  }
  return {
    backupId,
    target: target.url,
    ok: problems.length === 0,
    shards: manifest.shards.length,
    shardsOk,
    rowsChecked,
    bytesChecked,
    problems,
    durationMs: Math.round(performance.now() - started),
  };
}
