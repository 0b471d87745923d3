import type { FileCheckpoint } from '../ingest/index.js';

/** Rows and bytes of one row group, as the footer gives them (bytes: on disk, compressed). */
export interface GroupSize {
  rows: number;
  bytes: number;
}

/** What a file child reports as its BullMQ job progress. */
export interface ChildProgress {
  rowsDone: number;
  rowsTotal: number;
  /** Input file bytes done: whole row groups done plus the done share of the current one. */
  bytesDone: number;
  bytesTotal: number;
}

/**
 * A child's progress at a checkpoint. `groups` are the sizes of the child's row groups from
 * `rowGroupStart` on; the checkpoint names the row group it is in and the rows done within it.
 */
export function childProgress(
  task: { rowGroupStart: number; rowsTotal: number; bytesTotal?: number; groupSizes?: GroupSize[] },
  checkpoint: FileCheckpoint | undefined,
): ChildProgress {
  const bytesTotal = task.bytesTotal ?? 0;
  if (checkpoint === undefined) return { rowsDone: 0, rowsTotal: task.rowsTotal, bytesDone: 0, bytesTotal };
  let bytesDone = 0;
  const groups = task.groupSizes ?? [];
  for (let i = 0; i < groups.length; i++) {
    const group = groups[i]!;
    const index = task.rowGroupStart + i;
    if (index < checkpoint.rowGroup) bytesDone += group.bytes;
    else if (index === checkpoint.rowGroup && group.rows > 0) bytesDone += Math.round((group.bytes * Math.min(checkpoint.rowOffset, group.rows)) / group.rows);
  }
  return { rowsDone: checkpoint.rowsDone, rowsTotal: task.rowsTotal, bytesDone: Math.min(bytesDone, bytesTotal), bytesTotal };
}

/** One child job as the watcher sees it at a poll. */
export interface ChildSnapshot {
  /** Index of the child in the plan. */
  index: number;
  /** Display name: the file, with its row groups when the file is split over several children. */
  name: string;
  rowsTotal: number;
  bytesTotal: number;
  /** What the job's progress says now (absent: not started). */
  progress: Partial<ChildProgress> | undefined;
  state: 'waiting' | 'running' | 'done' | 'failed';
}

/** A running child in an `IngestProgress`. */
export interface RunningChild {
  name: string;
  rowsDone: number;
  rowsTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

/** A progress snapshot of an ingest. Rows and bytes never go backwards, also across resumes and retries. */
export interface IngestProgress {
  rowsDone: number;
  rowsTotal: number;
  /** Input file bytes (compressed, as on disk) done and in all, from the footers. */
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesFailed: number;
  files: number;
  /** Rows per second since watching began. */
  rowsPerSecond: number;
  /** Input bytes per second since watching began. */
  bytesPerSecond: number;
  /** Seconds left at that rate; undefined until there is a rate. */
  etaSeconds: number | undefined;
  /** Children being ingested now, in plan order. */
  running: RunningChild[];
}

/**
 * Turns successive polls of the children into progress that never goes backwards: each child's rows
 * and bytes are the most it ever reported (a retried child restarting from an older checkpoint, or a
 * job read mid-update, cannot pull the totals down). Rate and ETA are measured from the first poll,
 * so work done before a resume does not inflate the rate.
 */
export class ProgressTracker {
  readonly #best = new Map<number, { rows: number; bytes: number }>();
  readonly #rowsTotal: number;
  readonly #bytesTotal: number;
  readonly #files: number;
  #start: { atMs: number; rows: number; bytes: number } | undefined;
  #last: IngestProgress | undefined;

  constructor(totals: { rowsTotal: number; bytesTotal: number; files: number }) {
    this.#rowsTotal = totals.rowsTotal;
    this.#bytesTotal = totals.bytesTotal;
    this.#files = totals.files;
  }

  update(children: readonly ChildSnapshot[], nowMs: number): IngestProgress {
    let filesDone = 0;
    let filesFailed = 0;
    const running: RunningChild[] = [];
    for (const child of children) {
      const seen = this.#best.get(child.index) ?? { rows: 0, bytes: 0 };
      const best = {
        rows: Math.max(seen.rows, child.progress?.rowsDone ?? 0),
        bytes: Math.max(seen.bytes, child.progress?.bytesDone ?? 0),
      };
      // A child that finished did all its work, whatever its last progress update said.
      if (child.state === 'done') {
        best.rows = Math.max(best.rows, child.rowsTotal);
        best.bytes = Math.max(best.bytes, child.bytesTotal);
      }
      this.#best.set(child.index, best);
      if (child.state === 'done') filesDone++;
      else if (child.state === 'failed') filesFailed++;
      else if (child.state === 'running') running.push({ name: child.name, rowsDone: best.rows, rowsTotal: child.rowsTotal, bytesDone: best.bytes, bytesTotal: child.bytesTotal });
    }
    let rowsDone = 0;
    let bytesDone = 0;
    for (const b of this.#best.values()) {
      rowsDone += b.rows;
      bytesDone += b.bytes;
    }
    // Children missing from a poll keep what they reported before; totals never shrink.
    rowsDone = Math.max(rowsDone, this.#last?.rowsDone ?? 0);
    bytesDone = Math.max(bytesDone, this.#last?.bytesDone ?? 0);
    this.#start ??= { atMs: nowMs, rows: rowsDone, bytes: bytesDone };
    const seconds = (nowMs - this.#start.atMs) / 1000;
    const rate = seconds > 0 ? (rowsDone - this.#start.rows) / seconds : 0;
    const byteRate = seconds > 0 ? (bytesDone - this.#start.bytes) / seconds : 0;
    this.#last = {
      rowsDone,
      rowsTotal: this.#rowsTotal,
      bytesDone,
      bytesTotal: this.#bytesTotal,
      filesDone: Math.max(filesDone, this.#last?.filesDone ?? 0),
      filesFailed: Math.max(filesFailed, this.#last?.filesFailed ?? 0),
      files: this.#files,
      rowsPerSecond: Math.round(rate),
      bytesPerSecond: Math.round(byteRate),
      etaSeconds: rate > 0 ? Math.max(0, Math.round((this.#rowsTotal - rowsDone) / rate)) : undefined,
      running,
    };
    return this.#last;
  }
}
