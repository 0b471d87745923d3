import { z } from 'zod';
import { BackupError } from './backup-errors.js';
import { BACKUP_ID_PATTERN } from './backup-id.js';
import { MANIFEST_FILE, shardFileName } from './backup-layout.js';
import type { BackupTarget, TargetCallOptions } from './backup-target.js';

/** The manifest format this build writes (FORMAT.md): 2 adds each shard's `contentHash`. */
export const MANIFEST_FORMAT_VERSION = 2;

/** The manifest formats this build reads: 1 (no content hash; restore checks each row's digest) and 2. */
export const READABLE_MANIFEST_VERSIONS: readonly number[] = [1, 2];

const hexKey = z.string().regex(/^(?:[0-9a-f]{2})*$/, 'keys are lowercase hex bytes ("" = start or end of the keyspace)');
const count = z.number().int().min(0);
const isoTime = z.iso.datetime({ offset: false });

const manifestSchema = z
  .object({
    formatVersion: z.union([z.literal(1), z.literal(2)]),
    backupId: z.string().regex(BACKUP_ID_PATTERN, 'backupId must look like YYYYMMDDTHHMMSSZ-xxxxxx'),
    startedAt: isoTime,
    finishedAt: isoTime,
    mapVersion: z.number().int().min(1),
    snapshotAt: isoTime,
    partitions: z.array(z.object({ id: count, start: hexKey, end: hexKey, node: z.string().min(1), rows: count })).min(1),
    shards: z
      .array(
        z.object({
          index: count,
          start: hexKey,
          end: hexKey,
          file: z.string().regex(/^shard-\d{5,}\.parquet$/),
          rows: count,
          bytes: count,
          checksum: z.string().regex(/^[0-9a-f]{64}$/, 'checksum must be 64 lowercase hex characters'),
          /** Format 2: the ordered content hash of the file's rows (ShardContentHash, FORMAT.md). */
          contentHash: z.string().regex(/^[0-9a-f]{64}$/, 'contentHash must be 64 lowercase hex characters').optional(),
        }),
      )
      .min(1),
    totals: z.object({ rows: count, bytes: count }),
  })
  .superRefine((m, ctx) => {
    const problem = (message: string): void => ctx.addIssue({ code: 'custom', message });
    m.shards.forEach((s, i) => {
      if (m.formatVersion >= 2 && s.contentHash === undefined) problem(`shards[${i}] has no contentHash (format ${m.formatVersion} gives every shard one)`);
      if (m.formatVersion === 1 && s.contentHash !== undefined) problem(`shards[${i}] has a contentHash, which format 1 does not have (format 2 does)`);
      if (s.index !== i) problem(`shards[${i}] has index ${s.index}; shards are listed by index from 0`);
      if (s.file !== shardFileName(s.index)) problem(`shards[${i}].file is ${s.file}, expected ${shardFileName(s.index)}`);
      const expectedStart = i === 0 ? '' : m.shards[i - 1]!.end;
      if (s.start !== expectedStart) problem(`shards[${i}] starts at "${s.start}" but the previous shard ends at "${expectedStart}" (shards must be contiguous from the start of the keyspace)`);
      if (s.end !== '' && s.start !== '' && Buffer.compare(Buffer.from(s.start, 'hex'), Buffer.from(s.end, 'hex')) >= 0) problem(`shards[${i}] has an empty range`);
    });
    if (m.shards.length > 0 && m.shards.at(-1)!.end !== '') problem('the last shard must end at the end of the keyspace ("")');
    const rows = m.shards.reduce((n, s) => n + s.rows, 0);
    const bytes = m.shards.reduce((n, s) => n + s.bytes, 0);
    if (m.totals.rows !== rows) problem(`totals.rows is ${m.totals.rows} but the shards hold ${rows}`);
    if (m.totals.bytes !== bytes) problem(`totals.bytes is ${m.totals.bytes} but the shard files have ${bytes}`);
  });

/** A backup's manifest (FORMAT.md), as read and written. */
export type BackupManifest = z.infer<typeof manifestSchema>;
export type ManifestShard = BackupManifest['shards'][number];
export type ManifestPartition = BackupManifest['partitions'][number];

/**
 * Parses manifest text. Throws BackupError BACKUP_UNSUPPORTED_VERSION for a `formatVersion` other
 * than 1 or 2 (checked before anything else, so a newer format is refused as such, not as invalid) and
 * BACKUP_MANIFEST_INVALID for anything else wrong, naming the first problems. With `backupId`, the
 * manifest must be that backup's.
 */
export function parseManifest(text: string, expect: { backupId?: string; target?: string } = {}): BackupManifest {
  const context = { backupId: expect.backupId, target: expect.target, file: MANIFEST_FILE };
  const where = expect.backupId ? `the manifest of backup ${expect.backupId}` : 'the manifest';
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new BackupError('BACKUP_MANIFEST_INVALID', `${where} is not JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err, context });
  }
  const version = typeof json === 'object' && json !== null ? (json as { formatVersion?: unknown }).formatVersion : undefined;
  if (typeof version !== 'number' || !READABLE_MANIFEST_VERSIONS.includes(version)) {
    throw new BackupError(
      'BACKUP_UNSUPPORTED_VERSION',
      `${where} has formatVersion ${JSON.stringify(version)}; this shardpipe reads only versions ${READABLE_MANIFEST_VERSIONS.join(' and ')}. Use a shardpipe that knows that version.`,
      { context },
    );
  }
  const result = manifestSchema.safeParse(json);
  if (!result.success) {
    const issues = result.error.issues.slice(0, 3).map((i) => `${i.path.length ? i.path.join('.') + ': ' : ''}${i.message}`);
    throw new BackupError('BACKUP_MANIFEST_INVALID', `${where} does not match format ${String(version)}: ${issues.join('; ')}`, { cause: result.error, context });
  }
  if (expect.backupId !== undefined && result.data.backupId !== expect.backupId) {
    throw new BackupError('BACKUP_MANIFEST_INVALID', `${where} names backup ${result.data.backupId}; it was copied from another backup`, { context });
  }
  return result.data;
}

/** The manifest as JSON text (validated first: a manifest that could not be read back is never written). */
export function serializeManifest(manifest: BackupManifest): string {
  return JSON.stringify(parseManifest(JSON.stringify(manifest)), null, 2) + '\n';
}

/**
 * Reads and validates a backup's manifest. Throws BackupError BACKUP_NOT_FOUND when the backup folder
 * does not exist, BACKUP_INCOMPLETE when it exists without a manifest, and as `parseManifest`.
 */
export async function readManifest(target: BackupTarget, backupId: string, options: TargetCallOptions = {}): Promise<BackupManifest> {
  const text = await target.readText(backupId, MANIFEST_FILE, options);
  if (text === undefined) {
    const files = await target.listFiles(backupId, options);
    const context = { target: target.url, backupId };
    if (files.length === 0) throw new BackupError('BACKUP_NOT_FOUND', `backup ${backupId} is not in ${target.url} (\`backup list\` shows the ones that are)`, { context });
    throw new BackupError('BACKUP_INCOMPLETE', `backup ${backupId} in ${target.url} has no manifest: it did not finish (or is still running), so it cannot be restored`, { context });
  }
  return parseManifest(text, { backupId, target: target.url });
}

/** Writes the manifest atomically: from that moment the backup is complete. Written last. */
export async function writeManifest(target: BackupTarget, manifest: BackupManifest, options: TargetCallOptions = {}): Promise<void> {
  await target.writeText(manifest.backupId, MANIFEST_FILE, serializeManifest(manifest), options);
}
