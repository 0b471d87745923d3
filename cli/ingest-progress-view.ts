import type { Logger } from '../common/index.js';
import type { IngestProgress } from '../jobs/index.js';

/** Options of `formatProgressLines`. */
export interface ProgressLinesOptions {
  /** Terminal columns; lines never exceed it. Default 100. */
  columns?: number;
  /** Running files shown with a bar each; the rest are counted in one line. Default 8. */
  maxFileBars?: number;
}

const BAR_FULL = '█';
const BAR_EMPTY = '░';

/** `width` cells filled to `fraction` (clamped to 0–1). */
export function progressBar(fraction: number, width: number): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const full = Math.floor(f * width);
  return BAR_FULL.repeat(full) + BAR_EMPTY.repeat(width - full);
}

/** Bytes in decimal units, as disks and `ls -h --si` count them: 999 B, 1.5 kB, 463 MB, 1.02 GB. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
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
 * The progress of an ingest as terminal lines: a total bar with rows, bytes, rate and ETA, then a bar
 * per running file. Pure, so the layout is tested without a terminal.
 */
export function formatProgressLines(p: IngestProgress, options: ProgressLinesOptions = {}): string[] {
  const columns = Math.max(40, options.columns ?? 100);
  const maxFileBars = options.maxFileBars ?? 8;
  const barWidth = Math.max(10, Math.min(30, columns - 70));
  const fraction = p.rowsTotal > 0 ? p.rowsDone / p.rowsTotal : 1;
  const files = `files ${p.filesDone + p.filesFailed}/${p.files}${p.filesFailed ? ` (${p.filesFailed} failed)` : ''}`;
  const lines = [
    fit(
      `total ${progressBar(fraction, barWidth)} ${percent(p.rowsDone, p.rowsTotal)}  ${formatCount(p.rowsDone)}/${formatCount(p.rowsTotal)} rows  ` +
        `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}  ${formatCount(p.rowsPerSecond)} rows/s  ${formatBytes(p.bytesPerSecond)}/s  ETA ${formatEta(p.etaSeconds)}  ${files}`,
      columns,
    ),
  ];
  for (const file of p.running.slice(0, maxFileBars)) {
    const f = file.rowsTotal > 0 ? file.rowsDone / file.rowsTotal : 0;
    lines.push(fit(`  ${progressBar(f, barWidth)} ${percent(file.rowsDone, file.rowsTotal)}  ${formatCount(file.rowsDone)}/${formatCount(file.rowsTotal)} rows  ${formatBytes(file.bytesDone)}/${formatBytes(file.bytesTotal)}  ${file.name}`, columns));
  }
  if (p.running.length > maxFileBars) lines.push(`  … and ${p.running.length - maxFileBars} more running`);
  return lines;
}

/** Where progress goes: a terminal stream (redrawn in place) or the log. */
export interface ProgressOutput {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

/**
 * Shows progress: on a terminal it redraws the bars in place (cursor up over the previous drawing);
 * elsewhere it logs one structured line every `logIntervalMs` (default 5000).
 */
export class ProgressView {
  #drawn = 0;
  #lastLogMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly out: ProgressOutput,
    private readonly logger: Logger,
    private readonly logIntervalMs = 5000,
  ) {}

  show(p: IngestProgress, nowMs = Date.now()): void {
    if (this.out.isTTY) {
      const lines = formatProgressLines(p, { columns: this.out.columns });
      // Back to the first line drawn last time, then each line cleared and redrawn; leftovers below cleared.
      const up = this.#drawn > 0 ? `\x1b[${this.#drawn}A\r` : '';
      this.out.write(`${up}${lines.map((l) => `\x1b[2K${l}\n`).join('')}\x1b[J`);
      this.#drawn = lines.length;
      return;
    }
    if (nowMs - this.#lastLogMs < this.logIntervalMs) return;
    this.#lastLogMs = nowMs;
    const { running, ...totals } = p;
    this.logger.info({ ...totals, running: running.map((r) => ({ file: r.name, rowsDone: r.rowsDone, rowsTotal: r.rowsTotal })) }, 'ingest progress');
  }
}
