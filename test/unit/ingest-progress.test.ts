import { describe, expect, it } from 'vitest';
import { ProgressView, backupSnapshot, formatEta, formatProgressLines, ingestSnapshot, progressBar, restoreSnapshot } from '../../cli/progress-view.js';
import { createLogger } from '../../common/index.js';
import type { FileCheckpoint } from '../../ingest/index.js';
import { ProgressTracker, childProgress, type ChildSnapshot, type IngestProgress } from '../../jobs/index.js';

const checkpoint = (rowGroup: number, rowOffset: number, rowsDone: number): FileCheckpoint => ({
  fingerprint: 'f', rowGroup, rowOffset, rowsDone, rowsIngested: rowsDone, rowsRejected: 0, bytesIngested: 0, rowsOutOfOrder: 0,
});

describe('childProgress', () => {
  const task = { rowGroupStart: 4, rowsTotal: 300, bytesTotal: 6000, groupSizes: [{ rows: 100, bytes: 1000 }, { rows: 100, bytes: 2000 }, { rows: 100, bytes: 3000 }] };

  it('counts whole row groups before the checkpoint and the done share of the current one', () => {
    expect(childProgress(task, undefined)).toEqual({ rowsDone: 0, rowsTotal: 300, bytesDone: 0, bytesTotal: 6000 });
    expect(childProgress(task, checkpoint(4, 50, 50))).toEqual({ rowsDone: 50, rowsTotal: 300, bytesDone: 500, bytesTotal: 6000 });
    expect(childProgress(task, checkpoint(5, 100, 200))).toEqual({ rowsDone: 200, rowsTotal: 300, bytesDone: 3000, bytesTotal: 6000 });
    expect(childProgress(task, checkpoint(6, 100, 300))).toEqual({ rowsDone: 300, rowsTotal: 300, bytesDone: 6000, bytesTotal: 6000 });
  });

  it('reports no bytes for a child planned before byte sizes existed', () => {
    expect(childProgress({ rowGroupStart: 0, rowsTotal: 10 }, checkpoint(0, 5, 5))).toEqual({ rowsDone: 5, rowsTotal: 10, bytesDone: 0, bytesTotal: 0 });
  });
});

describe('ProgressTracker', () => {
  const child = (index: number, state: ChildSnapshot['state'], rowsDone?: number, bytesDone?: number): ChildSnapshot => ({
    index, name: `part-${index}`, rowsTotal: 100, bytesTotal: 1000, state,
    progress: rowsDone === undefined ? undefined : { rowsDone, bytesDone },
  });

  it('never goes backwards: a retried child starting over, or a child missing from a poll, keeps its best', () => {
    const tracker = new ProgressTracker({ rowsTotal: 200, bytesTotal: 2000, files: 2 });
    const seen: IngestProgress[] = [];
    seen.push(tracker.update([child(0, 'running', 40, 400), child(1, 'waiting')], 0));
    seen.push(tracker.update([child(0, 'running', 10, 100), child(1, 'running', 20, 200)], 1000)); // child 0 retried from scratch
    seen.push(tracker.update([child(1, 'running', 30, 300)], 2000)); // child 0 not read this time
    seen.push(tracker.update([child(0, 'done', 90, 900), child(1, 'running', 30, 300)], 3000)); // done: all its rows count
    for (let i = 1; i < seen.length; i++) {
      expect(seen[i]!.rowsDone).toBeGreaterThanOrEqual(seen[i - 1]!.rowsDone);
      expect(seen[i]!.bytesDone).toBeGreaterThanOrEqual(seen[i - 1]!.bytesDone);
    }
    expect(seen.map((p) => p.rowsDone)).toEqual([40, 60, 70, 130]);
    expect(seen.at(-1)).toMatchObject({ bytesDone: 1300, filesDone: 1, running: [{ name: 'part-1', rowsDone: 30, bytesDone: 300 }] });
  });

  it('measures rate and ETA from the first poll, so rows done before a resume do not inflate them', () => {
    const tracker = new ProgressTracker({ rowsTotal: 1000, bytesTotal: 10_000, files: 1 });
    const first = tracker.update([child(0, 'running', 500, 5000)], 10_000);
    expect(first.rowsPerSecond).toBe(0);
    expect(first.etaSeconds).toBeUndefined();
    const later = tracker.update([child(0, 'running', 600, 6000)], 12_000);
    expect(later).toMatchObject({ rowsDone: 600, rowsPerSecond: 50, bytesPerSecond: 500, etaSeconds: 8 });
  });
});

describe('progress lines', () => {
  const progress: IngestProgress = {
    rowsDone: 4_170_000, rowsTotal: 9_225_225, bytesDone: 463e6, bytesTotal: 1.025e9, filesDone: 2, filesFailed: 1, files: 5,
    rowsPerSecond: 71_234, bytesPerSecond: 7.9e6, etaSeconds: 71,
    running: [
      { name: 'part-00000.parquet [row groups 32–63]', rowsDone: 1_600_000, rowsTotal: 2_000_000, bytesDone: 177e6, bytesTotal: 222e6 },
      { name: 'part-00001.parquet', rowsDone: 0, rowsTotal: 2_000_000, bytesDone: 0, bytesTotal: 222e6 },
    ],
  };

  it('draws a total bar with rows, bytes, rate, ETA and files, then a bar per running file', () => {
    const lines = formatProgressLines(ingestSnapshot(progress), { columns: 200 });
    expect(lines).toHaveLength(3);
    // Bytes by pretty-bytes: three significant digits, trailing zeros dropped (7.9 MB, not 7.90 MB).
    expect(lines[0]).toBe(`total ${progressBar(4_170_000 / 9_225_225, 30)}  45.2%  4.17M/9.23M rows  463 MB/1.02 GB  71.2k rows/s  7.9 MB/s  ETA 1m11s  files 3/5 (1 failed)`);
    expect(lines[1]).toBe(`  ${'█'.repeat(24)}${'░'.repeat(6)}  80.0%  1.60M/2.00M rows  177 MB/222 MB  part-00000.parquet [row groups 32–63]`);
    expect(lines[2]).toContain('  0.0%');
  });

  it('fits narrow terminals and caps the file bars', () => {
    const many = { ...progress, running: Array.from({ length: 12 }, (_, i) => ({ ...progress.running[1]!, name: `part-${i}` })) };
    const lines = formatProgressLines(ingestSnapshot(many), { columns: 60, maxFileBars: 3 });
    expect(lines).toHaveLength(5);
    expect(lines.at(-1)).toBe('  … and 9 more running');
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(60);
  });

  it('formats units', () => {
    expect([progressBar(0, 4), progressBar(0.5, 4), progressBar(2, 4), progressBar(Number.NaN, 4)]).toEqual(['░░░░', '██░░', '████', '░░░░']);
    expect([formatEta(undefined), formatEta(45), formatEta(185), formatEta(7620)]).toEqual(['?', '45s', '3m05s', '2h07m']);
  });

  it('on a terminal redraws in place: the first drawing as it is, then only what changed, over the old lines', async () => {
    const written: string[] = [];
    const view = await ProgressView.open({ isTTY: true, columns: 200, rows: 40, write: (t: string) => written.push(t) }, createLogger({ level: 'silent', pretty: false }), { what: 'ingest' });
    view.show(ingestSnapshot(progress));
    view.show(ingestSnapshot({ ...progress, rowsDone: 5_000_000, running: [] }));
    view.done();
    // Synchronized output (DEC 2026) around each frame, so a terminal never shows half a redraw.
    const frame = (t: string): string => t.replace(/^\x1b\[\?2026h/, '').replace(/\x1b\[\?2026l$/, '');
    const first = frame(written[0]!);
    expect(first.startsWith('total ')).toBe(true);
    expect(first.split('\n')).toHaveLength(4);
    // Three lines drawn before (and the cursor on the line below): each erased on the way up, then the new total line; nothing below it.
    const second = frame(written[1]!);
    expect(second.startsWith(`${'\x1b[2K\x1b[1A'.repeat(3)}\x1b[2K\x1b[Gtotal `)).toBe(true);
    expect(second.split('\n')).toHaveLength(2);
    expect(second).toContain('5.00M/9.23M rows');
    expect(second).not.toContain('part-00000');
  });

  it('draws backups and restores with the same bars: shards as parts, no bytes, an approximate backup total', () => {
    const shardProgress = { rowsDone: 250, rowsTotal: 1000, shardsDone: 1, shardsFailed: 1, shards: 4, rowsPerSecond: 50, etaSeconds: 15 };
    const [backup] = formatProgressLines(backupSnapshot(shardProgress), { columns: 200 });
    expect(backup).toBe(`total ${progressBar(0.25, 30)}  25.0%  250/~1.00k rows  50 rows/s  ETA 15s  shards 2/4 (1 failed)`);
    const [restore] = formatProgressLines(restoreSnapshot(shardProgress), { columns: 200 });
    expect(restore).toBe(`total ${progressBar(0.25, 30)}  25.0%  250/1.00k rows  50 rows/s  ETA 15s  shards 2/4 (1 failed)`);
  });

  it('logs backup progress off a terminal with the fields it always had', async () => {
    const logged: Array<[unknown, unknown]> = [];
    const logger = createLogger({ level: 'silent', pretty: false });
    logger.info = ((obj: unknown, msg: unknown) => logged.push([obj, msg])) as unknown as typeof logger.info;
    (await ProgressView.open({ isTTY: false, write: () => 0 }, logger, { what: 'backup' })).show(backupSnapshot({ rowsDone: 5, rowsTotal: 10, shardsDone: 1, shardsFailed: 0, shards: 2, rowsPerSecond: 5, etaSeconds: 1 }), 0);
    expect(logged).toEqual([[{ rowsDone: 5, rowsTotal: 10, shardsDone: 1, shardsFailed: 0, shards: 2, rowsPerSecond: 5, etaSeconds: 1 }, 'backup progress']]);
  });

  it('elsewhere logs structured lines, at most one per interval', async () => {
    const logged: unknown[] = [];
    const logger = createLogger({ level: 'silent', pretty: false });
    logger.info = ((obj: unknown) => logged.push(obj)) as typeof logger.info;
    const view = await ProgressView.open({ isTTY: false, write: () => { throw new Error('no drawing off a terminal'); } }, logger, { what: 'ingest', logIntervalMs: 5000 });
    view.show(ingestSnapshot(progress), 0);
    view.show(ingestSnapshot(progress), 1000);
    view.show(ingestSnapshot(progress), 6000);
    expect(logged).toHaveLength(2);
    expect(logged[0]).toMatchObject({ rowsDone: 4_170_000, bytesDone: 463e6, bytesTotal: 1.025e9, etaSeconds: 71, running: [{ file: 'part-00000.parquet [row groups 32–63]' }, { file: 'part-00001.parquet' }] });
  });
});
