import { readFile } from 'node:fs/promises';
import { parseDurationMs } from '../common/index.js';
import { initialMap } from '../coordinator/index.js';
import { EtcdMapStore, Key, OperationAdmin, OperationClient, StoreError, connectEtcd, isFinalOperationState, parseEtcdUrl, readGcReports, type GcReport, type NodeRegistration, type OperationRecord, type OperationsApi, type PartitionMap, type ReplicationReport, type SyncReport } from '../store/index.js';
import { CliUsageError } from './cli-env.js';
import { formatTable, parsePositiveInt } from './cli-io.js';
import { rangeText, withClient } from './store-io.js';
import type { CliContext } from './cli-context.js';
import { etcdConnectionOf, type EtcdFlags } from './etcd-options.js';
import { operationJson, operationLine } from './operation-view.js';

/** Flags of `cluster init --etcd`. */
export interface InitEtcdFlags extends EtcdFlags {
  partitions: string;
  splitKeys?: string;
  replicas: string;
  wait: string;
  existsOk?: boolean;
}

/** Flags of `cluster status`. */
export interface StatusFlags extends EtcdFlags {
  seeds?: string;
  json?: boolean;
}

/** Split keys from a file, one UTF-8 key per line (sorted; N keys make N+1 partitions). */
export async function readSplitKeys(file: string): Promise<Buffer[]> {
  const lines = (await readFile(file, 'utf8')).split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l.length > 0);
  return lines.map((l) => Key.fromUtf8(l).bytes);
}

/**
 * `cluster init --etcd`: waits (watching registrations) up to --wait for --replicas nodes, places
 * chains on them and writes the first map in one create-if-absent transaction.
 */
export async function clusterInitEtcd(ctx: CliContext, opts: InitEtcdFlags & { etcd: string }): Promise<void> {
  const replicas = parsePositiveInt(opts.replicas, '--replicas');
  const waitMs = parseDurationMs(opts.wait);
  const ranges = opts.splitKeys ? { splitKeys: await readSplitKeys(opts.splitKeys) } : { partitions: parsePositiveInt(opts.partitions, '--partitions') };
  const display = parseEtcdUrl(opts.etcd).display;
  const etcd = connectEtcd(await etcdConnectionOf(opts.etcd, opts));
  const store = new EtcdMapStore(etcd, display);
  try {
    const existing = await store.read();
    if (existing !== undefined && opts.existsOk) {
      ctx.print(`etcd at ${display} holds a partition map already (version ${existing.map.version}, ${existing.map.partitions.length} partitions, ${existing.map.replicas} replicas each): left as it is`);
      return;
    }
    if (existing !== undefined) {
      throw new StoreError('STORE_CLUSTER_MAP_EXISTS', `etcd at ${display} holds a partition map already (version ${existing.map.version}, ${existing.map.partitions.length} partitions): the coordinator changes it from here; see shardpipe cluster status`);
    }
    const nodes = await waitForNodes(ctx, store, replicas, waitMs);
    const map = initialMap([...nodes.keys()], replicas, ranges);
    if (!(await store.create(map))) throw new StoreError('STORE_CLUSTER_MAP_EXISTS', `another writer put a partition map into etcd at ${display} first: see shardpipe cluster status`);
    ctx.print(`wrote map version 1 to etcd: ${map.partitions.length} partitions, ${replicas} replica${replicas === 1 ? '' : 's'} each, on ${map.replicaNodes().length} nodes`);
  } finally {
    etcd.close();
  }
}

async function waitForNodes(ctx: CliContext, store: EtcdMapStore, replicas: number, waitMs: number): Promise<Map<string, NodeRegistration>> {
  let { nodes, revision } = await store.nodes();
  if (nodes.size >= replicas) return nodes;
  ctx.logger.info({ registered: nodes.size, replicas, waitMs }, 'waiting for store nodes to register in etcd');
  let wake: () => void = () => undefined;
  const watcher = await store.watchNodes(revision, () => wake(), ctx.logger);
  const deadline = Date.now() + waitMs;
  try {
    while (nodes.size < replicas) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new StoreError(
          'STORE_CLUSTER_NODES_MISSING',
          `${replicas} replicas need ${replicas} registered store nodes, but ${nodes.size} registered within ${waitMs} ms (${[...nodes.keys()].join(', ') || 'none'}): start more with shardpipe store start --etcd, or ask for fewer --replicas`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      ({ nodes, revision } = await store.nodes());
    }
    return nodes;
  } finally {
    await watcher.cancel();
  }
}

/** `cluster status`: the map's chains from etcd (with lease liveness) or from the seeds. */
export async function clusterStatus(ctx: CliContext, opts: StatusFlags): Promise<void> {
  let map: PartitionMap;
  let live: Map<string, NodeRegistration> | undefined;
  let syncs: SyncReport[] = [];
  let replication: ReplicationReport[] = [];
  let gc: GcReport[] = [];
  let movement: Movement | undefined;
  if (opts.etcd !== undefined) {
    const display = parseEtcdUrl(opts.etcd).display;
    const etcd = connectEtcd(await etcdConnectionOf(opts.etcd, opts));
    try {
      const store = new EtcdMapStore(etcd, display);
      const stored = await store.read();
      live = (await store.nodes()).nodes;
      syncs = (await store.syncReports()).reports;
      replication = await store.replicationReports();
      gc = await readGcReports(etcd, display);
      if (stored === undefined) throw new StoreError('STORE_INVALID_MAP', `etcd at ${display} holds no partition map yet (${live.size} nodes registered): run shardpipe cluster init --etcd`);
      map = stored.map;
      // The chains are shown even when the operation keys cannot be read (an etcd user without access to them).
      movement = await movementOf(new OperationAdmin(etcd, display)).catch((err: unknown) => {
        ctx.logger.warn({ err: (err as Error).message }, 'operations not shown: reading them from etcd failed');
        return undefined;
      });
    } finally {
      etcd.close();
    }
  } else {
    if (opts.etcdCa !== undefined || opts.etcdCert !== undefined) throw new CliUsageError('--etcd-ca/--etcd-cert/--etcd-key need --etcd');
    const seeds = ctx.seeds(opts.seeds);
    map = await withClient(seeds, ctx, (client) => client.refreshMap());
    // Where it can: a static-map node has no operations, and a token below admin may not list them.
    const client = new OperationClient({ seeds, credentials: ctx.storeCredentials() });
    try {
      movement = await movementOf(client);
    } catch (err) {
      ctx.logger.debug({ err }, 'operations not shown: the node did not list them');
    } finally {
      client.close();
    }
  }
  const drainingJson = (): object =>
    movement === undefined ? {} : { operations: movement.active.map((r) => operationJson(r)), draining: [...movement.draining].sort().map((node) => ({ node, replicas: map.replicasOf(node).length, drained: map.replicasOf(node).length === 0 })) };
  const liveOf = (node: string): boolean | undefined => (live === undefined ? undefined : live.has(node));
  const syncOf = (partition: number, node: string, state: string): SyncReport | undefined => (state === 'syncing' ? syncs.find((s) => s.partition === partition && s.node === node) : undefined);
  const replicationOf = (partition: number, node: string): ReplicationReport | undefined => replication.find((r) => r.partition === partition && r.node === node);
  const replicationJson = (r: ReplicationReport | undefined): object =>
    r === undefined ? {} : { lagSequences: r.lagSequences, forwardRetries: r.forwardRetries, ...(r.lastForwardRetry ? { lastForwardRetry: r.lastForwardRetry } : {}) };
  const syncJson = (s: SyncReport | undefined): object =>
    s === undefined ? {} : { sync: { state: s.state, source: s.source, rows: s.rows, bytes: s.bytes, totalRows: s.totalRows, epoch: s.epoch, updatedAtMs: s.updatedAtMs, ...(s.mode ? { mode: s.mode } : {}), ...(s.fastSkipped ? { fastSkipped: s.fastSkipped } : {}), ...(s.maxBytesPerSecond ? { maxBytesPerSecond: s.maxBytesPerSecond } : {}), ...(s.error ? { error: s.error } : {}) } };
  if (opts.json) {
    ctx.print(
      JSON.stringify({
        version: map.version,
        replicas: map.replicas,
        partitions: map.partitions.map((p) => ({
          id: p.id,
          start: p.start.toString('hex'),
          end: p.end.toString('hex'),
          epoch: p.epoch,
          chain: p.chain.map((r) => ({ node: r.node, state: r.state, ...(live === undefined ? {} : { live: liveOf(r.node) }), ...syncJson(syncOf(p.id, r.node, r.state)), ...replicationJson(replicationOf(p.id, r.node)) })),
        })),
        ...(live === undefined ? {} : { nodes: [...live.values()].map((n) => ({ node: n.node, leaseMs: n.leaseMs, registeredAtMs: n.registeredAtMs })) }),
        ...(opts.etcd === undefined ? {} : { gc: gc.flatMap((r) => r.partitions.map((p) => ({ node: r.node, ...p }))) }),
        ...drainingJson(),
      }),
    );
    return;
  }
  ctx.print(`map version ${map.version}, ${map.replicas} replica${map.replicas === 1 ? '' : 's'} per chain`);
  const replicaText = (partition: number, node: string, state: string): string =>
    `${node} ${state}${progressText(syncOf(partition, node, state))}${replicationText(replicationOf(partition, node))}${liveOf(node) === false ? ' (no lease)' : ''}`;
  ctx.print(formatTable(['id', 'range', 'epoch', 'chain (head first)'], map.partitions.map((p) => [String(p.id), rangeText(p.start, p.end), String(p.epoch), p.chain.map((r) => replicaText(p.id, r.node, r.state)).join(' → ')])));
  if (live !== undefined) {
    const idle = [...live.keys()].filter((n) => map.replicasOf(n).length === 0);
    ctx.print(`registered nodes: ${live.size}${idle.length > 0 ? ` (holding no replica: ${idle.join(', ')})` : ''}`);
  }
  for (const r of gc) for (const p of r.partitions) ctx.print(`data awaiting GC: partition ${p.partition} (${(p.bytes / 1e6).toFixed(1)} MB) on ${r.node}, deleted at ${new Date(p.deleteAtMs).toISOString().slice(11, 19)} UTC`);
  if (movement !== undefined) for (const line of movementLines(movement, map)) ctx.print(line);
}

/** What `cluster status` shows of data movement: unfinished operations and draining marks. */
interface Movement {
  active: OperationRecord[];
  draining: Set<string>;
}

async function movementOf(api: OperationsApi): Promise<Movement> {
  const active = (await api.list()).filter((r) => !isFinalOperationState(r.state));
  return { active, draining: await api.draining() };
}

/** "operations: 1 active" then one line each; "drained: …; can be stopped" / "draining: …" per marked node. */
export function movementLines(movement: Movement, map: PartitionMap, nowMs = Date.now()): string[] {
  const lines: string[] = [];
  if (movement.active.length > 0) {
    lines.push(`operations: ${movement.active.length} active`);
    for (const r of movement.active) lines.push(`  ${operationLine(r, nowMs)}`);
  }
  for (const node of [...movement.draining].sort()) {
    const held = map.replicasOf(node).length;
    lines.push(held === 0 ? `drained: ${node} holds no replicas; can be stopped` : `draining: ${node} still holds ${held} replica${held === 1 ? '' : 's'}`);
  }
  return lines;
}

/** " (lagging by 12)", " (forwards retried 3×, last to HOST:PORT: …)" from a replica's replication report. */
function replicationText(r: ReplicationReport | undefined): string {
  if (r === undefined) return '';
  const lag = r.lagSequences > 0 ? ` (lagging by ${r.lagSequences})` : '';
  const retried = r.forwardRetries > 0 && r.lastForwardRetry !== undefined ? ` (forwards retried ${r.forwardRetries}×, last to ${r.lastForwardRetry.successor}: ${r.lastForwardRetry.error.slice(0, 80)})` : '';
  return lag + retried;
}

/** " (copying 1200/5000 rows, 1.2 MB)" for a syncing replica's latest report. */
function progressText(s: SyncReport | undefined): string {
  if (s === undefined) return '';
  const mb = (s.bytes / 1e6).toFixed(1);
  // A fast sync copies the keys changed since the replica's last write; a full one, every row.
  const what = s.mode === 'fast' ? 'changed keys' : 'rows';
  const mode = s.mode === undefined ? '' : `${s.mode} sync, `;
  const rate = s.maxBytesPerSecond === undefined ? '' : `, throttled to ${(s.maxBytesPerSecond / 1e6).toFixed(1)} MB/s`;
  if (s.state === 'copied') return ` (${mode}copied ${s.rows} ${what}, ${mb} MB; verified, awaiting promotion)`;
  if (s.state === 'failed') return ` (${mode}sync failed, retrying: ${s.error ?? 'unknown error'})`;
  if (s.state === 'resync') return ` (restarted head asking to be resynced: ${s.error ?? ''})`;
  return ` (${mode}copying ${s.rows}/${s.totalRows} ${what}, ${mb} MB from ${s.source}${rate})`;
}
