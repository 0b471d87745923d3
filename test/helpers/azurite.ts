import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobServiceClient, type ContainerClient } from '@azure/storage-blob';
import { acceptsConnections, findFreePort } from '../../common/index.js';

const AZURITE_BLOB = resolve(import.meta.dirname, '../../node_modules/azurite/dist/src/blob/main.js');
/** Azurite's well-known development account (public, documented by Microsoft). */
const ACCOUNT = 'devstoreaccount1';
const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

/**
 * Azurite's Blob service as a child process on a free loopback port, in memory, telemetry disabled.
 * `start()` resolves once the port accepts connections; `stop()` sends SIGTERM and waits for the exit.
 */
export class Azurite {
  private stderr = '';
  private stopping: Promise<void> | undefined;
  private readonly containers = new Set<ContainerClient>();
  readonly service: BlobServiceClient;

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.service = BlobServiceClient.fromConnectionString(this.connectionString);
  }

  get connectionString(): string {
    return `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:${this.port}/${ACCOUNT};`;
  }

  static async start(startTimeoutMs = 20_000): Promise<Azurite> {
    const port = await findFreePort();
    const child = spawn(
      process.execPath,
      [AZURITE_BLOB, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--inMemoryPersistence', '--skipApiVersionCheck', '--loose', '--disableTelemetry', '--silent'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const azurite = new Azurite(child, port);
    const deadline = Date.now() + startTimeoutMs;
    while (!(await acceptsConnections(port))) {
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
        await azurite.stop();
        throw new Error(`azurite did not start on port ${port}: ${azurite.stderr.trim() || 'no output'}`);
      }
      await sleep(25); // polling a readiness check, not waiting a fixed time
    }
    return azurite;
  }

  /** A new container with a unique name; `deleteContainers()` removes it. */
  async createContainer(): Promise<ContainerClient> {
    const container = this.service.getContainerClient(`t-${randomUUID().replaceAll('-', '').slice(0, 20)}`);
    await container.create();
    this.containers.add(container);
    return container;
  }

  /** Deletes every container made by `createContainer` (and what was written into them). */
  async deleteContainers(): Promise<void> {
    for (const container of this.containers) await container.deleteIfExists();
    this.containers.clear();
  }

  /** Uploads every file below `folder` (side files included) as `prefix/<relative path>`, streaming each. */
  async uploadFolder(container: ContainerClient, folder: string, prefix: string): Promise<string[]> {
    const names: string[] = [];
    for (const entry of await readdir(folder, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const path = join(entry.parentPath, entry.name);
      const name = `${prefix}/${relative(folder, path).split(sep).join('/')}`;
      await container.getBlockBlobClient(name).uploadFile(path);
      names.push(name);
    }
    return names.sort();
  }

  /** SIGTERM and wait for the exit. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return;
      const exited = once(this.child, 'exit');
      this.child.kill('SIGTERM');
      await exited;
    })();
    return this.stopping;
  }
}
