import { setTimeout as sleep } from 'node:timers/promises';
import { PackedRows, bulkPutCheckpointed, type CheckpointedChunk, type StoreClient } from '../store/index.js';
import { BatchBufferPool } from '../common/index.js';
import { assertFileNotEmpty, type DropFile } from './drop-scanner.js';
import { IngestError } from './ingest-errors.js';
import { readRecordBatches } from './file-reading.js';
import type { RejectsWriter } from './rejects-writer.js';
import { createRowMapper } from './row-mapper.js';

/**
 * Where a file's ingest stands: the next input row to read, and counts so far. Bound to the file's
 * fingerprint so a changed file never reuses it.
 */
export interface FileCheckpoint {
  fingerprint: string;
  /** Next row group to read, and the row within it. */
  rowGroup: number;
  rowOffset: number;
  /** Input rows done: ingested plus rejected. */
  rowsDone: number;
  rowsIngested: number;
  rowsRejected: number;
  /** Key and value bytes ingested. */
  bytesIngested: number;
  /** Rows whose key was below the previous row's key. */
  rowsOutOfOrder: number;
}

/** A file, or a range of its row groups, to ingest. */
export interface FileTask {
  file: DropFile;
  rowGroupStart: number;
  /** Exclusive. */
  rowGroupEnd: number;
}

export interface FileIngestOptions {
  keyColumn: string;
  valueColumn?: string;
  maxKeyBytes?: number;
  maxValueBytes?: number;
  /** Where rejected rows are written. Required. */
  rejects: RejectsWriter;
  /** Continue from here (ignored when its fingerprint is not the file's). */
  resumeFrom?: FileCheckpoint;
  /** Fail on the first row whose key is below the previous one. Default false. */
  strictOrder?: boolean;
  /** BulkInsert calls in flight. Default: bulkPutAll's (DEFAULT_BULK_MAX_IN_FLIGHT). */
  maxInFlight?: number;
  /**
   * Rows per BulkInsert call at most. Default: bulkPutAll's (DEFAULT_BULK_BATCH_MAX_ROWS); a
   * decoded batch (8192 rows by default) goes out as one call when it fits its byte limit.
   */
  batchMaxRows?: number;
  /** Throttle; 0 or absent = unlimited. */
  maxRowsPerSecond?: number;
  /**
   * Called (one at a time, newest wins) whenever the durably written prefix of the input grows —
   * the place to persist the checkpoint.
   */
  onCheckpoint?: (checkpoint: FileCheckpoint) => Promise<void>;
  /**
   * Asked before each record batch is read: an error it returns ends the file the way a read failure
   * does — every batch read before is written and checkpointed, then the error is thrown — so the
   * checkpoint still counts exactly what the store holds (a reject budget found exceeded at a
   * checkpoint, while later batches were in flight).
   */
  stopWhen?: () => Error | undefined;
  signal?: AbortSignal;
}

/**
 * Buffers of mapped batches, shared by the files this process ingests (on one thread): each file
 * has up to maxInFlight (4) batches in flight plus the one being mapped; 8 free buffers are what
 * the default two files give back between takes. Only batches of at most 4 MiB are kept (a file of
 * huge rows does not pin its buffers).
 */
const BATCH_BUFFERS = new BatchBufferPool({ maxFree: 8, maxBytes: 4 * 1024 * 1024 });

/**
 * Ingests one file (or row-group range): record batches → rows and rejects → bulkPutAll, with
 * a checkpoint after every acknowledged stretch. Resuming from a checkpoint re-sends at most the
 * rows that were in flight when it was taken.
 */
export async function ingestFile(client: StoreClient, task: FileTask, options: FileIngestOptions): Promise<FileCheckpoint> {
  const { file } = task;
  assertFileNotEmpty(file);
  const resume = options.resumeFrom?.fingerprint === file.fingerprint ? options.resumeFrom : undefined;
  const current: FileCheckpoint = resume ?? {
    fingerprint: file.fingerprint,
    rowGroup: task.rowGroupStart,
    rowOffset: 0,
    rowsDone: 0,
    rowsIngested: 0,
    rowsRejected: 0,
    bytesIngested: 0,
    rowsOutOfOrder: 0,
  };
  const mapper = createRowMapper({
    keyColumn: options.keyColumn,
    valueColumn: options.valueColumn,
    maxKeyBytes: options.maxKeyBytes,
    maxValueBytes: options.maxValueBytes,
    partitionValues: file.partitionValues,
  });
  async function* chunks(): AsyncGenerator<CheckpointedChunk<FileCheckpoint>> {
    let sent = 0;
    let previousKey: Buffer | undefined;
    let counts = { ...current };
    const started = performance.now();
    let groupOffset = 0;
    let group = -1;
    // The mapper copies what it keeps (rows into pooled buffers, keys, rejects): each decoded batch's
    // memory can go as soon as the next is asked for, and the next row group can wait for this one's end.
    for await (const { rowGroup, batch } of readRecordBatches(file, { rowGroupStart: current.rowGroup, rowGroupEnd: task.rowGroupEnd, signal: options.signal, releaseBatches: true, readAhead: 'late' })) {
      const stop = options.stopWhen?.();
      if (stop !== undefined) throw stop;
      if (rowGroup !== group) {
        group = rowGroup;
        groupOffset = 0;
      }
      const batchStart = groupOffset;
      groupOffset += batch.numRows;
      // Rows before the checkpoint were written by an earlier attempt.
      const skip = resume && rowGroup === resume.rowGroup ? Math.max(0, resume.rowOffset - batchStart) : 0;
      if (skip >= batch.numRows) continue;
      const mapped = mapper.mapBatchPacked(skip > 0 ? batch.slice(skip) : batch, { file: file.relativePath, rowGroup, rowOffset: batchStart + skip }, previousKey, BATCH_BUFFERS);
      const { rejects, outOfOrder } = mapped;
      if (rejects.length > 0) await options.rejects.write(rejects);
      if (outOfOrder > 0 && options.strictOrder) {
        const { key, previousKey: before } = mapped.firstOutOfOrder!;
        throw new IngestError('INGEST_OUT_OF_ORDER', `${file.relativePath}: row group ${rowGroup}: key ${key.toString('hex')} is below the previous key ${before.toString('hex')} and --strict-order is set`, {
          context: { file: file.relativePath, rowGroup },
        });
      }
      previousKey = mapped.lastKey;
      const bytes = mapped.rows.bytes;
      // Disorder inside a batch would cut it into tiny BulkInsert calls: send the batch sorted
      // (stable, so a key's later row still wins). Disorder between batches stays as it is.
      const rows = outOfOrder > 0 ? PackedRows.fromRows(mapped.rows.toRows().sort((a, b) => Buffer.compare(a.key, b.key))) : mapped.rows;
      // A sorted copy leaves the mapped batch unread; otherwise it is released once acknowledged.
      if (rows !== mapped.rows) mapped.release();
      sent += rows.count;
      counts = {
        ...counts,
        rowGroup,
        rowOffset: groupOffset,
        rowsDone: counts.rowsDone + rows.count + rejects.length,
        rowsIngested: counts.rowsIngested + rows.count,
        bytesIngested: counts.bytesIngested + bytes,
        rowsRejected: counts.rowsRejected + rejects.length,
        rowsOutOfOrder: counts.rowsOutOfOrder + outOfOrder,
      };
      yield { rows, checkpoint: counts, release: rows === mapped.rows ? mapped.release : undefined };
      if (options.maxRowsPerSecond && options.maxRowsPerSecond > 0) {
        const aheadMs = (sent / options.maxRowsPerSecond) * 1000 - (performance.now() - started);
        if (aheadMs > 0) await sleep(aheadMs, undefined, { signal: options.signal });
      }
    }
  }

  return bulkPutCheckpointed(client, chunks(), {
    start: current,
    persist: options.onCheckpoint,
    maxInFlight: options.maxInFlight,
    batchMaxRows: options.batchMaxRows,
    signal: options.signal,
  });
}

