import { createHash } from 'node:crypto';
import { open, readdir, realpath, stat } from 'node:fs/promises';
import { basename, extname, join, relative, resolve, sep } from 'node:path';
import { describeCause } from '../common/index.js';
import { assertUnchanged, type DataFile, type DataFileFormat } from '../files/index.js';
import { toIngestError } from './file-reading.js';
import { IngestError } from './ingest-errors.js';

/** The formats ingest reads (files/ reads them). Arrow means Arrow IPC, file ("Feather v2") or stream format. */
export type DropFileFormat = DataFileFormat;

/** One data file of a drop, as found by `scanDrop`: a files/ DataFile with what ingest adds. */
export interface DropFile extends DataFile {
  /** Absolute path. */
  path: string;
  /** Path relative to the drop folder, with `/` separators (the file name for a single-file drop). */
  relativePath: string;
  /** Detected from the file's magic bytes; the extension is only a hint. */
  format: DropFileFormat;
  /** SHA-256 (hex) of absolute path, size and mtime (and `origin` when set): changes whenever the file is replaced or rewritten. */
  fingerprint: string;
  /**
   * Where a staged copy came from, for messages and the fingerprint: `az://container/blob@etag` for a
   * blob of an Azure drop (`path` is then its local copy). Absent for local files.
   */
  origin?: string;
  /** Hive-style folder values on the way from the drop folder to the file (`dt=2026-01-01/` → `{ dt: '2026-01-01' }`), URL-decoded. */
  partitionValues: Record<string, string>;
}

/** A file the scanner saw and did not take, with the reason. */
export interface SkippedFile {
  path: string;
  reason: string;
}

/** The result of `scanDrop`. */
export interface DropScan {
  /** Data files, sorted by `relativePath` (code-unit order). */
  files: DropFile[];
  /** Files that are neither data nor known side files (e.g. `README.txt`), sorted by path. */
  skipped: SkippedFile[];
}

/** Options of `scanDrop`. */
export interface ScanDropOptions {
  /**
   * Refuse a folder without a `_SUCCESS` marker at its top (Spark writes it last, so its absence
   * means the job that wrote the drop did not finish). Ignored for a single file. Default true.
   */
  requireSuccess?: boolean;
  /** Stops the walk between folders; the scan then rejects with the signal's reason. */
  signal?: AbortSignal;
}

const PARQUET_MAGIC = Buffer.from('PAR1');
const ARROW_FILE_MAGIC = Buffer.from('ARROW1');
/** Arrow IPC stream messages start with this continuation marker (since Arrow 0.15). */
const ARROW_CONTINUATION = 0xffffffff;
const PARQUET_EXTENSIONS = new Set(['.parquet', '.parq', '.pq']);
const ARROW_EXTENSIONS = new Set(['.arrow', '.arrows', '.ipc', '.feather']);
const SUCCESS_MARKER = '_SUCCESS';
const HIVE_DEFAULT_PARTITION = '__HIVE_DEFAULT_PARTITION__';

/**
 * Lists the data files of a drop: a local folder (walked recursively) or a single file.
 *
 * Spark layout is understood: `part-*` files are data; `_SUCCESS` is the completion marker (required
 * by default); names starting with `_` or `.` (which covers `.crc` checksums, `_committed_*`,
 * `_started_*`, `_temporary/`, `.spark-staging`) are side files and ignored, folders included;
 * `key=value` folders give each file below them its `partitionValues`.
 *
 * A file's format comes from its magic bytes. A file whose name says Parquet or Arrow (or a Spark
 * `part-*` file) but whose bytes are not stays in the list under the format its name says: a
 * truncated data file must not vanish from the drop; reading it fails with INGEST_CORRUPT_FILE for
 * that file alone. Other unrecognised files are listed in `skipped`.
 *
 * Throws IngestError INGEST_SOURCE_NOT_FOUND or INGEST_INCOMPLETE_DROP.
 */
export async function scanDrop(source: string, options: ScanDropOptions = {}): Promise<DropScan> {
  const requireSuccess = options.requireSuccess ?? true;
  if (typeof requireSuccess !== 'boolean') throw new TypeError(`requireSuccess must be a boolean, got ${String(requireSuccess)}`);
  const root = resolve(source);
  let rootStat;
  try {
    rootStat = await stat(root);
  } catch (err) {
    throw new IngestError('INGEST_SOURCE_NOT_FOUND', `drop ${root} cannot be read: ${describeCause(err)}`, {
      cause: err,
      context: { source: root },
    });
  }

  if (rootStat.isFile()) {
    const name = basename(root);
    // A file given by name is meant as data: an empty one is kept, to fail as empty (INGEST_EMPTY_FILE).
    const found = await classify(root, name, {}, rootStat.size, rootStat.mtimeMs, rootStat.size === 0);
    if ('reason' in found) {
      throw new IngestError('INGEST_UNSUPPORTED_FORMAT', `${root} is neither Parquet nor Arrow IPC: ${found.reason}`, {
        context: { file: root, source: root },
      });
    }
    return { files: [found], skipped: [] };
  }
  if (!rootStat.isDirectory()) {
    throw new IngestError('INGEST_SOURCE_NOT_FOUND', `drop ${root} is neither a folder nor a regular file`, { context: { source: root } });
  }

  const files: DropFile[] = [];
  const skipped: SkippedFile[] = [];
  let sawSuccess = false;
  // Depth-first with an explicit stack: drops can be deep (several partition levels) and wide.
  const stack: Array<{ dir: string; partitionValues: Record<string, string> }> = [{ dir: root, partitionValues: {} }];
  // Real paths of the folders walked: a symlink back up the tree must not make the walk endless.
  const visited = new Set<string>();
  while (stack.length > 0) {
    options.signal?.throwIfAborted();
    const { dir, partitionValues } = stack.pop()!;
    const real = await realpath(dir).catch(() => dir); // an unreadable folder fails in readdir below
    if (visited.has(real)) {
      skipped.push({ path: dir, reason: `a link to ${real}, which is already part of the drop` });
      continue;
    }
    visited.add(real);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      throw new IngestError('INGEST_SOURCE_NOT_FOUND', `folder ${dir} of drop ${root} cannot be read: ${describeCause(err)}`, {
        cause: err,
        context: { source: root, file: dir },
      });
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (dir === root && entry.name === SUCCESS_MARKER) {
        sawSuccess = true;
        continue;
      }
      if (isSideFileName(entry.name)) continue;
      // Resolve symlinks once: a linked file or folder counts as what it points to.
      let kind: 'dir' | 'file' | 'other' = entry.isDirectory() ? 'dir' : entry.isFile() ? 'file' : 'other';
      let size = 0;
      let mtimeMs = 0;
      if (kind !== 'dir') {
        try {
          const s = await stat(path);
          kind = s.isDirectory() ? 'dir' : s.isFile() ? 'file' : 'other';
          size = s.size;
          mtimeMs = s.mtimeMs;
        } catch (err) {
          skipped.push({ path, reason: `cannot be read: ${describeCause(err)}` });
          continue;
        }
      }
      if (kind === 'dir') {
        const hive = parseHiveSegment(entry.name);
        stack.push({ dir: path, partitionValues: hive === undefined ? partitionValues : { ...partitionValues, [hive.key]: hive.value } });
      } else if (kind === 'file') {
        const found = await classify(path, toPosix(relative(root, path)), partitionValues, size, mtimeMs);
        if ('reason' in found) skipped.push(found);
        else files.push(found);
      } else {
        skipped.push({ path, reason: 'not a regular file or folder' });
      }
    }
  }

  if (requireSuccess && !sawSuccess) {
    throw new IngestError(
      'INGEST_INCOMPLETE_DROP',
      `drop ${root} has no ${SUCCESS_MARKER} marker, so the job that wrote it may not have finished ` +
        `(${files.length} data file(s) found). Wait for the writer to finish, or pass --no-require-success ` +
        `(requireSuccess: false) to ingest it anyway.`,
      { context: { source: root } },
    );
  }
  files.sort((a, b) => (a.relativePath < b.relativePath ? -1 : a.relativePath > b.relativePath ? 1 : 0));
  skipped.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, skipped };
}

/** Spark and Hadoop side files and folders: `_SUCCESS`, `_committed_*`, `_started_*`, `_temporary`, `.crc`, `.spark-staging`... */
export function isSideFileName(name: string): boolean {
  return name.startsWith('_') || name.startsWith('.') || name.endsWith('.crc');
}

/** `dt=2026-01-01` → `{ key: 'dt', value: '2026-01-01' }`; undefined for other folder names. */
export function parseHiveSegment(name: string): { key: string; value: string } | undefined {
  const eq = name.indexOf('=');
  if (eq <= 0) return undefined;
  const key = safeDecode(name.slice(0, eq));
  const raw = name.slice(eq + 1);
  // Hive writes null partition values as this placeholder; keep it recognisable rather than guess.
  const value = raw === HIVE_DEFAULT_PARTITION ? raw : safeDecode(raw);
  return { key, value };
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    // Not percent-encoded after all (a literal `%` in a folder name): keep it as written.
    return text;
  }
}

function toPosix(path: string): string {
  return sep === '/' ? path : path.split(sep).join('/');
}

async function classify(
  path: string,
  relativePath: string,
  partitionValues: Record<string, string>,
  sizeBytes: number,
  mtimeMs: number,
  isData = false,
): Promise<DropFile | SkippedFile> {
  const name = basename(path);
  const ext = extname(name).toLowerCase();
  const looksLikeData = isData || PARQUET_EXTENSIONS.has(ext) || ARROW_EXTENSIONS.has(ext) || name.startsWith('part-');
  const detected = await detectFormat(path, sizeBytes);
  // A file named like data whose bytes are not (typically truncated) stays in the drop, so that
  // reading it fails for that file alone, naming it, while the other files are ingested.
  const format = detected.format ?? (looksLikeData || detected.corrupt ? (ARROW_EXTENSIONS.has(ext) ? 'arrow' : 'parquet') : undefined);
  if (format !== undefined) {
    return {
      path,
      relativePath,
      format,
      sizeBytes,
      mtimeMs,
      fingerprint: fingerprintOf(path, sizeBytes, mtimeMs),
      partitionValues: { ...partitionValues },
    };
  }
  return { path, reason: detected.reason };
}

/**
 * Throws IngestError INGEST_INPUT_CHANGED when the file's size or modification time is not what the
 * scan recorded (reading a file that is being rewritten would ingest a mix of versions), and
 * INGEST_SOURCE_NOT_FOUND when it is gone.
 */
export async function assertFileUnchanged(file: DropFile): Promise<void> {
  try {
    await assertUnchanged(file);
  } catch (err) {
    throw toIngestError(err);
  }
}

/**
 * Throws IngestError INGEST_EMPTY_FILE, naming the file, for a data file of 0 bytes (a writer that
 * failed before writing anything, a copy that never started). Checked before any reader touches it,
 * so the report says "empty" instead of a decoder's out-of-bounds message.
 */
export function assertFileNotEmpty(file: DropFile): void {
  if (file.sizeBytes > 0) return;
  const where = file.origin === undefined ? file.path : `${file.origin} (staged as ${file.path})`;
  throw new IngestError('INGEST_EMPTY_FILE', `${where} is empty (0 bytes): there is nothing to read. Rewrite the file, or remove it from the drop`, {
    context: { file: file.path, ...(file.origin === undefined ? {} : { origin: file.origin }) },
  });
}

/** SHA-256 hex of absolute path, size and mtime, and of `origin` when given (a staged copy's source). */
export function fingerprintOf(path: string, sizeBytes: number, mtimeMs: number, origin?: string): string {
  const hash = createHash('sha256').update(`${resolve(path)}\0${sizeBytes}\0${mtimeMs}`);
  if (origin !== undefined) hash.update(`\0${origin}`);
  return hash.digest('hex');
}

/**
 * Reads the first and last bytes of a file and says what it is. `corrupt` marks a file that starts
 * like a data file but does not end like one (a truncated copy).
 */
async function detectFormat(path: string, sizeBytes: number): Promise<{ format?: DropFileFormat; corrupt?: boolean; reason: string }> {
  let handle;
  try {
    handle = await open(path, 'r');
    const head = Buffer.alloc(8);
    const tail = Buffer.alloc(6);
    const { bytesRead: headBytes } = await handle.read(head, 0, 8, 0);
    const tailStart = Math.max(0, sizeBytes - 6);
    const { bytesRead: tailBytes } = await handle.read(tail, 0, Math.min(6, sizeBytes), tailStart);
    if (sizeBytes === 0) return { reason: 'the file is empty' };
    if (headBytes >= 4 && head.subarray(0, 4).equals(PARQUET_MAGIC)) {
      // Smallest valid Parquet: magic, footer (≥ 1 byte), footer length (4), magic.
      if (sizeBytes >= 12 && tailBytes === 6 && tail.subarray(2, 6).equals(PARQUET_MAGIC)) return { format: 'parquet', reason: '' };
      return { corrupt: true, reason: `starts with the Parquet magic PAR1 but does not end with it (${sizeBytes} bytes): the file is truncated or still being written` };
    }
    if (headBytes >= 6 && head.subarray(0, 6).equals(ARROW_FILE_MAGIC)) {
      if (tailBytes === 6 && tail.equals(ARROW_FILE_MAGIC) && sizeBytes >= 12) return { format: 'arrow', reason: '' };
      return { corrupt: true, reason: `starts with the Arrow file magic ARROW1 but does not end with it (${sizeBytes} bytes): the file is truncated or still being written` };
    }
    if (headBytes >= 8 && head.readUInt32LE(0) === ARROW_CONTINUATION) {
      const metadataLength = head.readInt32LE(4);
      if (metadataLength > 0 && metadataLength <= sizeBytes - 8) return { format: 'arrow', reason: '' };
      return { corrupt: true, reason: `starts like an Arrow IPC stream but its first message length (${metadataLength}) does not fit the file (${sizeBytes} bytes)` };
    }
    return { reason: `no Parquet (PAR1) or Arrow IPC (ARROW1 / stream continuation marker) magic bytes at the start (${head.subarray(0, headBytes).toString('hex')})` };
  } catch (err) {
    return { corrupt: true, reason: `cannot be read: ${describeCause(err)}` };
  } finally {
    await handle?.close();
  }
}
