import { mkdir } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import type { BlobItem, ContainerClient } from '@azure/storage-blob';
import { StallWatchdog, describeCause, formatAzureUrl, openAzureContainer, parseAzureUrl } from '../common/index.js';
import { stageBlob, type ListedBlob } from './azure-blob-cache.js';
import { fromAzureError } from './azure-request.js';
import { fingerprintOf, isSideFileName, scanDrop, type DropFile, type DropScan, type SkippedFile } from './drop-scanner.js';
import { IngestError } from './ingest-errors.js';

/** Options of `scanAzureDrop`. */
export interface ScanAzureDropOptions {
  /**
   * Storage account connection string (the CLI passes `AZURE_STORAGE_CONNECTION_STRING`; modules
   * never read the environment). Missing or empty: IngestError INGEST_ACCESS_DENIED.
   */
  connectionString: string | undefined;
  /** Local folder blobs are staged into, as `<cacheDir>/<container>/<blob name>`. Required. */
  cacheDir: string;
  /** Refuse a prefix without a `_SUCCESS` blob at its top. Ignored for a single blob. Default true. */
  requireSuccess?: boolean;
  /** Blobs downloaded at once, 1–64. Each streams to disk: memory does not grow with blob size. Default 4. */
  downloadConcurrency?: number;
  /** Longest wait for an answer, a listing page or the next bytes of a download; then INGEST_SOURCE_UNAVAILABLE. Default 60000 ms. */
  stallTimeoutMs?: number;
  /** Stops listing and downloads; the scan then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** The result of `scanAzureDrop`: a normal DropScan over the staged copies, and what staging did. */
export interface AzureDropScan extends DropScan {
  /** The local folder (or file, for a single blob) the drop was staged into. */
  stagedAt: string;
  /** Blobs downloaded by this scan. */
  downloaded: number;
  /** Blobs whose staged copy (same size and etag) was reused. */
  reused: number;
}

const SUCCESS_MARKER = '_SUCCESS';

/**
 * Lists the data blobs of an Azure Blob drop, `az://CONTAINER/PREFIX`, stages each into `cacheDir`
 * and scans the copies with the local rules, so the result is a normal `DropScan` whose files are
 * local: every reader and worker works on them unchanged. Each DropFile's `origin` is
 * `az://container/blob@etag` and is part of its fingerprint, so an overwritten blob never matches an
 * old ingest or checkpoint.
 *
 * The prefix is a folder (flat listing of everything below `PREFIX/`) unless a blob has exactly that
 * name: then it is a single-file drop. Spark layout as for a local folder: `_SUCCESS` at the top is
 * required unless `requireSuccess` is false; a blob with a side-file name (`_…`, `.…`, `….crc`) in
 * any segment of its path is ignored (not downloaded); `key=value` segments give `partitionValues`.
 * A copy already staged with the same size and etag is not downloaded again.
 *
 * Throws IngestError INGEST_INVALID_SOURCE, INGEST_ACCESS_DENIED, INGEST_SOURCE_NOT_FOUND,
 * INGEST_INCOMPLETE_DROP, INGEST_SOURCE_UNAVAILABLE (retryable), INGEST_INPUT_CHANGED (a blob
 * overwritten while being copied), INGEST_STAGING_FAILED, INGEST_UNSUPPORTED_FORMAT (a single blob
 * that is neither format).
 */
export async function scanAzureDrop(url: string, options: ScanAzureDropOptions): Promise<AzureDropScan> {
  const requireSuccess = options.requireSuccess ?? true;
  const downloadConcurrency = options.downloadConcurrency ?? 4;
  const stallTimeoutMs = options.stallTimeoutMs ?? 60_000;
  if (typeof options.cacheDir !== 'string' || options.cacheDir === '') throw new TypeError(`cacheDir must be a folder path, got ${String(options.cacheDir)}`);
  if (typeof requireSuccess !== 'boolean') throw new TypeError(`requireSuccess must be a boolean, got ${String(requireSuccess)}`);
  if (!Number.isInteger(downloadConcurrency) || downloadConcurrency < 1 || downloadConcurrency > 64) throw new RangeError(`downloadConcurrency must be 1–64, got ${downloadConcurrency}`);
  if (!Number.isFinite(stallTimeoutMs) || stallTimeoutMs <= 0) throw new RangeError(`stallTimeoutMs must be a positive number of ms, got ${stallTimeoutMs}`);
  const { signal } = options;

  const { container: containerName, prefix } = parseAzureUrl(url, {
    invalid: (reason) => new IngestError('INGEST_INVALID_SOURCE', `${url}: ${reason}; expected az://CONTAINER/PREFIX`, { context: { source: url } }),
  });
  const container = await openAzureContainer(options.connectionString, containerName, {
    missingCredentials: () =>
      new IngestError(
        'INGEST_ACCESS_DENIED',
        `${url} is an Azure Blob drop and no connection string was given: set AZURE_STORAGE_CONNECTION_STRING to the storage account's connection string`,
        { context: { source: url } },
      ),
    invalidCredentials: (detail, cause) => new IngestError('INGEST_INVALID_SOURCE', `the connection string for ${url} cannot be used: ${detail}`, { cause, context: { source: url } }),
  });
  const cacheRoot = resolve(options.cacheDir, containerName);
  const localPathOf = (name: string): string => {
    const path = resolve(cacheRoot, ...name.split('/'));
    // parseAzureUrl and the listing filter keep `..` and empty segments out; this is the invariant they keep.
    if (!path.startsWith(cacheRoot + sep)) throw new Error(`blob name ${name} resolves outside ${cacheRoot}`);
    return path;
  };

  if (prefix !== '' && !prefix.endsWith('/')) {
    const single = await singleBlob(container, prefix, url, stallTimeoutMs, signal);
    if (single) {
      const localPath = localPathOf(single.name);
      const { downloaded } = await stageBlob(container, single, localPath, { stallTimeoutMs, signal });
      const origin = originOf(containerName, single);
      let scan: DropScan;
      try {
        scan = await scanDrop(localPath, { signal });
      } catch (err) {
        if (!(err instanceof IngestError)) throw err;
        throw new IngestError(err.code, `${origin}: ${err.message}`, { cause: err, context: { ...err.context, source: url, origin } });
      }
      const files = scan.files.map((f) => withOrigin(f, origin));
      return { files, skipped: [], stagedAt: localPath, downloaded: downloaded ? 1 : 0, reused: downloaded ? 0 : 1 };
    }
  }

  const folder = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
  const listing = await listDrop(container, folder, url, stallTimeoutMs, signal);
  if (requireSuccess && !listing.sawSuccess) {
    throw new IngestError(
      'INGEST_INCOMPLETE_DROP',
      `drop ${url} has no ${SUCCESS_MARKER} blob, so the job that wrote it may not have finished ` +
        `(${listing.blobs.length} data blob(s) found). Wait for the writer to finish, or pass --no-require-success ` +
        `(requireSuccess: false) to ingest it anyway.`,
      { context: { source: url } },
    );
  }

  const localRoot = folder === '' ? cacheRoot : localPathOf(folder.slice(0, -1));
  try {
    await mkdir(localRoot, { recursive: true });
  } catch (err) {
    throw new IngestError('INGEST_STAGING_FAILED', `cannot create the staging folder ${localRoot} for ${url}: ${describeCause(err)}`, { cause: err, context: { source: url, file: localRoot } });
  }
  const staged = new Map<string, ListedBlob>();
  let downloaded = 0;
  await forEachBounded(listing.blobs, downloadConcurrency, signal, async (blob, stepSignal) => {
    const localPath = localPathOf(blob.name);
    const result = await stageBlob(container, blob, localPath, { stallTimeoutMs, signal: stepSignal });
    if (result.downloaded) downloaded++;
    staged.set(localPath, blob);
  });

  // The staging folder may also hold copies of blobs deleted since an earlier scan: only this
  // listing's blobs count.
  const scan = await scanDrop(localRoot, { requireSuccess: false, signal });
  const files: DropFile[] = [];
  const skipped: SkippedFile[] = [...listing.skipped];
  for (const file of scan.files) {
    const blob = staged.get(file.path);
    if (blob) files.push(withOrigin(file, originOf(containerName, blob)));
  }
  for (const s of scan.skipped) {
    const blob = staged.get(s.path);
    if (blob) skipped.push({ path: formatAzureUrl(containerName, blob.name), reason: s.reason });
  }
  skipped.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, skipped, stagedAt: localRoot, downloaded, reused: staged.size - downloaded };
}

/** The blob named exactly `name`, when there is one that is not a folder marker. */
async function singleBlob(container: ContainerClient, name: string, url: string, stallTimeoutMs: number, signal: AbortSignal | undefined): Promise<ListedBlob | undefined> {
  const watchdog = new StallWatchdog(stallTimeoutMs, signal);
  try {
    watchdog.arm();
    const p = await container.getBlobClient(name).getProperties({ abortSignal: watchdog.signal });
    if (p.metadata?.['hdi_isfolder'] === 'true') return undefined;
    return {
      name,
      sizeBytes: p.contentLength ?? 0,
      etag: unquote(p.etag ?? ''),
      lastModified: p.lastModified ?? new Date(0),
      contentMd5: p.contentMD5 ? Buffer.from(p.contentMD5).toString('base64') : undefined,
    };
  } catch (err) {
    // A missing blob means a folder prefix (listed next); a missing container is reported by the listing.
    const translated = fromAzureError(err, `reading ${url}`, { source: url }, { signal, watchdog });
    if (translated instanceof IngestError && translated.code === 'INGEST_SOURCE_NOT_FOUND') return undefined;
    throw translated;
  } finally {
    watchdog.disarm();
  }
}

interface DropListing {
  blobs: ListedBlob[];
  skipped: SkippedFile[];
  sawSuccess: boolean;
}

/** Flat listing below `folder` ('' or ending with '/'), with the Spark rules applied to every name. */
async function listDrop(container: ContainerClient, folder: string, url: string, stallTimeoutMs: number, signal: AbortSignal | undefined): Promise<DropListing> {
  const blobs: ListedBlob[] = [];
  const skipped: SkippedFile[] = [];
  let sawSuccess = false;
  let seen = 0;
  const watchdog = new StallWatchdog(stallTimeoutMs, signal);
  try {
    const pages = container.listBlobsFlat({ prefix: folder, includeMetadata: true, abortSignal: watchdog.signal }).byPage({ maxPageSize: 5000 });
    for (;;) {
      watchdog.arm();
      const page = await pages.next();
      watchdog.disarm();
      if (page.done) break;
      for (const item of page.value.segment.blobItems) {
        seen++;
        const relative = item.name.slice(folder.length);
        if (relative === SUCCESS_MARKER) {
          sawSuccess = true;
          continue;
        }
        if (isFolderMarker(item)) continue;
        const segments = relative.split('/');
        if (segments.some(isSideFileName)) continue;
        if (segments.includes('')) {
          skipped.push({ path: formatAzureUrl(container.containerName, item.name), reason: 'an empty path segment (`//`) has no local equivalent' });
          continue;
        }
        blobs.push({
          name: item.name,
          sizeBytes: item.properties.contentLength ?? 0,
          etag: unquote(item.properties.etag),
          lastModified: item.properties.lastModified,
          contentMd5: item.properties.contentMD5 ? Buffer.from(item.properties.contentMD5).toString('base64') : undefined,
        });
      }
    }
  } catch (err) {
    throw fromAzureError(err, `listing ${url}`, { source: url }, { signal, watchdog });
  } finally {
    watchdog.disarm();
  }
  if (seen === 0) throw new IngestError('INGEST_SOURCE_NOT_FOUND', `drop ${url} has no blobs under ${folder === '' ? 'the container' : folder}`, { context: { source: url } });
  return { blobs, skipped, sawSuccess };
}

/** Zero-length "directory" blobs (hierarchical namespace, or tools that emulate folders). */
function isFolderMarker(item: BlobItem): boolean {
  return item.name.endsWith('/') || item.metadata?.['hdi_isfolder'] === 'true';
}

function originOf(container: string, blob: ListedBlob): string {
  return `${formatAzureUrl(container, blob.name)}@${blob.etag}`;
}

function withOrigin(file: DropFile, origin: string): DropFile {
  return { ...file, origin, fingerprint: fingerprintOf(file.path, file.sizeBytes, file.mtimeMs, origin) };
}

function unquote(etag: string): string {
  return etag.replace(/^"(.*)"$/, '$1');
}

/**
 * Runs `step` over `items`, at most `limit` at a time. The first failure aborts the others (through
 * the step's signal), waits for them, and is thrown.
 */
async function forEachBounded<T>(items: readonly T[], limit: number, signal: AbortSignal | undefined, step: (item: T, signal: AbortSignal) => Promise<void>): Promise<void> {
  const stop = new AbortController();
  const stepSignal = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
  let next = 0;
  let failure: { err: unknown } | undefined;
  const runner = async (): Promise<void> => {
    while (next < items.length && !failure && !stepSignal.aborted) {
      const item = items[next++]!;
      try {
        await step(item, stepSignal);
      } catch (err) {
        failure ??= { err };
        stop.abort(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, runner));
  signal?.throwIfAborted();
  if (failure) throw failure.err;
}

