import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ContainerClient } from '@azure/storage-blob';
import { StallWatchdog, describeCause, isAzureUrl } from '../common/index.js';
import { fromAzureError } from './azure-request.js';
import type { DropFile } from './drop-scanner.js';
import { IngestError } from './ingest-errors.js';

/** A blob as listed: what its staged copy must match. */
export interface ListedBlob {
  name: string;
  sizeBytes: number;
  /** Without the quotes Azure puts around it. */
  etag: string;
  lastModified: Date;
  /** Content-MD5 of the whole blob when the uploader set it (base64). */
  contentMd5?: string;
}

/** Options of `stageBlob`. */
export interface StageBlobOptions {
  /** Longest wait for the answer or the next bytes of the download. */
  stallTimeoutMs: number;
  signal?: AbortSignal;
}

/**
 * Copies a blob to `localPath` unless a copy of the same size and etag is already there. The
 * download streams to a temporary name beside it (a side-file name, so a concurrent scan ignores
 * it), is checked against the listed size (and Content-MD5 when set), gets the blob's lastModified as
 * its mtime — so the local fingerprint is the same on every run — and is renamed into place. The
 * etag is kept in the sidecar `.<name>.etag`. Resolves whether it downloaded.
 */
export async function stageBlob(container: ContainerClient, blob: ListedBlob, localPath: string, options: StageBlobOptions): Promise<{ downloaded: boolean }> {
  const origin = `az://${container.containerName}/${blob.name}@${blob.etag}`;
  const context = { file: localPath, origin };
  const sidecar = etagSidecarPath(localPath);
  const mtimeMs = blob.lastModified.getTime();
  const cached = await stat(localPath).catch(() => undefined);
  if (cached?.isFile() && cached.size === blob.sizeBytes && (await readEtag(sidecar)) === blob.etag) {
    if (cached.mtimeMs !== mtimeMs) await staging(() => utimes(localPath, blob.lastModified, blob.lastModified), localPath, origin);
    return { downloaded: false };
  }

  await staging(() => mkdir(dirname(localPath), { recursive: true }), localPath, origin);
  const temp = join(dirname(localPath), `.${basename(localPath)}.${randomUUID()}.download`);
  const watchdog = new StallWatchdog(options.stallTimeoutMs, options.signal);
  const md5 = createHash('md5');
  try {
    let written = 0;
    try {
      watchdog.arm();
      const response = await container.getBlobClient(blob.name).download(0, undefined, {
        abortSignal: watchdog.signal,
        // The bytes of the listed version or a 412: never a mix of an old listing and a new blob.
        conditions: { ifMatch: `"${blob.etag}"` },
        // A connection lost mid-blob resumes from the last byte received (same etag), up to 5 times.
        maxRetryRequests: 5,
      });
      if (!response.readableStreamBody) throw new Error('the download has no body');
      const meter = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          watchdog.arm();
          written += chunk.length;
          md5.update(chunk);
          done(null, chunk);
        },
      });
      await pipeline(response.readableStreamBody, meter, createWriteStream(temp, { flags: 'wx' }), { signal: watchdog.signal });
    } catch (err) {
      if (isFileSystemError(err)) throw stagingError(err, localPath, origin);
      throw fromAzureError(err, `copying ${origin}`, context, { signal: options.signal, watchdog });
    } finally {
      watchdog.disarm();
    }
    if (written !== blob.sizeBytes) {
      throw new IngestError('INGEST_SOURCE_UNAVAILABLE', `copying ${origin}: received ${written} bytes, the listing says ${blob.sizeBytes}; try again`, { context });
    }
    if (blob.contentMd5 !== undefined && md5.digest('base64') !== blob.contentMd5) {
      throw new IngestError('INGEST_SOURCE_UNAVAILABLE', `copying ${origin}: the bytes received do not match the blob's Content-MD5; try again`, { context });
    }
    await staging(async () => {
      await utimes(temp, blob.lastModified, blob.lastModified);
      await rename(temp, localPath);
      // After the data: a crash in between leaves an old etag beside new data, which only costs a download.
      const sidecarTemp = `${sidecar}.${randomUUID()}`;
      await writeFile(sidecarTemp, `${blob.etag}\n`);
      await rename(sidecarTemp, sidecar);
    }, localPath, origin);
    return { downloaded: true };
  } finally {
    await rm(temp, { force: true });
  }
}

/**
 * For a file staged from Azure (`origin` `az://…@etag`): throws IngestError INGEST_INPUT_CHANGED when
 * its local copy now holds another version of the blob (staged again by a later scan), and
 * INGEST_SOURCE_NOT_FOUND when the copy is not on this machine. Does nothing for local files.
 * Complements `assertFileUnchanged`, which compares size and mtime only.
 */
export async function assertStagedBlobUnchanged(file: DropFile): Promise<void> {
  if (file.origin === undefined || !isAzureUrl(file.origin)) return;
  const expected = file.origin.slice(file.origin.lastIndexOf('@') + 1);
  const actual = await readEtag(etagSidecarPath(file.path));
  if (actual === undefined) {
    throw new IngestError(
      'INGEST_SOURCE_NOT_FOUND',
      `${file.origin} was staged at ${file.path} on the machine that planned the ingest, and that copy is not here: ` +
        'workers on other machines need that data folder shared (or submit from this machine)',
      { context: { file: file.path, origin: file.origin } },
    );
  }
  if (actual !== expected) {
    throw new IngestError(
      'INGEST_INPUT_CHANGED',
      `${file.origin} changed since the ingest was planned: its staged copy ${file.path} now holds etag ${actual}; submit again`,
      { context: { file: file.path, origin: file.origin } },
    );
  }
}

/** `dir/name` → `dir/.name.etag` (a side-file name: scans ignore it). */
export function etagSidecarPath(localPath: string): string {
  return join(dirname(localPath), `.${basename(localPath)}.etag`);
}

async function readEtag(sidecar: string): Promise<string | undefined> {
  try {
    return (await readFile(sidecar, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function staging<T>(step: () => Promise<T>, localPath: string, origin: string): Promise<T> {
  try {
    return await step();
  } catch (err) {
    throw stagingError(err, localPath, origin);
  }
}

function stagingError(err: unknown, localPath: string, origin: string): IngestError {
  return new IngestError('INGEST_STAGING_FAILED', `cannot stage ${origin} at ${localPath}: ${describeCause(err)}`, { cause: err, context: { file: localPath, origin } });
}

/** Node's errors from fs calls carry the path; network errors do not. */
function isFileSystemError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && 'syscall' in err && 'path' in err;
}
