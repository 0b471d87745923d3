import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describeCause } from '../common/index.js';
import { BackupError } from './backup-errors.js';
import { assertBackupId, isBackupId } from './backup-id.js';
import { MANIFEST_FILE } from './backup-layout.js';
import { assertFileName, formatBackupUrl, type BackupTarget, type TargetCallOptions, type TargetFileInfo, type TargetReadOptions } from './backup-target.js';

/**
 * A backup target in a local folder (`file:///DIR`). A file is written to a hidden temporary name
 * (`.NAME.<random>.tmp`) in the same folder, fsynced, renamed over its real name, and the folder is
 * fsynced: after `writeFile` resolves the file survives a machine crash, and before that its name
 * shows either the previous content or nothing. Hidden temporary files of a killed writer are not
 * listed and go away with `deleteBackup`.
 */
export class LocalTarget implements BackupTarget {
  readonly url: string;

  constructor(readonly dir: string) {
    this.url = formatBackupUrl({ kind: 'file', dir });
  }

  async listBackupIds(options: TargetCallOptions = {}): Promise<string[]> {
    options.signal?.throwIfAborted();
    const entries = await this.fs(() => readdir(this.dir, { withFileTypes: true }), 'listing', {}, true);
    return (entries ?? [])
      .filter((e) => e.isDirectory() && isBackupId(e.name))
      .map((e) => e.name)
      .sort();
  }

  async listFiles(backupId: string, options: TargetCallOptions = {}): Promise<TargetFileInfo[]> {
    options.signal?.throwIfAborted();
    const folder = this.folderOf(backupId);
    const entries = await this.fs(() => readdir(folder, { withFileTypes: true }), 'listing', { backupId }, true);
    const files: TargetFileInfo[] = [];
    for (const e of entries ?? []) {
      if (!e.isFile() || e.name.startsWith('.')) continue;
      const info = await this.stat(backupId, e.name, options);
      if (info) files.push(info);
    }
    return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async stat(backupId: string, name: string, options: TargetCallOptions = {}): Promise<TargetFileInfo | undefined> {
    options.signal?.throwIfAborted();
    const path = this.pathOf(backupId, name);
    const s = await this.fs(() => stat(path), 'reading', { backupId, file: name }, true);
    if (!s?.isFile()) return undefined;
    return { name, bytes: s.size, modifiedAtMs: s.mtimeMs };
  }

  async writeFile(backupId: string, name: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: TargetCallOptions = {}): Promise<{ bytes: number }> {
    const { signal } = options;
    signal?.throwIfAborted();
    const folder = this.folderOf(backupId);
    const path = this.pathOf(backupId, name);
    const temp = join(folder, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
    const context = { backupId, file: name };
    await this.fs(() => mkdir(folder, { recursive: true }), 'creating the folder of', context);
    let handle: FileHandle | undefined;
    let bytes = 0;
    try {
      handle = await this.fs(() => open(temp, 'wx'), 'writing', context);
      for await (const chunk of source) {
        signal?.throwIfAborted();
        let written = 0;
        while (written < chunk.byteLength) {
          const { bytesWritten } = await this.fs(() => handle!.write(chunk, written, chunk.byteLength - written), 'writing', context);
          written += bytesWritten;
        }
        bytes += chunk.byteLength;
      }
      signal?.throwIfAborted();
      await this.fs(() => handle!.sync(), 'writing', context);
      await this.fs(() => handle!.close(), 'writing', context);
      handle = undefined;
      await this.fs(() => rename(temp, path), 'committing', context);
      await this.syncFolder(folder, context);
      return { bytes };
    } catch (err) {
      await handle?.close().catch(() => undefined); // the write already failed; its error is the one to report
      await rm(temp, { force: true }).catch(() => undefined);
      throw err;
    }
  }

  async writeText(backupId: string, name: string, text: string, options: TargetCallOptions = {}): Promise<void> {
    await this.writeFile(backupId, name, [Buffer.from(text, 'utf8')], options);
  }

  async readText(backupId: string, name: string, options: TargetCallOptions = {}): Promise<string | undefined> {
    options.signal?.throwIfAborted();
    const path = this.pathOf(backupId, name);
    return this.fs(() => readFile(path, { encoding: 'utf8', signal: options.signal }), 'reading', { backupId, file: name }, true);
  }

  async openRead(backupId: string, name: string, options: TargetReadOptions = {}): Promise<Readable> {
    const path = this.pathOf(backupId, name);
    const handle = await this.fs(() => open(path, 'r'), 'reading', { backupId, file: name }, true);
    if (handle === undefined) throw new BackupError('BACKUP_NOT_FOUND', `${this.url}/${backupId}/${name} does not exist`, { context: { target: this.url, backupId, file: name } });
    const start = options.offset ?? 0;
    const end = options.length === undefined ? undefined : start + options.length - 1;
    if (options.length === 0) {
      await handle.close();
      return Readable.from([]);
    }
    return createReadStream('', { fd: handle, start, end, signal: options.signal, highWaterMark: 1 << 20 });
  }

  localPath(backupId: string, name: string): string {
    return this.pathOf(backupId, name);
  }

  async deleteBackup(backupId: string, options: TargetCallOptions = {}): Promise<number> {
    options.signal?.throwIfAborted();
    const folder = this.folderOf(backupId);
    const entries = await this.fs(() => readdir(folder), 'listing', { backupId }, true);
    if (entries === undefined) return 0;
    // The manifest goes first: a deletion cut short must not leave a backup that looks complete.
    await this.fs(() => rm(join(folder, MANIFEST_FILE), { force: true }), 'deleting', { backupId, file: MANIFEST_FILE });
    await this.syncFolder(folder, { backupId });
    await this.fs(() => rm(folder, { recursive: true, force: true }), 'deleting', { backupId });
    await this.syncFolder(this.dir, { backupId });
    return entries.length;
  }

  async close(): Promise<void> {}

  private folderOf(backupId: string): string {
    return join(this.dir, assertBackupId(backupId));
  }

  private pathOf(backupId: string, name: string): string {
    return join(this.folderOf(backupId), assertFileName(name, this.url));
  }

  /** A rename is durable only once its folder's entry is; not every file system allows it (then it is already durable). */
  private async syncFolder(folder: string, context: { backupId?: string; file?: string }): Promise<void> {
    let handle: FileHandle | undefined;
    try {
      handle = await open(folder, 'r');
      await handle.sync();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM') throw this.writeFailed(err, 'syncing the folder of', context);
    } finally {
      await handle?.close();
    }
  }

  /** Runs one fs call; ENOENT gives undefined when `missingOk`, any other failure a BackupError. */
  private async fs<T>(call: () => Promise<T>, what: string, context: { backupId?: string; file?: string }, missingOk: true): Promise<T | undefined>;
  private async fs<T>(call: () => Promise<T>, what: string, context: { backupId?: string; file?: string }): Promise<T>;
  private async fs<T>(call: () => Promise<T>, what: string, context: { backupId?: string; file?: string }, missingOk = false): Promise<T | undefined> {
    try {
      return await call();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ABORT_ERR') throw err;
      if (missingOk && (code === 'ENOENT' || code === 'ENOTDIR')) return undefined;
      throw this.writeFailed(err, what, context);
    }
  }

  private writeFailed(err: unknown, what: string, context: { backupId?: string; file?: string }): BackupError {
    const where = [this.url, context.backupId, context.file].filter((s) => s !== undefined).join('/');
    return new BackupError('BACKUP_TARGET_IO_FAILED', `${what} ${where} failed: ${describeCause(err)}`, { cause: err, context: { target: this.url, ...context } });
  }
}
