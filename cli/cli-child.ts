import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { childProcessEnv, type Logger } from '../common/index.js';

const CLI_ENTRY = fileURLToPath(new URL('./main.js', import.meta.url));

/** How `startCliChild` follows the child's stdout. */
export interface CliChildEvents {
  /** The `{"event": …}` line that means started. Default "ready". */
  readyEvent?: string;
  /** Called with every JSON line the child prints on stdout (before and after it is ready). */
  onEvent?: (event: Record<string, unknown>) => void;
}

/**
 * Runs `shardpipe ARGS` as a child process and resolves once it prints its `{"event":"ready"}`
 * line (or `events.readyEvent`). Its stderr goes to `logger`; if it exits first, the error carries the end of its stderr.
 */
export async function startCliChild(args: readonly string[], what: string, logger: Logger, env: Readonly<Record<string, string>> = {}, events: CliChildEvents = {}): Promise<ChildProcess> {
  // Secrets go in the environment, never in argv (which `ps` shows).
  const child = spawn(process.execPath, [CLI_ENTRY, ...args, '--log-format', 'json', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], env: childProcessEnv(env) });
  let stderr = '';
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr = (stderr + line + '\n').slice(-4000);
    logger.warn({ line }, `${what} says`);
  });
  await new Promise<void>((resolve, reject) => {
    const readyLine = `"event":"${events.readyEvent ?? 'ready'}"`;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (events.onEvent !== undefined && line.startsWith('{')) {
        try {
          events.onEvent(JSON.parse(line) as Record<string, unknown>);
        } catch (err) {
          logger.warn({ err, line }, `${what} printed a line that is not JSON`);
        }
      }
      if (line.includes(readyLine)) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`${what} exited (${signal ?? code}) before it was ready: ${stderr.trim() || 'no output'}`)));
  });
  return child;
}

/** SIGTERM, then waits for the exit (a child that already exited is fine). */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}
