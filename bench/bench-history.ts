import { execFileSync } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import type { Figure } from './bench-stats.js';

// bench/history/: one JSON file per suite run (every figure with its samples), one Markdown summary
// beside it. File names start with the UTC start time, so name order is run order.

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
  /** 1-minute load average when the run started and when it ended: how busy the shared machine was. */
  loadAverage: { start: number; end: number };
}

export interface SuiteRun {
  suite: 'shardpipe-bench';
  formatVersion: 1;
  mode: 'quick' | 'full';
  startedAt: string;
  durationSec: number;
  commit: string;
  machine: Machine;
  /** The data set and sizes of this run. */
  dataSet: Record<string, unknown>;
  repetitions: number;
  figures: Figure[];
  notes: string[];
}

export function machineInfo(loadAtStart: number): Machine {
  const c = cpus();
  return {
    cpuModel: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadAverage: { start: loadAtStart, end: loadavg()[0]! },
  };
}

/** HEAD's commit, with `-dirty` when the work tree has uncommitted changes to tracked files. */
export function gitCommit(cwd: string): string {
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head}-dirty` : head;
  } catch {
    return 'unknown';
  }
}

export function runFileStem(run: SuiteRun): string {
  return `${run.startedAt.replace(/[:.]/g, '-')}-${run.mode}`;
}

/** Writes `<stem>.json` and `<stem>.md` into `dir`; resolves the JSON path. */
export async function saveRun(dir: string, run: SuiteRun, markdown: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const stem = runFileStem(run);
  await writeFile(join(dir, `${stem}.json`), JSON.stringify(run, roundForJson, 2) + '\n');
  await writeFile(join(dir, `${stem}.md`), markdown);
  return join(dir, `${stem}.json`);
}

function roundForJson(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isInteger(value) ? Number(value.toPrecision(6)) : value;
}

/** Every recorded run in `dir`, oldest first. */
export async function loadRuns(dir: string): Promise<Array<{ file: string; run: SuiteRun }>> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
  } catch {
    return [];
  }
  const out: Array<{ file: string; run: SuiteRun }> = [];
  for (const name of names) {
    const run = JSON.parse(await readFile(join(dir, name), 'utf8')) as SuiteRun;
    if (run.suite === 'shardpipe-bench') out.push({ file: name, run });
  }
  return out;
}
