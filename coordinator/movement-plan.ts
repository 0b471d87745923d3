import { PartitionMap, targetReplicas, type OperationArgs, type OperationRecord, type OperationStep, type Partition, type PartitionSpec, type ReplicationReport, type Replica } from '../store/index.js';

/** How far from the fair share (total replica bytes ÷ nodes) a node may be after a rebalance: ±20 %. */
export const REBALANCE_TOLERANCE = 0.2;

/** What the planners of data movement read: the map, who is alive, who is draining, how big each partition is. */
export interface ClusterView {
  map: PartitionMap;
  /** Registered (live) nodes. */
  live: ReadonlySet<string>;
  /** Nodes with a drain mark: never a destination. */
  draining: ReadonlySet<string>;
  /** Logical bytes of one replica of each partition (from the replication reports); missing = 0. */
  bytes: ReadonlyMap<number, number>;
}

/** One planned movement: add `to` (if given), wait until it serves, remove `from` (if given). */
export interface PlannedStep {
  partition: number;
  from?: string;
  to?: string;
}

/** The bytes of one replica of each partition: the largest any of its replicas reported (a syncing one reports less). */
export function partitionBytes(reports: readonly ReplicationReport[]): Map<number, number> {
  const bytes = new Map<number, number>();
  for (const r of reports) if (r.bytes !== undefined) bytes.set(r.partition, Math.max(bytes.get(r.partition) ?? 0, r.bytes));
  return bytes;
}

/** Nodes that may receive replicas: live and not draining, sorted. */
export function eligibleNodes(view: ClusterView): string[] {
  return [...view.live].filter((n) => !view.draining.has(n)).sort();
}

/** Bytes each eligible node holds (every replica it has, syncing ones included), plus `extra` (movements planned but not in the map yet). */
export function nodeLoads(view: ClusterView, extra: ReadonlyMap<string, number> = new Map()): Map<string, number> {
  const loads = new Map<string, number>();
  for (const n of eligibleNodes(view)) loads.set(n, extra.get(n) ?? 0);
  for (const p of view.map.partitions) {
    const size = view.bytes.get(p.id) ?? 0;
    for (const r of p.chain) if (loads.has(r.node)) loads.set(r.node, loads.get(r.node)! + size);
  }
  return loads;
}

/** The fair share (total ÷ nodes) and whether every node is within `tolerance` of it (an empty cluster is balanced). */
export function fairShare(loads: ReadonlyMap<string, number>, tolerance = REBALANCE_TOLERANCE): { fair: number; balanced: boolean } {
  const values = [...loads.values()];
  const total = values.reduce((a, b) => a + b, 0);
  if (values.length === 0 || total === 0) return { fair: 0, balanced: true };
  const fair = total / values.length;
  return { fair, balanced: values.every((v) => Math.abs(v - fair) <= tolerance * fair) };
}

/**
 * The destination for a new replica of `partition`: the least-loaded eligible node (by bytes, then
 * by replica count, then address) that holds no replica of it and is not in `avoid`.
 */
export function pickTarget(view: ClusterView, partition: Partition, extra: ReadonlyMap<string, number> = new Map(), avoid: ReadonlySet<string> = new Set()): string | undefined {
  const loads = nodeLoads(view, extra);
  const counts = new Map<string, number>();
  for (const p of view.map.partitions) for (const r of p.chain) counts.set(r.node, (counts.get(r.node) ?? 0) + 1);
  return [...loads.entries()]
    .filter(([n]) => !partition.chain.some((r) => r.node === n) && !avoid.has(n))
    .sort(([a, la], [b, lb]) => la - lb || (counts.get(a) ?? 0) - (counts.get(b) ?? 0) || (a < b ? -1 : a > b ? 1 : 0))[0]?.[0];
}

/**
 * The replica `set-replicas` removes from `partition` when lowering: never the head, never the
 * last serving one; a syncing one first (it serves nothing yet), then the most loaded node's.
 */
export function pickReplicaToRemove(view: ClusterView, partition: Partition): string | undefined {
  const loads = nodeLoads({ ...view, draining: new Set() });
  const serving = partition.chain.filter((r) => r.state === 'serving');
  const candidates = partition.chain.slice(1).filter((r) => r.state === 'syncing' || serving.length > 1);
  const syncing = candidates.filter((r) => r.state === 'syncing');
  const pool = syncing.length > 0 ? syncing : candidates;
  return pool.map((r) => r.node).sort((a, b) => (loads.get(b) ?? 0) - (loads.get(a) ?? 0) || (a < b ? -1 : a > b ? 1 : 0))[0];
}

/**
 * Why an operation cannot even start (STORE_OPERATION_REFUSED), or undefined. Checks what the map
 * and the registrations say now: the partition exists, `from` holds it, `to` is live, eligible
 * and does not hold it, a raised R has enough eligible nodes.
 */
export function refusal(args: OperationArgs, view: ClusterView): string | undefined {
  const { map } = view;
  const chainText = (p: Partition): string => p.chain.map((r) => `${r.node} ${r.state}`).join(' → ');
  switch (args.kind) {
    case 'move': {
      const p = map.byId(args.partition);
      if (p === undefined) return `the map (version ${map.version}) has no partition ${args.partition}`;
      if (args.from === args.to) return `move of partition ${args.partition}: --from and --to are the same node (${args.from})`;
      if (!p.chain.some((r) => r.node === args.from)) return `partition ${args.partition} has no replica on ${args.from}: its chain is ${chainText(p)}`;
      if (p.chain.some((r) => r.node === args.to)) return `partition ${args.partition} has a replica on ${args.to} already: its chain is ${chainText(p)}`;
      if (!view.live.has(args.to)) return `${args.to} is not registered (no live node there): start it with --etcd first`;
      if (view.draining.has(args.to)) return `${args.to} is draining: nothing is placed on it (its drain mark goes when a new node registers there)`;
      return undefined;
    }
    case 'drain-node': {
      const others = eligibleNodes(view).filter((n) => n !== args.node);
      for (const p of map.replicasOf(args.node)) {
        if (!others.some((n) => !p.chain.some((r) => r.node === n))) {
          return `draining ${args.node} needs a live node outside the chain of partition ${p.id} (${chainText(p)}) to move its replica to, and there is none: start one first`;
        }
      }
      return undefined;
    }
    case 'set-replicas': {
      for (const id of args.partitions ?? []) if (map.byId(id) === undefined) return `the map (version ${map.version}) has no partition ${id}`;
      const eligible = eligibleNodes(view);
      if (args.replicas > eligible.length) return `${args.replicas} replicas need ${args.replicas} live nodes that are not draining, and there are ${eligible.length} (${eligible.join(', ') || 'none'})`;
      return undefined;
    }
    case 'rebalance':
      return undefined;
    default:
      return `operations of kind ${args.kind} are not carried out by the movement runner`;
  }
}

/** The steps of draining `node`: one move off it per replica it holds, destinations chosen when each step starts. */
export function planDrain(view: ClusterView, node: string): PlannedStep[] {
  return view.map.replicasOf(node).map((p) => ({ partition: p.id, from: node }));
}

/**
 * The steps of `set-replicas R`: per partition short of R, one step adding a replica per missing
 * one (destinations chosen when each starts); per partition above R, one step removing a replica
 * per extra one (chosen now: never the head or the last serving one, the most loaded node first).
 */
export function planSetReplicas(view: ClusterView, replicas: number, partitions?: readonly number[]): PlannedStep[] {
  const steps: PlannedStep[] = [];
  const chosen = (partitions ?? view.map.partitions.map((p) => p.id)).map((id) => view.map.byId(id)!);
  for (const p of chosen) {
    for (let n = p.chain.length; n < replicas; n++) steps.push({ partition: p.id });
    let chain = p;
    for (let n = p.chain.length; n > replicas; n--) {
      const victim = pickReplicaToRemove(view, chain);
      if (victim === undefined) break;
      steps.push({ partition: p.id, from: victim });
      chain = { ...chain, chain: chain.chain.filter((r) => r.node !== victim) };
    }
  }
  return steps;
}

/**
 * Moves that bring every eligible node within `tolerance` of the fair share by bytes, greedily:
 * from the most loaded node to the least loaded one, the replica whose size comes closest to
 * halving their difference (a move only when it narrows it), a non-head replica before a head on
 * a tie. Chains with a syncing replica, or short of or above their R, are left alone (something
 * else is changing them). At most `maxMoves` moves.
 */
export function planRebalance(view: ClusterView, options: { tolerance?: number; maxMoves?: number } = {}): PlannedStep[] {
  const tolerance = options.tolerance ?? REBALANCE_TOLERANCE;
  const loads = nodeLoads(view);
  if (loads.size < 2) return [];
  const chains = new Map<number, string[]>();
  for (const p of view.map.partitions) {
    if (p.chain.some((r) => r.state === 'syncing') || p.chain.length !== targetReplicas(view.map, p)) continue;
    chains.set(p.id, p.chain.map((r) => r.node));
  }
  const maxMoves = options.maxMoves ?? view.map.partitions.length * view.map.replicas;
  const moves: PlannedStep[] = [];
  const moved = new Set<number>();
  while (moves.length < maxMoves && !fairShare(loads, tolerance).balanced) {
    const order = [...loads.entries()].sort(([a, la], [b, lb]) => lb - la || (a < b ? -1 : a > b ? 1 : 0));
    const [from, fromLoad] = order[0]!;
    const [to, toLoad] = order[order.length - 1]!;
    const gap = fromLoad - toLoad;
    let best: { partition: number; score: number; head: boolean } | undefined;
    for (const [id, nodes] of chains) {
      // One move per partition per rebalance: its chain changes under the move.
      if (moved.has(id) || !nodes.includes(from) || nodes.includes(to)) continue;
      const size = view.bytes.get(id) ?? 0;
      if (size <= 0 || size >= gap) continue;
      const score = Math.abs(gap / 2 - size);
      const head = nodes[0] === from;
      if (best === undefined || score < best.score || (score === best.score && best.head && !head)) best = { partition: id, score, head };
    }
    if (best === undefined) break;
    const size = view.bytes.get(best.partition) ?? 0;
    moves.push({ partition: best.partition, from, to });
    moved.add(best.partition);
    loads.set(from, fromLoad - size);
    loads.set(to, toLoad + size);
  }
  return moves;
}

/** Steps that hold a movement (a syncing replica an operation added): running with a destination not yet serving. */
export function isMovement(step: OperationStep): boolean {
  return step.state === 'running' && step.to !== undefined && (step.phase === 'adding' || step.phase === 'syncing');
}

/** Movements of every operation in `operations` at once (the cluster-wide `maxMovements` counts these). */
export function movementsInFlight(operations: readonly OperationRecord[]): number {
  return operations.reduce((n, op) => n + op.steps.filter(isMovement).length, 0);
}

/** `map` with `node` added to `partition`'s chain as a syncing tail: epoch + 1, version + 1. */
export function addSyncingTail(map: PartitionMap, partition: number, node: string): PartitionMap {
  return changeChain(map, partition, (p) => ({ chain: [...p.chain, { node, state: 'syncing' }] }));
}

/**
 * `map` without `node` in `partition`'s chain (its successor heads if it was head): epoch + 1,
 * version + 1; with `replicas`, the partition's own R set to it in the same change. Throws
 * RangeError for the chain's last serving replica (the caller checks first).
 */
export function removeReplica(map: PartitionMap, partition: number, node: string, replicas?: number): PartitionMap {
  return changeChain(map, partition, (p) => {
    const chain = p.chain.filter((r) => r.node !== node);
    if (!chain.some((r) => r.state === 'serving')) throw new RangeError(`${node} holds the last serving replica of partition ${partition}: it cannot be removed`);
    return { chain, ...(replicas === undefined ? {} : { replicas }) };
  });
}

/** `map` with `partition`'s own R set (epoch unchanged: the chain is not touched), version + 1. */
export function setPartitionReplicas(map: PartitionMap, partition: number, replicas: number): PartitionMap {
  const specs = map.partitions.map((p): PartitionSpec => (p.id === partition ? { ...specOf(p), replicas } : specOf(p)));
  return PartitionMap.create(map.version + 1, specs, { replicas: map.replicas });
}

/** `map` with the map-wide R set and every partition's own R dropped (they all follow the map's again), version + 1. */
export function setMapReplicas(map: PartitionMap, replicas: number): PartitionMap {
  const specs = map.partitions.map((p): PartitionSpec => ({ id: p.id, start: p.start, end: p.end, chain: p.chain, epoch: p.epoch }));
  return PartitionMap.create(map.version + 1, specs, { replicas });
}

function changeChain(map: PartitionMap, partition: number, change: (p: Partition) => { chain: Replica[]; replicas?: number }): PartitionMap {
  if (map.byId(partition) === undefined) throw new RangeError(`the map (version ${map.version}) has no partition ${partition}`);
  const specs = map.partitions.map((p): PartitionSpec => {
    if (p.id !== partition) return specOf(p);
    const next = change(p);
    const chain = [...next.chain.filter((r) => r.state === 'serving'), ...next.chain.filter((r) => r.state === 'syncing')];
    const replicas = next.replicas ?? p.replicas;
    return { id: p.id, start: p.start, end: p.end, chain, epoch: p.epoch + 1, ...(replicas === undefined ? {} : { replicas }) };
  });
  return PartitionMap.create(map.version + 1, specs, { replicas: map.replicas });
}

function specOf(p: Partition): PartitionSpec {
  return { id: p.id, start: p.start, end: p.end, chain: p.chain, epoch: p.epoch, ...(p.replicas === undefined ? {} : { replicas: p.replicas }) };
}
