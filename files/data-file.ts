import { stat } from 'node:fs/promises';
import { describeCause } from '../common/index.js';
import { FileError } from './file-errors.js';

/** The formats files/ reads. Arrow means Arrow IPC, file ("Feather v2") or stream format. */
export type DataFileFormat = 'parquet' | 'arrow';

/**
 * A file to read, as it was when someone looked at it: the readers check size and mtime against it
 * before (and the record-batch reader again after) reading, so a rewritten file is refused instead
 * of read as a mix of versions. Ingest's DropFile is one.
 */
export interface DataFile {
  /** Path on this machine. */
  path: string;
  format: DataFileFormat;
  sizeBytes: number;
  /** Modification time (ms since the epoch, fractional as the file system reports it). */
  mtimeMs: number;
  /** Where a staged copy came from (`az://container/blob@etag`), for messages; absent for local files. */
  origin?: string;
}

/** Stats `path` into a DataFile of the given format. Throws FileError FILE_NOT_FOUND. */
export async function statDataFile(path: string, format: DataFileFormat): Promise<DataFile> {
  let s;
  try {
    s = await stat(path);
  } catch (err) {
    throw new FileError('FILE_NOT_FOUND', `${path} cannot be read: ${describeCause(err)}`, { cause: err, context: { file: path } });
  }
  return { path, format, sizeBytes: s.size, mtimeMs: s.mtimeMs };
}

/**
 * Throws FileError FILE_CHANGED when the file's size or modification time is not the descriptor's
 * (reading a file that is being rewritten would return a mix of versions), and FILE_NOT_FOUND when
 * it is gone.
 */
export async function assertUnchanged(file: DataFile): Promise<void> {
  let now;
  try {
    now = await stat(file.path);
  } catch (err) {
    throw new FileError('FILE_NOT_FOUND', `${file.path} was scanned but cannot be read any more: ${describeCause(err)}`, {
      cause: err,
      context: { file: file.path },
    });
  }
  if (now.size !== file.sizeBytes || now.mtimeMs !== file.mtimeMs) {
    throw new FileError(
      'FILE_CHANGED',
      `${file.path} changed since it was scanned (size ${file.sizeBytes} → ${now.size} bytes, mtime ${file.mtimeMs} → ${now.mtimeMs})`,
      { context: { file: file.path } },
    );
  }
}
