import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { CLI } from './store-cluster.js';

// A CLI command as a user runs it, with a token in SHARDPIPE_TOKEN (or none), and the JSON progress
// lines a waiting operation command writes on stderr when it is not on a terminal.

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a CLI command to completion with `token` (null: none). */
export async function runCli(args: string[], token: string | null): Promise<Run> {
  const child = spawnCli(args, token);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

export function spawnCli(args: string[], token: string | null): ChildProcess {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.SHARDPIPE_TOKEN;
  delete env.SHARDPIPE_TOKEN_FILE;
  if (token !== null) env.SHARDPIPE_TOKEN = token;
  return spawn(process.execPath, [CLI, ...args, '--log-format', 'json', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], env });
}

/** A waiting CLI command whose JSON progress lines on stderr can be awaited. */
export class Waiting {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly events: Array<Record<string, unknown>> = [];
  private waiters: Array<{ test: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }> = [];
  readonly exited: Promise<number | null>;

  constructor(token: string | null, args: string[]) {
    this.child = spawnCli(args, token);
    this.exited = once(this.child, 'exit').then(([code]) => code as number | null);
    this.child.stdout!.on('data', (d: Buffer) => (this.stdout += d.toString()));
    createInterface({ input: this.child.stderr! }).on('line', (line) => {
      this.stderr += `${line}\n`;
      if (!line.includes('"event":"operation-progress"')) return;
      const e = JSON.parse(line) as Record<string, unknown>;
      this.events.push(e);
      for (const w of this.waiters.filter((x) => x.test(e))) w.resolve(e);
      this.waiters = this.waiters.filter((x) => !x.test(e));
    });
  }

  /** The first progress line for which `test` holds; rejects if the command exits first. */
  progress(test: (e: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    const seen = this.events.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      this.waiters.push({ test, resolve });
      this.exited.then((code) => reject(new Error(`the command exited (${code}) before the progress line: ${this.stderr.slice(-2000)}`)));
    });
  }
}

