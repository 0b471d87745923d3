import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childPids } from '../helpers/proc-children.js';
import { CLI, StoreCluster, runCli } from '../helpers/store-cluster.js';
import { writeSparkDrop } from '../helpers/spark-drop.js';

const LIFECYCLE = resolve(import.meta.dirname, '../../dist/cli/cli-lifecycle.js');

const started: ChildProcess[] = [];
afterAll(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** A real process using the lifecycle with the real `process` signals; `hang` makes the last close never end. */
function lifecycleProcess(hang: boolean): ChildProcess {
  const script = `
    const { CliLifecycle } = await import(${JSON.stringify(LIFECYCLE)});
    const lifecycle = new CliLifecycle({ logger: () => ({ info() {}, error: (o, m) => console.log('error ' + o.component + ': ' + m) }) });
    const say = (line) => console.log(line);
    // Stands in for a server: something that keeps the process alive until it is closed.
    lifecycle.add('server', setInterval(() => {}, 1000), (timer) => clearInterval(timer));
    lifecycle.add('redis', 'redis', (n) => say('close ' + n));
    lifecycle.add('workers', 'workers', () => { say('close workers'); throw new Error('fault injection'); });
    lifecycle.add('view', 'view', (n) => { say('close ' + n); return ${hang ? 'new Promise(() => {})' : 'undefined'}; });
    say('ready');
    say('signal ' + (await lifecycle.untilSignal()));
    const clean = await lifecycle.close();
    say('clean ' + clean);
    process.exitCode = clean ? 0 : 1;
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  return child;
}

/** Resolves each stdout line as it comes; `waitFor` resolves once a line matching `re` was printed. */
function lines(child: ChildProcess): { seen: string[]; waitFor(re: RegExp): Promise<void> } {
  const seen: string[] = [];
  const waiters: Array<{ re: RegExp; done: () => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    seen.push(line);
    for (const w of waiters.filter((w) => w.re.test(line))) w.done();
  });
  return {
    seen,
    waitFor: (re) => (seen.some((l) => re.test(l)) ? Promise.resolve() : new Promise((done) => waiters.push({ re, done }))),
  };
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

describe('CLI lifecycle in a real process', () => {
  it('SIGINT: closes in reverse start order, every close runs though one fails, the failure is logged once, exit 1', async () => {
    const child = lifecycleProcess(false);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    const [code] = (await exited) as [number | null];
    expect(out.seen).toEqual(['ready', 'signal SIGINT', 'close view', 'close workers', 'error workers: workers did not close cleanly', 'close redis', 'clean false']);
    expect(code).toBe(1);
  });

  it('the same signal again while closing ends the process at once with 128 + signal (130 for SIGINT, 143 for SIGTERM)', async () => {
    for (const [signal, expected] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      const child = lifecycleProcess(true);
      const out = lines(child);
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      await out.waitFor(/^ready$/);
      child.kill(signal);
      await out.waitFor(/^close view$/);
      const exited = once(child, 'exit');
      child.kill(signal);
      const [code] = (await exited) as [number | null];
      expect(code).toBe(expected);
      expect(stderr).toContain(`shardpipe: second ${signal}: exiting without finishing cleanup`);
      // The closes after the hanging one never ran.
      expect(out.seen).not.toContain('close workers');
    }
  });
});

describe('shardpipe ingest: lifecycle and progress view', () => {
  let dir: string;
  let cluster: StoreCluster;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shardpipe-lifecycle-'));
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
  });

  /** Commands a failed assertion left running: SIGINT, so they stop their own children. */
  const running: ChildProcess[] = [];

  afterAll(async () => {
    for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    await cluster?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('SIGINT while waiting: "interrupted", exit 64, and the private redis-server it started is stopped', { timeout: 60_000 }, async () => {
    const drop = await writeSparkDrop(join(dir, 'drop-int'), { files: 2, rowsPerFile: 500, rowGroupRows: 250, prefix: 'int-' });
    const dataDir = join(dir, 'data-int');
    // No worker anywhere: the command waits until it is told to stop.
    const child = spawn(process.execPath, [CLI, 'ingest', drop.dir, '--key-column', 'id', '--no-local-worker', '--wait', '--data-dir', dataDir, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.push(child);
    let stderr = '';
    const submitted = new Promise<void>((done) => child.stderr!.on('data', (d: Buffer) => ((stderr += d.toString()), /ingest \S+ \(/.test(stderr) && done())));
    await submitted;
    // The private redis-server is the command's child (it renames its process, so find it by parent).
    const redisPids: number[] = [];
    for (const pid of await childPids(child.pid!)) if ((await readFile(`/proc/${pid}/cmdline`, 'utf8')).startsWith('redis-server')) redisPids.push(pid);
    expect(redisPids).toHaveLength(1);
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    const [code] = (await exited) as [number | null];
    expect(code, stderr).toBe(64);
    expect(stderr).toContain('shardpipe: interrupted');
    expect(isRunning(redisPids[0]!)).toBe(false);
  });

  const ingestArgs = (source: string, dataDir: string): string[] =>
    // Throttled, so the ingest lasts several polls of its progress.
    [CLI, 'ingest', source, '--key-column', 'id', '--value-column', 'payload', '--seeds', cluster.seeds.join(','), '--data-dir', dataDir, '--max-rows-per-second', '4000', '--concurrency', '1'];

  it('on a real pseudo-terminal: bars redrawn in place with synchronized output, the cursor hidden and shown again', { timeout: 60_000 }, async () => {
    const drop = await writeSparkDrop(join(dir, 'drop-tty'), { files: 2, rowsPerFile: 4000, rowGroupRows: 1000, prefix: 'tty-' });
    const command = [process.execPath, ...ingestArgs(drop.dir, join(dir, 'data-tty')), '--log-level', 'warn'].map((a) => `'${a}'`).join(' ');
    // script(1) runs the command on a new pty and copies everything it prints.
    const r = await new Promise<{ code: number | null; out: string }>((done) => {
      const child = spawn('script', ['-qfec', `stty cols 160 rows 40; ${command}`, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.once('exit', (code) => done({ code, out }));
    });
    expect(r.code, r.out).toBe(0);
    const frames = r.out.split('\x1b[?2026h').slice(1);
    expect(frames.length, r.out).toBeGreaterThanOrEqual(2);
    expect(frames[0]).toMatch(/^total [█░]{30} +\d+\.\d%  \S+\/8\.00k rows  .* files \d\/2/);
    // Later frames erase what was drawn (erase line, cursor up) before drawing again.
    expect(frames.slice(1).some((f) => f.includes('\x1b[2K') && f.includes('\x1b[1A'))).toBe(true);
    expect(r.out.indexOf('\x1b[?25l')).toBeGreaterThanOrEqual(0);
    expect(r.out.lastIndexOf('\x1b[?25h')).toBeGreaterThan(r.out.lastIndexOf('\x1b[?2026h'));
    expect(r.out).toContain('rows ingested');
  });

  it('off a terminal: no escape codes, structured "ingest progress" log lines instead', { timeout: 60_000 }, async () => {
    const drop = await writeSparkDrop(join(dir, 'drop-log'), { files: 2, rowsPerFile: 4000, rowGroupRows: 1000, prefix: 'log-' });
    const r = await runCli([...ingestArgs(drop.dir, join(dir, 'data-log')).slice(1), '--log-format', 'json', '--log-level', 'info']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('\x1b[');
    const progress = r.stderr.split('\n').filter((l) => l.includes('"ingest progress"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress[0]).toMatchObject({ rowsTotal: 8000, files: 2, filesDone: expect.any(Number), bytesTotal: expect.any(Number) });
  });
});
