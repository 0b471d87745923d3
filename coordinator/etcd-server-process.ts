import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { findFreePort, type Logger } from '../common/index.js';
import { StoreError } from '../store/index.js';

export interface PrivateEtcdOptions {
  /** Folder for etcd's data (its WAL and snapshots), so a restart finds the map again. Required. */
  dataDir: string;
  /** Client port; default a free one. Given again on restart so clients reconnect to the same URL. */
  clientPort?: number;
  /** Peer port (loopback only, one-member cluster); default a free one. */
  peerPort?: number;
  /** How long to wait for etcd's /health to report healthy. Default 15000 ms. */
  startTimeoutMs?: number;
  logger?: Logger;
}

/**
 * An etcd child process for one shardpipe run (or test) when no etcd URL is given: a one-member
 * cluster on loopback, free client and peer ports, its own data folder. `start` resolves once
 * /health says healthy; `stop` is a clean SIGTERM, `kill` a SIGKILL; `restart` brings it back on
 * the same ports and data, so clients holding `url` reconnect.
 */
export class PrivateEtcd {
  readonly url: string;
  readonly clientPort: number;
  readonly peerPort: number;
  private readonly options: PrivateEtcdOptions;
  private child: ChildProcess;
  private stopped: Promise<void> | undefined;

  private constructor(options: PrivateEtcdOptions, clientPort: number, peerPort: number, child: ChildProcess) {
    this.options = options;
    this.clientPort = clientPort;
    this.peerPort = peerPort;
    this.url = `http://127.0.0.1:${clientPort}`;
    this.child = child;
  }

  /** The pid of the running etcd (tests SIGKILL or SIGSTOP it). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  static async start(options: PrivateEtcdOptions): Promise<PrivateEtcd> {
    if (spawnSync('sh', ['-c', 'command -v etcd'], { stdio: 'ignore' }).status !== 0) {
      throw new StoreError(
        'STORE_ETCD_UNAVAILABLE',
        'etcd is not installed: install it (Debian/Ubuntu: apt-get install etcd-server; `npm test`/`npm run demo` do this when run as root) or pass --etcd URL',
      );
    }
    await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
    const clientPort = options.clientPort ?? (await findFreePort());
    let peerPort = options.peerPort ?? (await findFreePort());
    while (peerPort === clientPort) peerPort = await findFreePort();
    const etcd = new PrivateEtcd(options, clientPort, peerPort, spawnEtcd(options.dataDir, clientPort, peerPort));
    await etcd.waitHealthy();
    return etcd;
  }

  /** SIGTERM and wait for exit. Idempotent until the next `restart`. */
  stop(): Promise<void> {
    this.stopped ??= this.signal('SIGTERM');
    return this.stopped;
  }

  /** SIGKILL and wait for exit (a crash: etcd recovers from its WAL on restart). */
  kill(): Promise<void> {
    this.stopped ??= this.signal('SIGKILL');
    return this.stopped;
  }

  /** Starts etcd again on the same ports and data folder once it was stopped or killed. */
  async restart(): Promise<void> {
    await this.stop();
    this.child = spawnEtcd(this.options.dataDir, this.clientPort, this.peerPort);
    this.stopped = undefined;
    await this.waitHealthy();
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(sig);
    await exited;
  }

  private async waitHealthy(): Promise<void> {
    const deadline = Date.now() + (this.options.startTimeoutMs ?? 15_000);
    let last = 'no answer';
    for (;;) {
      const child = this.child;
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new StoreError('STORE_ETCD_UNAVAILABLE', `private etcd exited (${child.exitCode ?? child.signalCode}) before it was healthy on ${this.url}: ${stderrOf(child).trim().slice(-2000) || 'no output'}`);
      }
      try {
        const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(1000) });
        const body = (await res.json()) as { health?: string };
        if (body.health === 'true') break;
        last = JSON.stringify(body);
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline) {
        await this.kill();
        throw new StoreError('STORE_ETCD_UNAVAILABLE', `private etcd did not become healthy on ${this.url} within ${this.options.startTimeoutMs ?? 15_000} ms (${last}): ${stderrOf(this.child).trim().slice(-2000)}`);
      }
      await sleep(50);
    }
    this.options.logger?.debug({ url: this.url, dataDir: this.options.dataDir }, 'private etcd started');
  }
}

const stderrText = new WeakMap<ChildProcess, string[]>();

function stderrOf(child: ChildProcess): string {
  return (stderrText.get(child) ?? []).join('');
}

function spawnEtcd(dataDir: string, clientPort: number, peerPort: number): ChildProcess {
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawn(
    'etcd',
    [
      '--name', 'shardpipe',
      '--data-dir', dataDir,
      '--listen-client-urls', client,
      '--advertise-client-urls', client,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `shardpipe=${peer}`,
      '--initial-cluster-state', 'new',
      // A short election timeout lowers etcd's minimum lease TTL (1.5 × election timeout) to 1 s.
      '--heartbeat-interval', '50',
      '--election-timeout', '500',
      '--logger', 'zap',
      '--log-level', 'warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  // Keep the last part of stderr only: it goes into start errors.
  const chunks: string[] = [];
  stderrText.set(child, chunks);
  child.stderr!.on('data', (d: Buffer) => {
    chunks.push(d.toString());
    if (chunks.length > 50) chunks.shift();
  });
  return child;
}
