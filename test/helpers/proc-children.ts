import { readFile } from 'node:fs/promises';

/** The pids of the live child processes of `pid` (Linux: /proc/PID/task/PID/children of its main thread). */
export async function childPids(pid: number): Promise<number[]> {
  return (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number);
}
