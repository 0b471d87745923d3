import type { ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { findFreePort, type Logger } from '../common/index.js';
import { PrivateEtcd, initialMap } from '../coordinator/index.js';
import { EtcdMapStore, PartitionMap, connectEtcd } from '../store/index.js';
import { startCliChild, stopChild } from './cli-child.js';

export interface LocalClusterOptions {
  /** Each node's data goes to `<dataDir>/node-<i>`; the map to `<dataDir>/map.json` (etcd's data to `<dataDir>/etcd`). Required. */
  dataDir: string;
  /** Store nodes. Default 3. */
  nodes?: number;
  /** Nodes listen on 127.0.0.1:basePort+i, so their data and persisted map fit the next start too. Default: free ports. */
  basePort?: number;
  /** The map for the given addresses (its partition ranges, with replicas ≥ 2); default: 6 partitions split evenly over the first key bytes. */
  map?: (addresses: string[]) => PartitionMap;
  /**
   * Replicas per partition. 1 (default): a static map file and no etcd (single-replica mode).
   * 2 or more: a private etcd, nodes started with `--etcd`, a coordinator, and the first map
   * written to etcd from the registered nodes the way `cluster init --etcd` writes it.
   */
  replicas?: number;
  /** Node and coordinator lease with replicas ≥ 2. Default "3s". */
  lease?: string;
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

/** A chain change the coordinator made, as it printed it, with the time this process read it. */
export interface CoordinatorChange {
  version: number;
  changes: Array<{ partition: number; removed: string[]; added: string[]; epoch: number }>;
  atMs: number;
}

/**
 * Store nodes as child processes on loopback (`shardpipe store start`), so they run on their own
 * cores beside the process that drives them. Used by `demo` and `up`. With replicas ≥ 2 also a
 * private etcd and a `shardpipe coordinator` child: the shape of a replicated deployment.
 */
export class LocalCluster {
  readonly addresses: string[];
  /** Emits `change` (CoordinatorChange) for every chain change the coordinator prints. */
  readonly events = new EventEmitter();
  private nodes: RunningNode[] = [];
  private coordinator: ChildProcess | undefined;
  private etcd: PrivateEtcd | undefined;
  private currentMap: PartitionMap;
  /** The least version of the first map written to a fresh etcd (raised by wipe). */
  private versionFloor = 1;

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
    const replicas = options.replicas ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > count) throw new RangeError(`replicas must be 1–${count} (the number of nodes), got ${replicas}`);
    const basePort = options.basePort;
    const addresses = await Promise.all(Array.from({ length: count }, async (_, i) => `127.0.0.1:${basePort === undefined ? await findFreePort() : basePort + i}`));
    const map = options.map?.(addresses) ?? PartitionMap.evenlySplit(1, addresses, 6);
    const cluster = new LocalCluster(options, addresses, map);
    await cluster.startNodes();
    return cluster;
  }

  /** Replicas per partition (1: static map, no etcd). */
  get replicas(): number {
    return this.options.replicas ?? 1;
  }

  /** The private etcd's URL (replicas ≥ 2), else undefined. */
  get etcdUrl(): string | undefined {
    return this.etcd?.url;
  }

  /** The map the cluster started with (with replicas ≥ 2 as written to etcd; the coordinator changes it from there). */
  get map(): PartitionMap {
    return this.currentMap;
  }

  /** `[{ address, metricsUrl }]` of the running nodes. */
  get endpoints(): Array<{ address: string; metricsUrl: string | undefined }> {
    return this.nodes.map((n) => ({ address: n.address, metricsUrl: n.metricsPort === undefined ? undefined : `http://127.0.0.1:${n.metricsPort}/metrics` }));
  }

  /** SIGKILLs the node at `address` (a crash: no drain, no lease revoke) and resolves once it exited, with the time of the kill. */
  async kill(address: string): Promise<number> {
    const node = this.nodes.find((n) => n.address === address);
    if (node === undefined) throw new RangeError(`no running node ${address}`);
    this.nodes = this.nodes.filter((n) => n !== node);
    const exited = new Promise((resolve) => node.child.once('exit', resolve));
    const atMs = Date.now();
    node.child.kill('SIGKILL');
    await exited;
    return atMs;
  }

  /** Resolves with the first coordinator change (from now on) for which `test` holds; rejects after `timeoutMs`. */
  nextChange(test: (c: CoordinatorChange) => boolean, timeoutMs: number): Promise<CoordinatorChange> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.events.off('change', onChange);
        reject(new Error(`the coordinator made no matching chain change within ${timeoutMs} ms`));
      }, timeoutMs);
      const onChange = (c: CoordinatorChange): void => {
        if (!test(c)) return;
        clearTimeout(timer);
        this.events.off('change', onChange);
        resolve(c);
      };
      this.events.on('change', onChange);
    });
  }

  /**
   * Stops every node, deletes their data (and etcd's) and starts them again empty under `map`'s
   * ranges (for the same addresses; its version must be new to them only if data were kept, which it is not).
   */
  async wipe(map: PartitionMap): Promise<void> {
    // Clients hold the last map they saw: the new etcd's first map must be newer than that one.
    this.versionFloor = Math.max(map.version, (await this.etcdMapVersion()) + 1);
    // Their data goes next: nothing to drain for.
    await this.stopNodes('SIGKILL');
    for (const [i] of this.addresses.entries()) await rm(this.nodeDir(i), { recursive: true, force: true });
    await rm(join(this.options.dataDir, 'etcd'), { recursive: true, force: true });
    this.currentMap = map;
    await this.startNodes();
  }

  /** SIGTERM to the coordinator and every node (waits for them to drain and exit), then etcd. Idempotent. */
  async close(): Promise<void> {
    await this.stopNodes();
  }

  /** The version of the map in etcd now (0 without etcd or map). */
  private async etcdMapVersion(): Promise<number> {
    if (this.etcd === undefined) return 0;
    const etcd = connectEtcd({ url: this.etcd.url });
    try {
      return (await new EtcdMapStore(etcd, this.etcd.url).read())?.map.version ?? 0;
    } finally {
      etcd.close();
    }
  }

  private nodeDir(i: number): string {
    return join(this.options.dataDir, `node-${i}`);
  }

  private async startNodes(): Promise<void> {
    await mkdir(this.options.dataDir, { recursive: true });
    try {
      if (this.replicas === 1) {
        const mapFile = join(this.options.dataDir, 'map.json');
        await writeFile(mapFile, JSON.stringify(this.currentMap.toJson(), null, 2));
        for (const [i, address] of this.addresses.entries()) this.nodes.push(await this.startNode(address, this.nodeDir(i), ['--map', mapFile], 'ready'));
      } else {
        await this.startReplicated();
      }
    } catch (err) {
      await this.stopNodes();
      throw err;
    }
  }

  /**
   * Private etcd (on the ports of the last run, so its data still fits), the nodes (registered,
   * waiting for a map), the coordinator, then the first map unless etcd holds one from a last run.
   */
  private async startReplicated(): Promise<void> {
    const etcdDir = join(this.options.dataDir, 'etcd');
    const portsFile = join(this.options.dataDir, 'etcd-ports.json');
    const ports = (await readFile(portsFile, 'utf8').then((t) => JSON.parse(t) as { clientPort: number; peerPort: number }, () => undefined)) ?? {};
    this.etcd = await PrivateEtcd.start({ dataDir: etcdDir, ...ports, logger: this.options.logger });
    await writeFile(portsFile, JSON.stringify({ clientPort: this.etcd.clientPort, peerPort: this.etcd.peerPort }));
    const lease = this.options.lease ?? '3s';
    const ready: Array<Promise<void>> = [];
    const etcdUrl = this.etcd.url;
    // All at once (each is a Node.js start); a node that fails to start is stopped with the rest.
    const started = await Promise.allSettled([
      ...this.addresses.map(async (address, i) => {
        let readyNow: () => void = () => undefined;
        ready.push(new Promise<void>((resolve) => (readyNow = resolve)));
        this.nodes.push(await this.startNode(address, this.nodeDir(i), ['--etcd', etcdUrl, '--lease', lease], 'registered', (e) => e.event === 'ready' && readyNow()));
      }),
      (async () => {
        this.coordinator = await startCliChild(['coordinator', '--etcd', etcdUrl, '--lease', lease], 'coordinator', this.options.logger.child({ coordinator: 1 }), {}, {
          onEvent: (e) => {
            if (e.event === 'changed') this.events.emit('change', { version: Number(e.version), changes: e.changes as CoordinatorChange['changes'], atMs: Date.now() });
          },
        });
      })(),
    ]);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    const etcd = connectEtcd({ url: this.etcd.url });
    try {
      const store = new EtcdMapStore(etcd, this.etcd.url);
      const existing = await store.read();
      if (existing !== undefined) {
        this.currentMap = existing.map;
      } else {
        // What `cluster init --etcd --split-keys` writes, from the ranges asked for: every node registered before it starts.
        const splitKeys = this.currentMap.partitions.slice(1).map((p) => p.start);
        const first = initialMap(this.addresses, this.replicas, { splitKeys });
        this.currentMap = this.versionFloor === 1 ? first : PartitionMap.create(this.versionFloor, first.partitions, { replicas: this.replicas });
        await store.create(this.currentMap);
      }
    } finally {
      etcd.close();
    }
    const exits = this.nodes.map((n) => new Promise<never>((_, reject) => n.child.once('exit', (code, sig) => reject(new Error(`store node ${n.address} exited (${sig ?? code}) before it served the map from etcd; its messages are above`)))));
    await Promise.race([Promise.all(ready), ...exits]);
  }

  private async startNode(address: string, dataDir: string, args: string[], readyEvent: string, onEvent?: (e: Record<string, unknown>) => void): Promise<RunningNode> {
    const metricsPort = this.options.metricsPorts ? await findFreePort() : undefined;
    const argv = ['store', 'start', ...args, '--node', address, '--data', dataDir];
    if (metricsPort !== undefined) argv.push('--metrics-port', String(metricsPort));
    if (this.options.tokenFile !== undefined) argv.push('--auth-token-file', this.options.tokenFile);
    const child = await startCliChild(argv, `store node ${address}`, this.options.logger.child({ node: address }), {}, { readyEvent, onEvent });
    return { address, dataDir, child, metricsPort };
  }

  private async stopNodes(sig: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const stop = async (child: ChildProcess): Promise<void> => {
      if (sig === 'SIGTERM') return stopChild(child);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    };
    const nodes = this.nodes;
    this.nodes = [];
    const coordinator = this.coordinator;
    this.coordinator = undefined;
    // The coordinator first: nodes stopping one by one must not be dropped from their chains and resynced.
    if (coordinator !== undefined) await stop(coordinator);
    await Promise.all(nodes.map(({ child }) => stop(child)));
    const etcd = this.etcd;
    this.etcd = undefined;
    await (sig === 'SIGTERM' ? etcd?.stop() : etcd?.kill());
  }
}
