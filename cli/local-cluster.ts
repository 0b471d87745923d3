import type { ChildProcess } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { findFreePort, type Logger } from '../common/index.js';
import { PartitionMap } from '../store/index.js';
import { startCliChild, stopChild } from './cli-child.js';

export interface LocalClusterOptions {
  /** Each node's data goes to `<dataDir>/node-<i>`; the map to `<dataDir>/map.json`. Required. */
  dataDir: string;
  /** Store nodes. Default 3. */
  nodes?: number;
  /** Nodes listen on 127.0.0.1:basePort+i, so their data and persisted map fit the next start too. Default: free ports. */
  basePort?: number;
  /** The map for the given addresses; default: 6 partitions split evenly over the first key bytes. */
  map?: (addresses: string[]) => PartitionMap;
  /** A port per node for its Prometheus /metrics; omitted = none. */
  metricsPorts?: boolean;
  /** `--auth-token-file` of every node (and its /metrics). Omitted: protected mode, loopback only. */
  tokenFile?: string;
  logger: Logger;
}

interface RunningNode {
  address: string;
  dataDir: string;
  child: ChildProcess;
  metricsPort: number | undefined;
}

/**
 * Store nodes as child processes on loopback (`shardpipe store start`), so they run on their own
 * cores beside the process that drives them. Used by `demo` and `up`.
 */
export class LocalCluster {
  readonly addresses: string[];
  private nodes: RunningNode[] = [];
  private currentMap: PartitionMap;

  private constructor(
    private readonly options: LocalClusterOptions,
    addresses: string[],
    map: PartitionMap,
  ) {
    this.addresses = addresses;
    this.currentMap = map;
  }

  static async start(options: LocalClusterOptions): Promise<LocalCluster> {
    const count = options.nodes ?? 3;
    const basePort = options.basePort;
    const addresses = await Promise.all(Array.from({ length: count }, async (_, i) => `127.0.0.1:${basePort === undefined ? await findFreePort() : basePort + i}`));
    const map = options.map?.(addresses) ?? PartitionMap.evenlySplit(1, addresses, 6);
    const cluster = new LocalCluster(options, addresses, map);
    await cluster.startNodes();
    return cluster;
  }

  get map(): PartitionMap {
    return this.currentMap;
  }

  /** `[{ address, metricsUrl }]` of the running nodes. */
  get endpoints(): Array<{ address: string; metricsUrl: string | undefined }> {
    return this.nodes.map((n) => ({ address: n.address, metricsUrl: n.metricsPort === undefined ? undefined : `http://127.0.0.1:${n.metricsPort}/metrics` }));
  }

  /**
   * Stops every node, deletes their data and starts them again empty under `map` (for the same
   * addresses; its version must be new to them only if data were kept, which it is not).
   */
  async wipe(map: PartitionMap): Promise<void> {
    await this.stopNodes();
    for (const [i] of this.addresses.entries()) await rm(this.nodeDir(i), { recursive: true, force: true });
    this.currentMap = map;
    await this.startNodes();
  }

  /** SIGTERM to every node; waits for them to drain and exit. Idempotent. */
  async close(): Promise<void> {
    await this.stopNodes();
  }

  private nodeDir(i: number): string {
    return join(this.options.dataDir, `node-${i}`);
  }

  private async startNodes(): Promise<void> {
    await mkdir(this.options.dataDir, { recursive: true });
    const mapFile = join(this.options.dataDir, 'map.json');
    await writeFile(mapFile, JSON.stringify(this.currentMap.toJson(), null, 2));
    try {
      for (const [i, address] of this.addresses.entries()) {
        this.nodes.push(await this.startNode(address, this.nodeDir(i), mapFile));
      }
    } catch (err) {
      await this.stopNodes();
      throw err;
    }
  }

  private async startNode(address: string, dataDir: string, mapFile: string): Promise<RunningNode> {
    const metricsPort = this.options.metricsPorts ? await findFreePort() : undefined;
    const args = ['store', 'start', '--map', mapFile, '--node', address, '--data', dataDir];
    if (metricsPort !== undefined) args.push('--metrics-port', String(metricsPort));
    if (this.options.tokenFile !== undefined) args.push('--auth-token-file', this.options.tokenFile);
    const child = await startCliChild(args, `store node ${address}`, this.options.logger.child({ node: address }));
    return { address, dataDir, child, metricsPort };
  }

  private async stopNodes(): Promise<void> {
    const nodes = this.nodes;
    this.nodes = [];
    await Promise.all(nodes.map(({ child }) => stopChild(child)));
  }
}
