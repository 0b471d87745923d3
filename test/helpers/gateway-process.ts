import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { CLI } from './store-cluster.js';

/** `shardpipe gateway` as a real child process, ready once it prints its ready line. */
export class GatewayProcess {
  port = 0;
  stderr = '';
  /** The gateway's ready line (`url`, `port`, `metricsPort` with --metrics-port). */
  ready: Record<string, unknown> = {};
  private constructor(private readonly child: ChildProcess) {}

  static async start(seeds: string[], extra: string[] = [], env: Record<string, string> = {}): Promise<GatewayProcess> {
    const child = spawn(process.execPath, [CLI, 'gateway', '--seeds', seeds.join(','), '--listen', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'warn', ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const gateway = new GatewayProcess(child);
    child.stderr!.on('data', (d: Buffer) => (gateway.stderr += d.toString()));
    await new Promise<void>((ready, fail) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (!line.includes('"event":"ready"')) return;
        gateway.ready = JSON.parse(line) as Record<string, unknown>;
        gateway.port = gateway.ready.port as number;
        ready();
      });
      child.once('exit', (code) => fail(new Error(`gateway exited with ${code} before ready: ${gateway.stderr}`)));
    });
    return gateway;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = once(this.child, 'exit') as Promise<[number | null]>;
    this.child.kill('SIGTERM');
    return (await exited)[0];
  }
}
