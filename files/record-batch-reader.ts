import { open, type FileHandle } from 'node:fs/promises';
import { RecordBatchReader, type RecordBatch } from 'apache-arrow';
import { describeCause, releaseArrayBuffer } from '../common/index.js';
import { arrowBatchProblem } from './arrow-batch-check.js';
import { verifyArrowMetadata } from './arrow-message-walker.js';
import { assertUnchanged, type DataFile } from './data-file.js';
import { FileError } from './file-errors.js';
import { ParquetDecoder } from './parquet-decoder.js';

/** Options of `readRecordBatches`. */
export interface ReadRecordBatchesOptions {
  /** First row group (Parquet) or record batch (Arrow) to read, 0-based. Default 0. */
  rowGroupStart?: number;
  /** Row group to stop before (exclusive). Default: the end of the file. */
  rowGroupEnd?: number;
  /** Stops reading; the generator throws the signal's reason. */
  signal?: AbortSignal;
  /**
   * Parquet only: how long the decoder may go without producing anything before it is declared hung
   * and stopped (FILE_CORRUPT). Default 60,000 ms.
   */
  stallTimeoutMs?: number;
  /**
   * Parquet only: largest row group decoded, in uncompressed bytes as the footer states them. A row
   * group is decoded whole in memory, so a larger one is refused (FILE_UNSUPPORTED) instead
   * of exhausting memory. Default 1 GiB.
   */
  maxRowGroupBytes?: number;
  /**
   * Parquet only: rows per decoded batch; a row group comes as several chunks (`rowOffset` says
   * where each starts). Smaller batches keep less in memory at once. Default 8192.
   */
  batchRows?: number;
  /**
   * Parquet only: free each decoded batch's memory as soon as the caller asks for the next batch
   * (its Arrow vectors are views of it), instead of when the garbage collector finds it dead. The
   * caller must not keep the batch, its vectors or views into them past that point; copies are
   * fine. Default false. Without it, dead batches of ~1 MiB wait for a full collection, which V8
   * starts only after ~64 MiB of them (bench:ingest-memory, README "Memory").
   */
  releaseBatches?: boolean;
  /**
   * Parquet only: when the next row group is decoded. `'rowGroup'` (default): as soon as this one is
   * handed out, so two whole row groups are decoded in memory at once. `'late'`: once the
   * caller asks for the first batch of this row group's last two decoded buffers (of `batchRows`
   * rows each), so at most one row group plus two buffers are; for a caller much slower than the
   * decoder (ingest maps and writes ~50k rows/s per file, the decoder decodes 2M+), whose last two
   * buffers outlast the next row group's decoding, also while another file's waits before it.
   */
  readAhead?: 'rowGroup' | 'late';
}

/** One decoded batch and where it sits in the file. */
export interface RecordBatchChunk {
  /** Row group (Parquet) or record batch (Arrow) index. */
  rowGroup: number;
  /** Index of the batch's first row within the row group (0 unless a row group comes in several batches). */
  rowOffset: number;
  batch: RecordBatch;
}

const DEFAULT_MAX_ROW_GROUP_BYTES = 1024 ** 3;

/**
 * Reads a file's row groups (Parquet) or record batches (Arrow IPC file or stream) in order, one at
 * a time, as Arrow record batches. Memory: Parquet holds the row group being handed out plus the next
 * one being decoded (on the shared decoder threads, see parquet-decoder.ts); Arrow reads one batch at a time
 * through a file handle. Nothing reads the whole file.
 *
 * Throws FileError FILE_CORRUPT (with file and row group) for anything that cannot be
 * decoded — including a decoder that crashes or stops making progress — FILE_CHANGED when
 * the file differs from the scan, FILE_NOT_FOUND when it is gone, and
 * FILE_UNSUPPORTED for an over-large row group.
 */
export async function* readRecordBatches(file: DataFile, options: ReadRecordBatchesOptions = {}): AsyncGenerator<RecordBatchChunk> {
  const start = options.rowGroupStart ?? 0;
  if (!Number.isInteger(start) || start < 0) throw new RangeError(`rowGroupStart must be an integer ≥ 0, got ${start}`);
  const end = options.rowGroupEnd ?? Number.POSITIVE_INFINITY;
  if (end !== Number.POSITIVE_INFINITY && (!Number.isInteger(end) || end < start)) {
    throw new RangeError(`rowGroupEnd must be an integer ≥ rowGroupStart (${start}), got ${end}`);
  }
  const maxRowGroupBytes = options.maxRowGroupBytes ?? DEFAULT_MAX_ROW_GROUP_BYTES;
  if (!Number.isFinite(maxRowGroupBytes) || maxRowGroupBytes < 1) throw new RangeError(`maxRowGroupBytes must be ≥ 1, got ${maxRowGroupBytes}`);
  options.signal?.throwIfAborted();
  await assertUnchanged(file);
  if (file.format === 'parquet') {
    yield* readParquet(file, start, end, maxRowGroupBytes, options);
  } else {
    yield* readArrow(file, start, end, options.signal);
  }
  // A file rewritten while we read it may have handed out a mix of versions: refuse the result.
  await assertUnchanged(file);
}

function corrupt(file: DataFile, rowGroup: number | undefined, problem: string, cause?: unknown): FileError {
  return new FileError('FILE_CORRUPT', `${file.path}: ${problem}`, { cause, context: { file: file.path, rowGroup } });
}

function checkBatch(file: DataFile, index: number, batch: RecordBatch): void {
  const problem = arrowBatchProblem(batch);
  if (problem !== undefined) throw corrupt(file, index, `record batch ${index} is damaged: ${problem}`);
}

async function* readParquet(
  file: DataFile,
  start: number,
  endRequested: number,
  maxRowGroupBytes: number,
  options: ReadRecordBatchesOptions,
): AsyncGenerator<RecordBatchChunk> {
  const decoder = await ParquetDecoder.open(file, { signal: options.signal, stallTimeoutMs: options.stallTimeoutMs, batchRows: options.batchRows });
  try {
    const end = Math.min(endRequested, decoder.rowGroups.length);
    const fits = (g: number): boolean => decoder.rowGroups[g]!.bytes <= maxRowGroupBytes;
    let requested = -1;
    const lateReadAhead = options.readAhead === 'late';
    for (let g = start; g < end; g++) {
      if (requested !== g) {
        if (!fits(g)) {
          throw new FileError(
            'FILE_UNSUPPORTED',
            `${file.path}: row group ${g} is ${decoder.rowGroups[g]!.bytes} bytes uncompressed, over maxRowGroupBytes (${maxRowGroupBytes}); ` +
              'the reader decodes a row group whole in memory — rewrite the file with smaller row groups or raise the limit',
            { context: { file: file.path, rowGroup: g } },
          );
        }
        decoder.request(g);
      }
      const buffers = await decoder.collect();
      // Let the worker decode the next row group while the caller maps this one (or its last batch).
      const readAhead = (): void => {
        if (requested === g && g + 1 < end && fits(g + 1)) {
          decoder.request(g + 1);
          requested = g + 1;
        }
      };
      requested = g;
      if (!lateReadAhead) readAhead();
      let rowOffset = 0;
      // Taken off the list as they are handed out, so a mapped batch's memory can go before the row group's end.
      for (let ipc = buffers.shift(); ipc !== undefined; ipc = buffers.shift()) {
        if (buffers.length <= 1) readAhead();
        let batches: RecordBatch[];
        try {
          batches = RecordBatchReader.from(ipc).readAll();
        } catch (err) {
          throw corrupt(file, g, `row group ${g} decoded to unreadable Arrow data: ${describeCause(err)}`, err);
        }
        for (const batch of batches) {
          yield { rowGroup: g, rowOffset, batch };
          rowOffset += batch.numRows;
        }
        // The caller asked for the next batch: nothing reads this buffer's batches any more.
        if (options.releaseBatches) releaseArrayBuffer(ipc.buffer);
      }
      const expected = decoder.rowGroups[g]!.rows;
      if (rowOffset !== expected) throw corrupt(file, g, `row group ${g} decoded to ${rowOffset} rows, but the footer says ${expected}`);
      options.signal?.throwIfAborted();
    }
  } finally {
    await decoder.close();
  }
}

async function* readArrow(file: DataFile, start: number, end: number, signal: AbortSignal | undefined): AsyncGenerator<RecordBatchChunk> {
  let handle: FileHandle;
  try {
    handle = await open(file.path, 'r');
  } catch (err) {
    throw new FileError('FILE_NOT_FOUND', `${file.path} cannot be opened any more: ${describeCause(err)}`, { cause: err, context: { file: file.path } });
  }
  try {
    // From a file handle apache-arrow reads the file format by random access (footer, then one batch
    // at a time) and the stream format message by message.
    let reader;
    try {
      // apache-arrow trusts the lengths in the metadata it decodes: check them all first.
      await verifyArrowMetadata(handle, file.sizeBytes);
      reader = await RecordBatchReader.from(handle);
      await reader.open();
    } catch (err) {
      throw corrupt(file, undefined, `cannot read the Arrow IPC metadata: ${describeCause(err)}`, err);
    }
    if (reader.isFile()) {
      const stop = Math.min(end, reader.numRecordBatches);
      for (let index = start; index < stop; index++) {
        let batch: RecordBatch | null;
        try {
          batch = await reader.readRecordBatch(index);
        } catch (err) {
          throw corrupt(file, index, `cannot decode record batch ${index}: ${describeCause(err)}`, err);
        }
        if (batch === null) throw corrupt(file, index, `record batch ${index} listed in the footer cannot be found`);
        checkBatch(file, index, batch);
        yield { rowGroup: index, rowOffset: 0, batch };
        signal?.throwIfAborted();
      }
      return;
    }
    let position = 0;
    const iterator = reader[Symbol.asyncIterator]();
    try {
      while (position < end) {
        let step: IteratorResult<RecordBatch>;
        try {
          step = await iterator.next();
        } catch (err) {
          throw corrupt(file, position, `cannot decode record batch ${position}: ${describeCause(err)}`, err);
        }
        if (step.done) break;
        // Batches before the range are decoded and dropped: a stream has no index to seek with.
        if (position >= start) {
          checkBatch(file, position, step.value);
          yield { rowGroup: position, rowOffset: 0, batch: step.value };
          signal?.throwIfAborted();
        }
        position++;
      }
    } finally {
      await iterator.return?.();
    }
  } finally {
    await handle.close();
  }
}
