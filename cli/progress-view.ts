import type { createLogUpdate } from 'log-update';
import prettyBytes from 'pretty-bytes';
import type { Logger } from '../common/index.js';
import type { BackupProgress, IngestProgress, RestoreProgress } from '../jobs/index.js';

/** One piece of a job being worked on now (an ingest child: a file or some of its row groups). */
export interface RunningPart {
  name: string;
  rowsDone: number;
  rowsTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

/** What the progress view draws, whichever job it follows: ingest, backup or restore. */
export interface ProgressSnapshot {
  rowsDone: number;
  rowsTotal: number;
  /** `rowsTotal` is an estimate (a backup counts partitions at the snapshots); drawn as `~N`. */
  rowsTotalApprox?: boolean;
  /** Bytes done and in all, when the job knows them (ingest: input file bytes); omitted = not drawn. */
  bytes?: { done: number; total: number; perSecond: number };
  rowsPerSecond: number;
  /** Seconds left; undefined until there is a rate. */
  etaSeconds: number | undefined;
  /** What the job is cut into, e.g. `{ noun: 'files', done: 2, failed: 1, total: 5 }`. */
  parts: { noun: 'files' | 'shards'; done: number; failed: number; total: number };
  /** Pieces being worked on now, each drawn with its own bar. */
  running?: readonly RunningPart[];
}

/** An ingest's progress as the view draws it. */
export function ingestSnapshot(p: IngestProgress): ProgressSnapshot {
  return {
    rowsDone: p.rowsDone,
    rowsTotal: p.rowsTotal,
    bytes: { done: p.bytesDone, total: p.bytesTotal, perSecond: p.bytesPerSecond },
    rowsPerSecond: p.rowsPerSecond,
    etaSeconds: p.etaSeconds,
    parts: { noun: 'files', done: p.filesDone, failed: p.filesFailed, total: p.files },
    running: p.running,
  };
}

/** A backup's progress as the view draws it (its row total is the snapshots' approximate count). */
export function backupSnapshot(p: BackupProgress): ProgressSnapshot {
  return { ...shardJob(p), rowsTotalApprox: true };
}

/** A restore's progress as the view draws it. */
export function restoreSnapshot(p: RestoreProgress): ProgressSnapshot {
  return shardJob(p);
}

function shardJob(p: BackupProgress | RestoreProgress): ProgressSnapshot {
  return { rowsDone: p.rowsDone, rowsTotal: p.rowsTotal, rowsPerSecond: p.rowsPerSecond, etaSeconds: p.etaSeconds, parts: { noun: 'shards', done: p.shardsDone, failed: p.shardsFailed, total: p.shards } };
}

/** Options of `formatProgressLines`. */
export interface ProgressLinesOptions {
  /** Terminal columns; lines never exceed it. Default 100. */
  columns?: number;
  /** Running parts shown with a bar each; the rest are counted in one line. Default 8. */
  maxFileBars?: number;
}

/** `width` cells filled to `fraction` (clamped to 0–1). */
export function progressBar(fraction: number, width: number): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const full = Math.floor(f * width);
  return '█'.repeat(full) + '░'.repeat(width - full);
}

/** Counts compactly: 950, 12.3k, 4.17M. */
export function formatCount(n: number): string {
  if (n < 1000) return String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 2 : 1)}k`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)}M`;
}

/** Seconds as 45s, 3m05s, 2h07m; '?' when unknown. */
export function formatEta(seconds: number | undefined): string {
  if (seconds === undefined) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function percent(done: number, total: number): string {
  return `${(total > 0 ? Math.min(100, (done / total) * 100) : 100).toFixed(1).padStart(5)}%`;
}

function fit(line: string, columns: number): string {
  return line.length <= columns ? line : `${line.slice(0, Math.max(0, columns - 1))}…`;
}

/**
 * Progress as terminal lines: a total bar with rows (bytes where known), rate, ETA and parts, then a
 * bar per running part. Pure, so the layout is tested without a terminal.
 */
export function formatProgressLines(p: ProgressSnapshot, options: ProgressLinesOptions = {}): string[] {
  const columns = Math.max(40, options.columns ?? 100);
  const maxFileBars = options.maxFileBars ?? 8;
  const barWidth = Math.max(10, Math.min(30, columns - 70));
  const fraction = p.rowsTotal > 0 ? p.rowsDone / p.rowsTotal : 1;
  const { noun, done, failed, total } = p.parts;
  const parts = `${noun} ${done + failed}/${total}${failed ? ` (${failed} failed)` : ''}`;
  const bytes = p.bytes ? `${prettyBytes(p.bytes.done)}/${prettyBytes(p.bytes.total)}  ` : '';
  const byteRate = p.bytes ? `${prettyBytes(p.bytes.perSecond)}/s  ` : '';
  const running = p.running ?? [];
  const lines = [
    fit(
      `total ${progressBar(fraction, barWidth)} ${percent(p.rowsDone, p.rowsTotal)}  ${formatCount(p.rowsDone)}/${p.rowsTotalApprox ? '~' : ''}${formatCount(p.rowsTotal)} rows  ` +
        `${bytes}${formatCount(p.rowsPerSecond)} rows/s  ${byteRate}ETA ${formatEta(p.etaSeconds)}  ${parts}`,
      columns,
    ),
  ];
  for (const part of running.slice(0, maxFileBars)) {
    const f = part.rowsTotal > 0 ? part.rowsDone / part.rowsTotal : 0;
    lines.push(fit(`  ${progressBar(f, barWidth)} ${percent(part.rowsDone, part.rowsTotal)}  ${formatCount(part.rowsDone)}/${formatCount(part.rowsTotal)} rows  ${prettyBytes(part.bytesDone)}/${prettyBytes(part.bytesTotal)}  ${part.name}`, columns));
  }
  if (running.length > maxFileBars) lines.push(`  … and ${running.length - maxFileBars} more running`);
  return lines;
}

/** Where progress goes: a terminal stream (redrawn in place) or, off a terminal, nowhere (it is logged). */
export interface ProgressOutput {
  isTTY?: boolean;
  columns?: number;
  rows?: number;
  write(text: string): unknown;
}

/** Options of `ProgressView`. */
export interface ProgressViewOptions {
  /** The job, for the log message: "ingest progress", "backup progress", "restore progress". */
  what: 'ingest' | 'backup' | 'restore';
  /** Off a terminal: at most one log line per this many ms. Default 5000. */
  logIntervalMs?: number;
}

/**
 * Shows progress: on a terminal log-update redraws the lines in place (changed lines only, the cursor
 * hidden meanwhile); elsewhere one structured log line every `logIntervalMs`. `done()` leaves the last
 * drawing on screen and the cursor below it. Made with `open`, which loads log-update only for a
 * terminal (~75 ms of CPU at the start of every command that shows progress, scripts included).
 */
export class ProgressView {
  readonly #out: ProgressOutput;
  readonly #logger: Logger;
  readonly #what: ProgressViewOptions['what'];
  readonly #logIntervalMs: number;
  #draw: ReturnType<typeof createLogUpdate> | undefined;
  #lastLogMs = Number.NEGATIVE_INFINITY;

  static async open(out: ProgressOutput, logger: Logger, options: ProgressViewOptions): Promise<ProgressView> {
    const drawing = out.isTTY ? (await import('log-update')).createLogUpdate : undefined;
    return new ProgressView(out, logger, options, drawing);
  }

  private constructor(out: ProgressOutput, logger: Logger, options: ProgressViewOptions, private readonly drawing: typeof createLogUpdate | undefined) {
    this.#out = out;
    this.#logger = logger;
    this.#what = options.what;
    this.#logIntervalMs = options.logIntervalMs ?? 5000;
  }

  show(p: ProgressSnapshot, nowMs = Date.now()): void {
    if (this.drawing !== undefined) {
      this.#draw ??= this.drawing(this.#out as unknown as NodeJS.WritableStream, { defaultWidth: 100 });
      this.#draw(formatProgressLines(p, { columns: this.#out.columns }).join('\n'));
      return;
    }
    if (nowMs - this.#lastLogMs < this.#logIntervalMs) return;
    this.#lastLogMs = nowMs;
    this.#logger.info(logFields(p), `${this.#what} progress`);
  }

  /** Keeps the last drawing and shows the cursor again; idempotent. */
  done(): void {
    this.#draw?.done();
    this.#draw = undefined;
  }
}

/** The snapshot as log fields, named as each job's progress always was (filesDone, shardsFailed, …). */
function logFields(p: ProgressSnapshot): Record<string, unknown> {
  const { noun, done, failed, total } = p.parts;
  return {
    rowsDone: p.rowsDone,
    rowsTotal: p.rowsTotal,
    ...(p.bytes ? { bytesDone: p.bytes.done, bytesTotal: p.bytes.total, bytesPerSecond: p.bytes.perSecond } : {}),
    [`${noun}Done`]: done,
    [`${noun}Failed`]: failed,
    [noun]: total,
    rowsPerSecond: p.rowsPerSecond,
    etaSeconds: p.etaSeconds,
    ...(p.running ? { running: p.running.map((r) => ({ file: r.name, rowsDone: r.rowsDone, rowsTotal: r.rowsTotal })) } : {}),
  };
}
