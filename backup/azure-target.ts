import { PassThrough, Readable } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import { ShardpipeError, classifyAzureFailure, isRestError, openAzureContainer } from '../common/index.js';
import { BackupError, type BackupErrorCode, type BackupErrorContext } from './backup-errors.js';
import { assertBackupId, isBackupId } from './backup-id.js';
import { MANIFEST_FILE } from './backup-layout.js';
import { assertFileName, formatBackupUrl, type BackupTarget, type TargetCallOptions, type TargetFileInfo, type TargetReadOptions } from './backup-target.js';

/** Options of an Azure Blob backup target. */
export interface AzureTargetOptions {
  /**
   * Storage account connection string (the CLI passes `AZURE_STORAGE_CONNECTION_STRING`; modules
   * never read the environment). Missing or empty: BackupError BACKUP_ACCESS_DENIED on first use.
   */
  connectionString: string | undefined;
  /** Size of one uploaded block, which is also one upload buffer, in bytes. 1 MiB–100 MiB. Default 4 MiB. */
  uploadBlockBytes?: number;
  /** Blocks uploaded at once per file (the buffers in memory are about this many × uploadBlockBytes). 1–16. Default 4. */
  uploadConcurrency?: number;
  /** Attempts per request, including the first (the SDK's exponential retry policy). 1–20. Default 5. */
  maxTries?: number;
  /** Longest a single attempt may take before it is retried, in ms. Default 120000. */
  tryTimeoutMs?: number;
  /** First delay between attempts, doubled each retry, in ms. Default 500. */
  retryDelayMs?: number;
  /** Longest delay between attempts, in ms. Default 10000. */
  maxRetryDelayMs?: number;
}

const MIB = 1024 * 1024;

/**
 * A backup target under an Azure Blob container prefix (`az://CONTAINER/PREFIX`). Shard files are
 * block blobs uploaded with `uploadStream`: bounded buffers, blocks in parallel, each request retried
 * by the SDK's retry policy; a blob is visible only after its block list is committed, which is the
 * last request, so a failed upload leaves no partial blob (its uncommitted blocks are discarded by
 * the service after a week). Small text files are one Put Blob, atomic. The container is created
 * on the first write when it does not exist.
 */
export class AzureTarget implements BackupTarget {
  readonly url: string;
  private readonly options: Readonly<Required<Omit<AzureTargetOptions, 'connectionString'>>>;
  private containerClient: ContainerClient | undefined;
  private ensured: Promise<void> | undefined;

  constructor(
    readonly container: string,
    /** '' or ending in '/'. */
    readonly prefix: string,
    private readonly azure: AzureTargetOptions,
  ) {
    this.url = formatBackupUrl({ kind: 'az', container, prefix });
    const o = {
      uploadBlockBytes: azure.uploadBlockBytes ?? 4 * MIB,
      uploadConcurrency: azure.uploadConcurrency ?? 4,
      maxTries: azure.maxTries ?? 5,
      tryTimeoutMs: azure.tryTimeoutMs ?? 120_000,
      retryDelayMs: azure.retryDelayMs ?? 500,
      maxRetryDelayMs: azure.maxRetryDelayMs ?? 10_000,
    };
    if (!Number.isInteger(o.uploadBlockBytes) || o.uploadBlockBytes < MIB || o.uploadBlockBytes > 100 * MIB) throw new RangeError(`uploadBlockBytes must be 1 MiB–100 MiB, got ${o.uploadBlockBytes}`);
    if (!Number.isInteger(o.uploadConcurrency) || o.uploadConcurrency < 1 || o.uploadConcurrency > 16) throw new RangeError(`uploadConcurrency must be 1–16, got ${o.uploadConcurrency}`);
    if (!Number.isInteger(o.maxTries) || o.maxTries < 1 || o.maxTries > 20) throw new RangeError(`maxTries must be 1–20, got ${o.maxTries}`);
    for (const k of ['tryTimeoutMs', 'retryDelayMs', 'maxRetryDelayMs'] as const) {
      if (!Number.isFinite(o[k]) || o[k] <= 0) throw new RangeError(`${k} must be a positive number of ms, got ${o[k]}`);
    }
    this.options = Object.freeze(o);
  }

  async listBackupIds(options: TargetCallOptions = {}): Promise<string[]> {
    const ids: string[] = [];
    await this.call('listing', {}, options.signal, async (signal) => {
      for await (const item of (await this.client()).listBlobsByHierarchy('/', { prefix: this.prefix, abortSignal: signal })) {
        if (item.kind !== 'prefix') continue;
        const id = item.name.slice(this.prefix.length).replace(/\/$/, '');
        if (isBackupId(id)) ids.push(id);
      }
    }, 'empty');
    return ids.sort();
  }

  async listFiles(backupId: string, options: TargetCallOptions = {}): Promise<TargetFileInfo[]> {
    const folder = this.folderOf(backupId);
    const files: TargetFileInfo[] = [];
    await this.call('listing', { backupId }, options.signal, async (signal) => {
      for await (const blob of (await this.client()).listBlobsFlat({ prefix: folder, abortSignal: signal })) {
        const name = blob.name.slice(folder.length);
        if (name.includes('/') || name.startsWith('.')) continue;
        files.push({ name, bytes: blob.properties.contentLength ?? 0, modifiedAtMs: blob.properties.lastModified.getTime() });
      }
    }, 'empty');
    return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async stat(backupId: string, name: string, options: TargetCallOptions = {}): Promise<TargetFileInfo | undefined> {
    const blobName = this.blobOf(backupId, name);
    return this.call('reading', { backupId, file: name }, options.signal, async (signal) => {
      const p = await (await this.client()).getBlobClient(blobName).getProperties({ abortSignal: signal });
      return { name, bytes: p.contentLength ?? 0, modifiedAtMs: p.lastModified?.getTime() ?? 0 };
    }, 'empty');
  }

  async writeFile(backupId: string, name: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: TargetCallOptions = {}): Promise<{ bytes: number }> {
    const blobName = this.blobOf(backupId, name);
    await this.ensureContainer(options.signal);
    let bytes = 0;
    // A failure of the source (the shard writer) is reported as itself, not as a storage failure.
    let sourceFailure: { error: unknown } | undefined;
    const counted = Readable.from(
      (async function* () {
        try {
          for await (const chunk of source) {
            bytes += chunk.byteLength;
            yield chunk;
          }
        } catch (error) {
          sourceFailure = { error };
          throw error;
        }
      })(),
      { objectMode: false, highWaterMark: this.options.uploadBlockBytes },
    );
    try {
      await this.call('uploading', { backupId, file: name }, options.signal, async (signal) => {
        await (await this.client())
          .getBlockBlobClient(blobName)
          .uploadStream(counted, this.options.uploadBlockBytes, this.options.uploadConcurrency, {
            abortSignal: signal,
            blobHTTPHeaders: { blobContentType: contentTypeOf(name) },
          });
      });
    } catch (err) {
      if (sourceFailure) throw sourceFailure.error;
      throw err;
    } finally {
      counted.destroy();
    }
    return { bytes };
  }

  async writeText(backupId: string, name: string, text: string, options: TargetCallOptions = {}): Promise<void> {
    const blobName = this.blobOf(backupId, name);
    await this.ensureContainer(options.signal);
    const body = Buffer.from(text, 'utf8');
    await this.call('writing', { backupId, file: name }, options.signal, async (signal) => {
      await (await this.client())
        .getBlockBlobClient(blobName)
        .upload(body, body.byteLength, { abortSignal: signal, blobHTTPHeaders: { blobContentType: contentTypeOf(name) } });
    });
  }

  async readText(backupId: string, name: string, options: TargetCallOptions = {}): Promise<string | undefined> {
    const blobName = this.blobOf(backupId, name);
    return this.call('reading', { backupId, file: name }, options.signal, async (signal) => {
      const buffer = await (await this.client()).getBlobClient(blobName).downloadToBuffer(0, undefined, { abortSignal: signal, maxRetryRequestsPerBlock: this.options.maxTries });
      return buffer.toString('utf8');
    }, 'empty');
  }

  async openRead(backupId: string, name: string, options: TargetReadOptions = {}): Promise<Readable> {
    const blobName = this.blobOf(backupId, name);
    const context = { backupId, file: name };
    const body = await this.call('reading', context, options.signal, async (signal) => {
      const response = await (await this.client())
        .getBlobClient(blobName)
        .download(options.offset ?? 0, options.length, { abortSignal: signal, maxRetryRequests: this.options.maxTries });
      return response.readableStreamBody;
    }, 'empty');
    if (body === undefined) throw new BackupError('BACKUP_NOT_FOUND', `${this.url}/${backupId}/${name} does not exist`, { context: { target: this.url, ...context } });
    const stream = body as Readable;
    // Failures while streaming are translated like those of the request.
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    stream.once('error', (err) => out.destroy(this.translate(err, 'reading', context, options.signal) as Error));
    out.once('close', () => stream.destroy());
    return stream.pipe(out);
  }

  localPath(): undefined {
    return undefined;
  }

  async deleteBackup(backupId: string, options: TargetCallOptions = {}): Promise<number> {
    const folder = this.folderOf(backupId);
    let deleted = 0;
    await this.call('deleting', { backupId }, options.signal, async (signal) => {
      // The manifest goes first: a deletion cut short must not leave a backup that looks complete.
      if ((await (await this.client()).getBlobClient(folder + MANIFEST_FILE).deleteIfExists({ abortSignal: signal })).succeeded) deleted++;
      for await (const blob of (await this.client()).listBlobsFlat({ prefix: folder, abortSignal: signal })) {
        if ((await (await this.client()).getBlobClient(blob.name).deleteIfExists({ abortSignal: signal })).succeeded) deleted++;
      }
    }, 'empty');
    return deleted;
  }

  async close(): Promise<void> {
    // The SDK holds no connections of its own beyond Node's keep-alive agent.
  }

  /** The container's client; the SDK is loaded on first use so other commands do not pay for it. */
  private async client(): Promise<ContainerClient> {
    this.containerClient ??= await openAzureContainer(this.azure.connectionString, this.container, {
      retry: this.options,
      missingCredentials: () =>
        new BackupError(
          'BACKUP_ACCESS_DENIED',
          `${this.url} is an Azure Blob target and no connection string was given: set AZURE_STORAGE_CONNECTION_STRING to the storage account's connection string`,
          { context: { target: this.url } },
        ),
      invalidCredentials: (detail, cause) => new BackupError('BACKUP_INVALID_TARGET', `the connection string for ${this.url} cannot be used: ${detail}`, { cause, context: { target: this.url } }),
    });
    return this.containerClient;
  }

  private ensureContainer(signal: AbortSignal | undefined): Promise<void> {
    this.ensured ??= this.call('creating the container of', {}, signal, async (s) => {
      await (await this.client()).createIfNotExists({ abortSignal: s });
    }).catch((err: unknown) => {
      this.ensured = undefined;
      throw err;
    });
    return this.ensured;
  }

  private folderOf(backupId: string): string {
    return `${this.prefix}${assertBackupId(backupId)}/`;
  }

  private blobOf(backupId: string, name: string): string {
    return this.folderOf(backupId) + assertFileName(name, this.url);
  }

  /**
   * Runs one SDK call and translates its failure once, here. With `missing: 'empty'` a 404 (blob or
   * container not found) resolves undefined instead.
   */
  private async call<T>(what: string, context: BackupErrorContext, signal: AbortSignal | undefined, run: (signal: AbortSignal | undefined) => Promise<T>, missing: 'empty'): Promise<T | undefined>;
  private async call<T>(what: string, context: BackupErrorContext, signal: AbortSignal | undefined, run: (signal: AbortSignal | undefined) => Promise<T>): Promise<T>;
  private async call<T>(what: string, context: BackupErrorContext, signal: AbortSignal | undefined, run: (signal: AbortSignal | undefined) => Promise<T>, missing?: 'empty'): Promise<T | undefined> {
    signal?.throwIfAborted();
    try {
      return await run(signal);
    } catch (err) {
      if (missing === 'empty' && isRestError(err) && err.statusCode === 404) return undefined;
      throw this.translate(err, what, context, signal);
    }
  }

  private translate(err: unknown, what: string, context: BackupErrorContext, signal: AbortSignal | undefined): unknown {
    if (err instanceof ShardpipeError) return err;
    const failure = classifyAzureFailure(err, { signal });
    if (failure.kind === 'aborted') return failure.reason;
    const where = [this.url, context.backupId, context.file].filter((s) => s !== undefined).join('/');
    const fail = (code: BackupErrorCode, message: string): BackupError => new BackupError(code, `${what} ${where}: ${message}`, { cause: err, context: { target: this.url, ...context } });
    switch (failure.kind) {
      case 'denied':
        return fail(
          'BACKUP_ACCESS_DENIED',
          `storage refused the credentials (${failure.detail}); check that AZURE_STORAGE_CONNECTION_STRING is for this account and may list, read, write and delete in the container`,
        );
      case 'not-found':
        return fail('BACKUP_NOT_FOUND', `not found (${failure.detail})`);
      case 'unavailable':
        return fail('BACKUP_TARGET_UNAVAILABLE', `storage is unavailable after ${this.options.maxTries} attempts (${failure.detail}); try again`);
      case 'changed':
      case 'rejected':
        return fail('BACKUP_INVALID_TARGET', `storage rejected the request (${failure.detail})`);
      case 'stalled':
      case 'unreachable':
        // No HTTP answer at all (refused, reset, DNS, TLS, timeout) after the SDK's retries.
        return fail('BACKUP_TARGET_UNAVAILABLE', `storage cannot be reached after ${this.options.maxTries} attempts (${failure.kind === 'stalled' ? `no answer within ${failure.timeoutMs} ms` : failure.detail}); try again`);
    }
  }
}

function contentTypeOf(name: string): string {
  if (name.endsWith('.json')) return 'application/json';
  if (name.endsWith('.parquet')) return 'application/vnd.apache.parquet';
  return 'application/octet-stream';
}
