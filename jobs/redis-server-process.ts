import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { acceptsConnections, findFreePort, redactUrl, type Logger } from '../common/index.js';
import { JobsError } from './jobs-errors.js';

export interface PrivateRedisOptions {
  /** Folder for Redis's data (AOF on), so a re-run finds the jobs of a killed run. Required. */
  dataDir: string;
  /** How long to wait for Redis to accept connections. Default 10000 ms. */
  startTimeoutMs?: number;
  logger?: Logger;
}

/**
 * A redis-server child process for one shardpipe run when no Redis URL is given: loopback only,
 * a free port, append-only persistence in the data folder, and a fresh random password (in `url`)
 * so other local users cannot reach the queues either. The password goes to redis-server on its
 * stdin, never in argv.
 */
export class PrivateRedis {
  readonly url: string;
  private readonly child: ChildProcess;
  private stopped: Promise<void> | undefined;

  private constructor(url: string, child: ChildProcess) {
    this.url = url;
    this.child = child;
  }

  static async start(options: PrivateRedisOptions): Promise<PrivateRedis> {
    if (spawnSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' }).status !== 0) {
      throw new JobsError(
        'JOBS_REDIS_MISSING',
        'redis-server is not installed: install it (Debian/Ubuntu: apt-get install redis-server; `npm test`/`npm run demo` do this when run as root) or pass --redis URL',
      );
    }
    await mkdir(options.dataDir, { recursive: true });
    const port = await findFreePort();
    const password = randomBytes(24).toString('hex');
    const child = spawn(
      'redis-server',
      // "-" reads config from stdin first; the flags after it are applied on top.
      ['-', '--port', String(port), '--bind', '127.0.0.1', '--dir', options.dataDir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--protected-mode', 'yes', '--loglevel', 'warning'],
      { stdio: ['pipe', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    // A redis-server that exits at once closes its stdin: that shows in the start error below.
    child.stdin!.once('error', (err) => (stderr += `(writing its config: ${err.message})\n`));
    child.stdin!.end(`requirepass ${password}\n`);
    const redis = new PrivateRedis(`redis://:${password}@127.0.0.1:${port}`, child);
    const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
    while (!(await acceptsConnections(port))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await redis.stop();
        throw new JobsError('JOBS_REDIS_UNAVAILABLE', `private redis-server did not start on port ${port}: ${stderr.trim() || 'no output'}`);
      }
      await sleep(20);
    }
    options.logger?.debug({ url: redactUrl(redis.url), dataDir: options.dataDir }, 'private redis-server started');
    return redis;
  }

  /** SIGTERM (Redis flushes the AOF) and wait for exit. Idempotent. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return;
      const exited = once(this.child, 'exit');
      this.child.kill('SIGTERM');
      await exited;
    })();
    return this.stopped;
  }
}
