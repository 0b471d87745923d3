import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { findFreePort } from '../../common/index.js';
import { PrivateEtcd } from '../../coordinator/index.js';
import { EtcdMapStore, connectEtcd, type PartitionMap } from '../../store/index.js';
import { CLI } from './store-cluster.js';
import { makeTempDir, type TempDir } from './temp-dir.js';

/** A CLI child process (`store start --etcd`, `coordinator`) whose JSON stdout events can be awaited. */
export class CliProcess {
  child: ChildProcess | undefined;
  stderr = '';
  private readonly events: Array<Record<string, unknown>> = [];
  private waiters: Array<{ event: string; resolve: (e: Record<string, unknown>) => void }> = [];

  /** `env`: extra environment variables of the process (fault injection switches). */
  constructor(
    readonly args: string[],
    readonly env: NodeJS.ProcessEnv = {},
  ) {}

  /** Spawns it; resolves at once (wait for an event with `event`). */
  start(): this {
    const child = spawn(process.execPath, [CLI, ...this.args, '--log-format', 'json', '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...this.env } });
    this.child = child;
    this.stderr = '';
    this.events.length = 0;
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      const e = JSON.parse(line) as Record<string, unknown>;
      this.events.push(e);
      for (const w of this.waiters.filter((x) => x.event === e.event)) w.resolve(e);
      this.waiters = this.waiters.filter((x) => x.event !== e.event);
    });
    return this;
  }

  /** The first stdout line `{"event": name, …}` since the last start; rejects if the process exits first. */
  event(name: string): Promise<Record<string, unknown>> {
    const seen = this.events.find((e) => e.event === name);
    if (seen) return Promise.resolve(seen);
    const child = this.child!;
    return new Promise((resolve, reject) => {
      this.waiters.push({ event: name, resolve });
      child.once('exit', (code, sig) => reject(new Error(`${this.args.slice(0, 2).join(' ')} exited (${code ?? sig}) before "${name}": ${this.stderr.slice(-2000)}`)));
    });
  }

  /** Whether a line of stderr (JSON logs) has this message. */
  logged(msg: string): boolean {
    return this.stderr.split('\n').some((l) => l.includes(`"msg":"${msg}`));
  }

  async kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(sig);
    await exited;
  }
}

/** A private etcd, node processes registered in it, coordinators; everything in one temp dir. */
export class EtcdTestCluster {
  readonly nodes = new Map<string, CliProcess>();
  readonly coordinators: CliProcess[] = [];
  readonly store: EtcdMapStore;

  private constructor(
    readonly dir: TempDir,
    readonly etcd: PrivateEtcd,
    private readonly client: ReturnType<typeof connectEtcd>,
    /** Node and coordinator lease, e.g. "1s". */
    readonly lease: string,
  ) {
    this.store = new EtcdMapStore(client, etcd.url);
  }

  static async start(options: { lease?: string } = {}): Promise<EtcdTestCluster> {
    const dir = await makeTempDir('shardpipe-etcd-test-');
    const etcd = await PrivateEtcd.start({ dataDir: dir.sub('etcd') });
    return new EtcdTestCluster(dir, etcd, connectEtcd({ url: etcd.url, callTimeoutMs: 2000 }), options.lease ?? '1s');
  }

  /** Starts a store node on a free port (or `address`, to restart with its data); resolves once it registered. */
  async startNode(address?: string, extraArgs: string[] = [], etcdUrl = this.etcd.url, env: NodeJS.ProcessEnv = {}): Promise<CliProcess> {
    const addr = address ?? `127.0.0.1:${await findFreePort()}`;
    const node = new CliProcess(['store', 'start', '--etcd', etcdUrl, '--node', addr, '--data', this.dir.sub(`node-${addr.replace(':', '-')}`), '--lease', this.lease, ...extraArgs], env).start();
    this.nodes.set(addr, node);
    await node.event('registered');
    return node;
  }

  async startCoordinator(): Promise<CliProcess> {
    const c = new CliProcess(['coordinator', '--etcd', this.etcd.url, '--lease', this.lease]).start();
    this.coordinators.push(c);
    await c.event('ready');
    return c;
  }

  /** Runs a CLI command to completion: exit code, stdout, stderr. */
  async cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(process.execPath, [CLI, ...args, '--log-format', 'json', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    return { code, stdout, stderr };
  }

  /** Resolves with the first map in etcd (now or later, by watch) for which `test` holds. */
  async waitForMap(test: (map: PartitionMap) => boolean, timeoutMs = 15_000): Promise<PartitionMap> {
    const { map, revision } = await this.store.readAt();
    if (map !== undefined && test(map)) return map;
    let watcher: Awaited<ReturnType<EtcdMapStore['watch']>> | undefined;
    try {
      return await new Promise<PartitionMap>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no map in etcd matched within ${timeoutMs} ms`)), timeoutMs);
        this.store
          .watch(revision, (m) => {
            if (test(m)) {
              clearTimeout(timer);
              resolve(m);
            }
          })
          .then((w) => (watcher = w), reject);
      });
    } finally {
      await watcher?.cancel();
    }
  }

  /** Resolves once etcd's registrations satisfy `test` (watching the prefix). */
  async waitForNodes(test: (nodes: Set<string>) => boolean, timeoutMs = 15_000): Promise<Set<string>> {
    const deadline = Date.now() + timeoutMs;
    let { nodes, revision } = await this.store.nodes();
    if (test(new Set(nodes.keys()))) return new Set(nodes.keys());
    let wake: () => void = () => undefined;
    const watcher = await this.store.watchNodes(revision, () => wake());
    try {
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`registrations did not match within ${timeoutMs} ms: ${[...nodes.keys()].join(', ')}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        ({ nodes, revision } = await this.store.nodes());
        if (test(new Set(nodes.keys()))) return new Set(nodes.keys());
      }
    } finally {
      await watcher.cancel();
    }
  }

  /** Resolves with the lease id of `address`'s registration once `test` holds for it (undefined = not registered). */
  async waitForLease(address: string, test: (lease: string | undefined) => boolean, timeoutMs = 15_000): Promise<string | undefined> {
    const leaseOf = async (): Promise<string | undefined> => (await this.client.get(this.store.keys.node(address)).exec()).kvs[0]?.lease;
    let lease = await leaseOf();
    if (test(lease)) return lease;
    const deadline = Date.now() + timeoutMs;
    let wake: () => void = () => undefined;
    const { revision } = await this.store.nodes();
    const watcher = await this.store.watchNodes(revision, () => wake());
    try {
      lease = await leaseOf();
      while (!test(lease)) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`the registration of ${address} did not match within ${timeoutMs} ms (lease ${lease})`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        lease = await leaseOf();
      }
      return lease;
    } finally {
      await watcher.cancel();
    }
  }

  /** The raw etcd client (tests revoke leases with it). */
  get etcdClient(): ReturnType<typeof connectEtcd> {
    return this.client;
  }

  /** SIGKILLs every process and etcd (also when a test left it SIGSTOPped), removes the folder. */
  async close(): Promise<void> {
    await Promise.all([...this.nodes.values(), ...this.coordinators].map((p) => p.kill()));
    this.client.close();
    await this.etcd.kill();
    await this.dir.remove();
  }
}
