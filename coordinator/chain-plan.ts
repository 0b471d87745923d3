import { PartitionMap, StoreError, targetReplicas, type Partition, type PartitionSpec, type Replica } from '../store/index.js';

/** How the first map cuts the keyspace: evenly into `partitions`, or at sorted, distinct split keys. */
export type InitialRanges = { partitions: number } | { splitKeys: readonly Buffer[] };

/**
 * The first map of a cluster (version 1, every epoch 1, every replica serving: there is no data to
 * copy yet). Chain i is nodes i, i+1, … i+R−1 (mod n) of the sorted registered nodes, so replicas
 * of one chain are on distinct nodes and heads are spread evenly (partition counts per head differ
 * by at most one).
 */
export function initialMap(nodes: readonly string[], replicas: number, ranges: InitialRanges): PartitionMap {
  const sorted = [...new Set(nodes)].sort();
  if (!Number.isInteger(replicas) || replicas < 1) throw new RangeError(`replicas must be a whole number ≥ 1, got ${replicas}`);
  if (sorted.length < replicas) {
    throw new StoreError('STORE_CLUSTER_NODES_MISSING', `${replicas} replicas need ${replicas} distinct nodes, but ${sorted.length} are registered (${sorted.join(', ') || 'none'})`);
  }
  // Only the ranges are taken from this helper map; chains are placed below.
  const ranged = 'partitions' in ranges ? PartitionMap.evenlySplit(1, [sorted[0]!], ranges.partitions) : PartitionMap.fromSplitKeys(1, [sorted[0]!], ranges.splitKeys);
  const specs: PartitionSpec[] = ranged.partitions.map((p, i) => ({
    id: p.id,
    start: p.start,
    end: p.end,
    epoch: 1,
    chain: Array.from({ length: replicas }, (_, j): Replica => ({ node: sorted[(i + j) % sorted.length]!, state: 'serving' })),
  }));
  return PartitionMap.create(1, specs, { replicas });
}

/** What one reconcile pass changed, for logs and tests. */
export interface ChainChange {
  partition: number;
  removed: string[];
  added: string[];
  epoch: number;
}

/**
 * The map after one membership pass, or undefined when nothing changes (store/README.md,
 * "Transitions the coordinator makes"):
 * - a replica on a node that is not `live` leaves its chain, except the chain's last serving replica
 *   (the only copy there is; the partition waits for that node to return);
 * - a chain with fewer than its replicas (the partition's own `replicas`, else the map's) gets live
 *   nodes that do not hold it and are not in `excluded` (draining) as syncing tails, the nodes with
 *   the fewest replicas first (then by address);
 * - each partition touched gets epoch + 1, and the map version + 1, all in the one map returned.
 */
export function reconcile(map: PartitionMap, live: ReadonlySet<string>, excluded: ReadonlySet<string> = new Set()): { map: PartitionMap; changes: ChainChange[] } | undefined {
  const load = new Map<string, number>();
  for (const node of live) if (!excluded.has(node)) load.set(node, 0);
  const kept = map.partitions.map((p) => {
    const survivors = p.chain.filter((r) => live.has(r.node));
    // No serving replica left alive: keep the head (every serving replica holds every acknowledged
    // write, and the head is where the data is until chains forward). Syncing ones follow it.
    const chain = survivors.some((r) => r.state === 'serving') ? survivors : [p.chain[0]!, ...survivors];
    return { partition: p, chain };
  });
  for (const { chain } of kept) for (const r of chain) if (load.has(r.node)) load.set(r.node, load.get(r.node)! + 1);
  const changes: ChainChange[] = [];
  const specs: PartitionSpec[] = kept.map(({ partition, chain }) => {
    const removed = partition.chain.filter((r) => !chain.includes(r)).map((r) => r.node);
    const added: string[] = [];
    while (chain.length < targetReplicas(map, partition)) {
      const candidate = [...load.entries()]
        .filter(([node]) => !chain.some((r) => r.node === node))
        .sort(([a, la], [b, lb]) => la - lb || (a < b ? -1 : a > b ? 1 : 0))[0];
      if (candidate === undefined) break;
      chain.push({ node: candidate[0], state: 'syncing' });
      load.set(candidate[0], candidate[1] + 1);
      added.push(candidate[0]);
    }
    if (removed.length === 0 && added.length === 0) return specOf(partition, partition.chain, partition.epoch);
    changes.push({ partition: partition.id, removed, added, epoch: partition.epoch + 1 });
    return specOf(partition, chain, partition.epoch + 1);
  });
  if (changes.length === 0) return undefined;
  return { map: PartitionMap.create(map.version + 1, specs, { replicas: map.replicas }), changes };
}

function specOf(p: Partition, chain: readonly Replica[], epoch: number): PartitionSpec {
  return { id: p.id, start: p.start, end: p.end, chain, epoch, ...(p.replicas === undefined ? {} : { replicas: p.replicas }) };
}

/** A syncing replica that finished its copy at an epoch (from its `syncs/` report in etcd). */
export interface CopiedReplica {
  partition: number;
  node: string;
  epoch: number;
}

/**
 * The map after promoting every syncing replica whose verified copy was reported at its partition's
 * current epoch (an older report may predate a chain change it has not seen): its state becomes
 * `serving` and it moves before the chain's remaining syncing replicas; epoch + 1 per partition,
 * map version + 1. Undefined when no report applies.
 */
export function promote(map: PartitionMap, copied: readonly CopiedReplica[]): { map: PartitionMap; promoted: CopiedReplica[] } | undefined {
  const promoted: CopiedReplica[] = [];
  const specs = map.partitions.map((p) => {
    const ready = new Set(copied.filter((c) => c.partition === p.id && c.epoch === p.epoch && p.chain.some((r) => r.node === c.node && r.state === 'syncing')).map((c) => c.node));
    if (ready.size === 0) return specOf(p, p.chain, p.epoch);
    const chain = p.chain.map((r): Replica => (ready.has(r.node) ? { node: r.node, state: 'serving' } : r));
    for (const node of ready) promoted.push({ partition: p.id, node, epoch: p.epoch + 1 });
    return specOf(p, [...chain.filter((r) => r.state === 'serving'), ...chain.filter((r) => r.state === 'syncing')], p.epoch + 1);
  });
  if (promoted.length === 0) return undefined;
  return { map: PartitionMap.create(map.version + 1, specs, { replicas: map.replicas }), promoted };
}

/**
 * `cluster repair P --replica NODE`: that replica goes back to `syncing` at the chain's tail (its
 * node copies the partition again), epoch + 1, map version + 1. Refused (STORE_REPAIR_REFUSED) when
 * the node holds no replica of P or holds its only serving one (there is nothing to copy from).
 */
export function resync(map: PartitionMap, partitionId: number, node: string): PartitionMap {
  const p = map.byId(partitionId);
  if (p === undefined) throw new StoreError('STORE_REPAIR_REFUSED', `the map (version ${map.version}) has no partition ${partitionId}`);
  const replica = p.chain.find((r) => r.node === node);
  if (replica === undefined) throw new StoreError('STORE_REPAIR_REFUSED', `partition ${partitionId} has no replica on ${node}: its chain is ${p.chain.map((r) => `${r.node} ${r.state}`).join(' → ')}`);
  if (replica.state === 'syncing') throw new StoreError('STORE_REPAIR_REFUSED', `the replica of partition ${partitionId} on ${node} is syncing already: it becomes serving once its copy is verified (cluster status shows its progress)`);
  const others = p.chain.filter((r) => r.node !== node);
  if (!others.some((r) => r.state === 'serving')) {
    throw new StoreError('STORE_REPAIR_REFUSED', `${node} holds the only serving replica of partition ${partitionId}: there is no other replica to copy it from (restore it from a backup instead)`);
  }
  const chain = [...others.filter((r) => r.state === 'serving'), ...others.filter((r) => r.state === 'syncing'), { node, state: 'syncing' as const }];
  const specs = map.partitions.map((q) => (q.id === partitionId ? specOf(q, chain, q.epoch + 1) : specOf(q, q.chain, q.epoch)));
  return PartitionMap.create(map.version + 1, specs, { replicas: map.replicas });
}
