import { PartitionMap, displayBytes, type Partition, type PartitionSpec } from '../store/index.js';

/** The lowest partition id the map does not use. */
export function lowestUnusedId(map: PartitionMap): number {
  const used = new Set(map.partitions.map((p) => p.id));
  let id = 0;
  while (used.has(id)) id++;
  return id;
}

/**
 * Why partition `partition` cannot be split now (undefined: it can): it must exist, every replica
 * of its chain must be serving on a live node, `at` (when given) must lie strictly inside its
 * range, and `newPartition` (when given) must be unused.
 */
export function splitProblem(map: PartitionMap, live: ReadonlySet<string>, args: { partition: number; at?: Buffer; newPartition?: number }): string | undefined {
  const p = map.byId(args.partition);
  if (p === undefined) return `partition ${args.partition} is not in the map (version ${map.version}): pick one of ${map.partitions.map((x) => x.id).join(', ')}`;
  const syncing = p.chain.filter((r) => r.state !== 'serving').map((r) => r.node);
  if (syncing.length > 0) return `partition ${p.id} has a syncing replica (${syncing.join(', ')}): split it once every replica serves (cluster status)`;
  const down = p.chain.filter((r) => !live.has(r.node)).map((r) => r.node);
  if (down.length > 0) return `partition ${p.id} has a replica on a node that is not live (${down.join(', ')}): split it once the chain has recovered`;
  if (args.at !== undefined && !strictlyInside(p, args.at)) {
    return `split key "${displayBytes(args.at)}" is not strictly inside partition ${p.id} ["${displayBytes(p.start)}", "${p.end.length === 0 ? '∞' : displayBytes(p.end)}"): give a key above its start and below its end`;
  }
  if (args.newPartition !== undefined && map.byId(args.newPartition) !== undefined) return `partition id ${args.newPartition} is in use: leave --new-partition out to take the lowest unused id (${lowestUnusedId(map)})`;
  return undefined;
}

/**
 * Why the chain of `partition` cannot be cut now though it may soon (a syncing replica, a node
 * without a live lease): an operation that was already running waits for it rather than fail.
 */
export function chainNotWhole(map: PartitionMap, live: ReadonlySet<string>, partition: number): string | undefined {
  const p = map.byId(partition);
  if (p === undefined) return undefined;
  const waiting = p.chain.filter((r) => r.state !== 'serving' || !live.has(r.node)).map((r) => r.node);
  return waiting.length === 0 ? undefined : `waiting for the chain of partition ${p.id} to recover (${waiting.join(', ')} syncing or not live)`;
}

export function strictlyInside(p: Partition, key: Buffer): boolean {
  return key.compare(p.start) > 0 && (p.end.length === 0 || key.compare(p.end) < 0);
}

/**
 * The map that commits the split of `partition` at `at`: it keeps [start, at) under a new epoch and
 * `newPartition` takes [at, end) on the same chain (same replicas, same states), epoch the same new
 * one; version + 1.
 */
export function splitMap(map: PartitionMap, partition: number, at: Buffer, newPartition: number): PartitionMap {
  const p = map.byId(partition);
  if (p === undefined || !strictlyInside(p, at)) throw new RangeError(`cannot split partition ${partition} at ${at.toString('hex')}`);
  const specs: PartitionSpec[] = map.partitions.flatMap((x): PartitionSpec[] =>
    x.id !== partition
      ? [x]
      : [
          { id: x.id, start: x.start, end: at, chain: x.chain, epoch: x.epoch + 1, ...replicasOf(x) },
          { id: newPartition, start: at, end: x.end, chain: x.chain, epoch: x.epoch + 1, ...replicasOf(x) },
        ],
  );
  return PartitionMap.create(map.version + 1, specs, { replicas: map.replicas });
}

/** A partition's own replication factor (`set-replicas --partitions`), kept by both halves of a split and by a merge. */
function replicasOf(p: Partition): { replicas?: number } {
  return p.replicas === undefined ? {} : { replicas: p.replicas };
}

/** Whether `map` holds the split already: `newPartition` starts at `at` and `partition` ends there. */
export function splitCommitted(map: PartitionMap, partition: number, at: Buffer, newPartition: number): boolean {
  const q = map.byId(newPartition);
  return q !== undefined && q.start.equals(at) && map.byId(partition)?.end.equals(at) === true;
}

/**
 * The lower and upper partition of a merge of `partitions` (any order), or why they cannot merge
 * now: both must exist, be neighbours (one ends where the other starts) and have the same chain
 * (same nodes in the same order, every replica serving on a live node).
 */
export function mergePlan(map: PartitionMap, live: ReadonlySet<string>, partitions: readonly [number, number]): { lower: Partition; upper: Partition } | { problem: string } {
  const [a, b] = partitions.map((id) => map.byId(id));
  if (a === undefined || b === undefined) return { problem: `partition ${a === undefined ? partitions[0] : partitions[1]} is not in the map (version ${map.version}): pick two of ${map.partitions.map((x) => x.id).join(', ')}` };
  if (a.id === b.id) return { problem: `a merge needs two different partitions, got ${a.id} twice` };
  const [lower, upper] = a.end.equals(b.start) && a.end.length > 0 ? [a, b] : b.end.equals(a.start) && b.end.length > 0 ? [b, a] : [undefined, undefined];
  if (lower === undefined || upper === undefined) return { problem: `partitions ${a.id} and ${b.id} are not neighbours (one must end where the other starts): merge neighbours only` };
  const chainOf = (p: Partition): string => p.chain.map((r) => `${r.node}:${r.state}`).join(',');
  if (chainOf(lower) !== chainOf(upper)) return { problem: `partitions ${lower.id} and ${upper.id} have different chains (${lower.chain.map((r) => r.node).join(' → ')} vs ${upper.chain.map((r) => r.node).join(' → ')}): move replicas first so both chains are the same` };
  const problem = splitProblem(map, live, { partition: lower.id });
  return problem === undefined ? { lower, upper } : { problem };
}

/** The map that commits a merge: `lower` takes [lower.start, upper.end) at the larger epoch + 1; `upper` is gone; version + 1. */
export function mergeMap(map: PartitionMap, lower: number, upper: number): PartitionMap {
  const p = map.byId(lower);
  const q = map.byId(upper);
  if (p === undefined || q === undefined || !p.end.equals(q.start)) throw new RangeError(`cannot merge partitions ${lower} and ${upper}`);
  const specs: PartitionSpec[] = map.partitions.flatMap((x): PartitionSpec[] => (x.id === upper ? [] : x.id === lower ? [{ id: x.id, start: x.start, end: q.end, chain: x.chain, epoch: Math.max(p.epoch, q.epoch) + 1, ...replicasOf(x) }] : [x]));
  return PartitionMap.create(map.version + 1, specs, { replicas: map.replicas });
}

/** Back-off before the next cut after `attempts` cuts that ran out of time, ms: 200 doubling to 5 s. */
export function cutBackoffMs(attempts: number): number {
  return Math.min(5000, 200 * 2 ** Math.max(0, attempts - 1));
}

/** Cuts tried before a split fails (each held writes at most maxPauseMs). */
export const MAX_CUT_ATTEMPTS = 8;
