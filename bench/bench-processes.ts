import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';

// Child-process helpers shared by the benchmarks.
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;

/** Resolves on the node's `{"event":"ready"}` line; rejects if it exits or takes too long first. */
export function waitForReady(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`store node gave no ready line within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`store node exited (code ${code}) before it was ready`));
    };
    child.once('exit', onExit);
    lines.on('line', (line) => {
      if (!isReadyLine(line)) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      resolve();
    });
  });
}

function isReadyLine(line: string): boolean {
  try {
    return (JSON.parse(line) as { event?: unknown }).event === 'ready';
  } catch {
    return false;
  }
}

export async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    process.stderr.write(`child process ${child.pid} did not stop within ${STOP_TIMEOUT_MS} ms of SIGTERM; killing it\n`);
    child.kill('SIGKILL');
  }, STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
  if (child.exitCode !== 0) process.stderr.write(`child process ${child.pid} exited with code ${child.exitCode ?? child.signalCode}\n`);
}

/** Peak resident set size (VmHWM) of a live process, where /proc is available. */
export function readPeakRssMb(pid: number): Promise<number | undefined> {
  return readStatusMb(pid, 'VmHWM');
}

/** Current resident set size (VmRSS) of a live process, where /proc is available. */
export function readRssMb(pid: number): Promise<number | undefined> {
  return readStatusMb(pid, 'VmRSS');
}

async function readStatusMb(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number | undefined> {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

// Linux reports CPU times in /proc in clock ticks; USER_HZ is 100 on every mainstream kernel build.
const CLOCK_TICKS_PER_SECOND = 100;

/** User + system CPU seconds a live process has used so far (/proc/PID/stat utime + stime). */
export async function readCpuSeconds(pid: number): Promise<number | undefined> {
  const fields = await statFields(`/proc/${pid}/stat`);
  return fields === undefined ? undefined : (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/**
 * User + system CPU seconds of this process's children that have exited and been waited for
 * (/proc/self/stat cutime + cstime). The difference across one child's life is that child's CPU
 * time, exactly, provided no other child exits meanwhile.
 */
export async function reapedChildrenCpuSeconds(): Promise<number> {
  const fields = await statFields('/proc/self/stat');
  return fields === undefined ? Number.NaN : (Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS_PER_SECOND;
}

/** Peak RSS (VmHWM) of this process. */
export async function selfPeakRssMb(): Promise<number | undefined> {
  return readStatusMb(process.pid, 'VmHWM');
}

/** This process's user + system CPU seconds. */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** The fields of a /proc stat line after the command name (which may hold spaces): index 0 is the state. */
async function statFields(path: string): Promise<string[] | undefined> {
  try {
    const text = await readFile(path, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).trim().split(' ');
  } catch {
    return undefined;
  }
}
