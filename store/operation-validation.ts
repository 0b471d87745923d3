import type { ZodError } from 'zod';
import { displayBytes } from './key.js';
import { MAX_CHAIN_REPLICAS, MAX_OPERATION_ID_CHARS, MAX_OPERATION_MOVEMENTS, MAX_OPERATION_PAUSE_MS, MAX_REQUESTED_BY_CHARS } from './field-limits.js';
import { parseOperationArgs, type OperationArgs } from './etcd-operations.js';
import type { Partition, PartitionMap } from './partition-map.js';
import { StoreError } from './store-errors.js';

const OPERATION_ID = /^op-[0-9a-z-]+$/;

/** What an operation is checked against: the map, the live registrations, the nodes marked draining. */
export interface OperationCheckContext {
  map: PartitionMap;
  /** Registered (live) nodes, HOST:PORT. */
  nodes: ReadonlySet<string>;
  /** Nodes with a `draining/` mark: nothing is placed on them. */
  draining: ReadonlySet<string>;
}

/** Limits as submitted; absent fields take the defaults. */
export interface OperationLimitsInput {
  maxBytesPerSecond?: number;
  maxMovements?: number;
  maxPauseMs?: number;
}

function invalid(message: string, context: Record<string, string | number | undefined> = {}): StoreError {
  return new StoreError('STORE_OPERATION_INVALID', message, { context });
}

/** The arguments as a record holds them; a ZodError becomes STORE_OPERATION_INVALID naming the field. */
export function checkedOperationArgs(value: unknown): OperationArgs {
  try {
    return parseOperationArgs(value);
  } catch (err) {
    const issues = (err as ZodError).issues;
    if (!Array.isArray(issues)) throw err;
    const text = issues.map((i) => `${i.path.length ? i.path.join('.') : 'arguments'}: ${i.message}`).join('; ');
    throw invalid(`invalid operation arguments: ${text}`);
  }
}

/** An operation id from outside (a flag, an RPC): `op-…`, at most 64 characters. */
export function checkOperationId(id: string): string {
  if (id.length === 0 || id.length > MAX_OPERATION_ID_CHARS || !OPERATION_ID.test(id)) {
    throw invalid(`"${id.slice(0, MAX_OPERATION_ID_CHARS)}" is not an operation id: ids look like op-20261201-180512-3fa9c1 (cluster operations lists them)`, { operation: id.slice(0, MAX_OPERATION_ID_CHARS) });
  }
  return id;
}

/** `requestedBy` from outside: printable, at most 200 characters. */
export function checkRequestedBy(text: string): string {
  if (text.length > MAX_REQUESTED_BY_CHARS || !/^[\x20-\x7e]*$/.test(text)) throw invalid(`requestedBy must be at most ${MAX_REQUESTED_BY_CHARS} printable ASCII characters, got ${text.length} characters`);
  return text;
}

/** Limits in their ranges; throws STORE_OPERATION_INVALID naming the limit, its value and the range. */
export function checkOperationLimits(limits: OperationLimitsInput): OperationLimitsInput {
  const within = (name: string, value: number | undefined, min: number, max: number): void => {
    if (value === undefined) return;
    if (!Number.isSafeInteger(value) || value < min || value > max) throw invalid(`${name} must be ${min}–${max}, got ${value}`, { field: name, value });
  };
  within('maxBytesPerSecond', limits.maxBytesPerSecond, 1, Number.MAX_SAFE_INTEGER);
  within('maxMovements', limits.maxMovements, 1, MAX_OPERATION_MOVEMENTS);
  within('maxPauseMs', limits.maxPauseMs, 1, MAX_OPERATION_PAUSE_MS);
  return limits;
}

/**
 * Checks an operation against the cluster before it is recorded: every partition it names exists,
 * a move's source holds a replica and its destination is live and not in the chain, a split key
 * lies strictly inside the range, merged partitions are neighbours, R fits the live nodes.
 * Throws STORE_OPERATION_INVALID saying what is wrong; pure (tests step through it without etcd).
 */
export function checkOperation(args: OperationArgs, ctx: OperationCheckContext): void {
  const { map, nodes, draining } = ctx;
  const live = [...nodes].filter((n) => !draining.has(n));
  const partition = (id: number, what = 'partition'): Partition => {
    const p = map.byId(id);
    if (p === undefined) throw invalid(`${what} ${id} does not exist: map version ${map.version} has partitions ${idList(map)}`, { partition: id });
    return p;
  };
  switch (args.kind) {
    case 'move': {
      const p = partition(args.partition);
      if (args.from === args.to) throw invalid(`--from and --to are both ${args.from}: a move needs two nodes`, { partition: p.id });
      if (!p.chain.some((r) => r.node === args.from)) throw invalid(`--from ${args.from} holds no replica of partition ${p.id} (chain: ${chainText(p)})`, { partition: p.id, node: args.from });
      if (p.chain.some((r) => r.node === args.to)) throw invalid(`--to ${args.to} holds a replica of partition ${p.id} already (chain: ${chainText(p)})`, { partition: p.id, node: args.to });
      if (!nodes.has(args.to)) throw invalid(`--to ${args.to} is not a registered node (registered: ${[...nodes].sort().join(', ') || 'none'}): start it with shardpipe store start --etcd`, { node: args.to });
      if (draining.has(args.to)) throw invalid(`--to ${args.to} is being drained: nothing is placed on it`, { node: args.to });
      return;
    }
    case 'drain-node': {
      const holds = map.replicasOf(args.node).length;
      if (holds === 0 && !nodes.has(args.node)) throw invalid(`${args.node} is neither registered nor in any chain: nothing to drain (nodes: ${[...new Set([...nodes, ...map.replicaNodes()])].sort().join(', ')})`, { node: args.node });
      const others = live.filter((n) => n !== args.node);
      const longest = Math.max(map.replicas, ...map.replicasOf(args.node).map((p) => p.chain.length));
      if (holds > 0 && others.length < longest) {
        throw invalid(`draining ${args.node} would leave ${others.length} live node${others.length === 1 ? '' : 's'} (${others.join(', ') || 'none'}) for chains of ${longest} replicas: start another node first, or lower R with cluster set-replicas`, { node: args.node });
      }
      return;
    }
    case 'set-replicas': {
      if (args.replicas > MAX_CHAIN_REPLICAS) throw invalid(`R must be 1–${MAX_CHAIN_REPLICAS}, got ${args.replicas}`);
      if (args.replicas > live.length) throw invalid(`R ${args.replicas} needs ${args.replicas} live nodes for distinct replicas, but ${live.length} ${live.length === 1 ? 'is' : 'are'} registered and not draining (${live.sort().join(', ') || 'none'})`);
      const seen = new Set<number>();
      for (const id of args.partitions ?? []) {
        if (seen.has(id)) throw invalid(`--partitions names partition ${id} twice`, { partition: id });
        seen.add(id);
        partition(id);
      }
      return;
    }
    case 'rebalance':
      if (live.length === 0) throw invalid('rebalance needs registered nodes that are not draining: none are');
      return;
    case 'split': {
      const p = partition(args.partition);
      if ((args.at === undefined) === (args.auto !== true)) throw invalid('a split needs either a key (--at or --at-hex) or --auto, not both and not neither', { partition: p.id });
      if (args.at !== undefined) {
        const at = Buffer.from(args.at, 'hex');
        const afterStart = Buffer.compare(at, p.start) > 0;
        const beforeEnd = p.end.length === 0 || Buffer.compare(at, p.end) < 0;
        if (!afterStart || !beforeEnd) {
          throw invalid(`split key ${displayBytes(at)} is not strictly inside partition ${p.id}'s range [${p.start.length ? displayBytes(p.start) : '-∞'}, ${p.end.length ? displayBytes(p.end) : '+∞'}): both halves must be non-empty ranges`, { partition: p.id });
        }
      }
      if (args.newPartition !== undefined && map.byId(args.newPartition) !== undefined) throw invalid(`the new partition's id ${args.newPartition} is taken`, { partition: args.newPartition });
      return;
    }
    case 'merge': {
      const [a, b] = args.partitions;
      if (a === b) throw invalid(`cannot merge partition ${a} with itself`, { partition: a });
      const p = partition(a);
      const q = partition(b);
      const neighbours = (p.end.length > 0 && p.end.equals(q.start)) || (q.end.length > 0 && q.end.equals(p.start));
      if (!neighbours) throw invalid(`partitions ${a} and ${b} are not neighbours: ${a} is ${rangeOf(p)}, ${b} is ${rangeOf(q)}; only adjacent ranges merge`, { partition: a });
      return;
    }
  }
}

function idList(map: PartitionMap): string {
  const ids = map.partitions.map((p) => p.id);
  return ids.length <= 20 ? ids.join(', ') : `${ids.slice(0, 20).join(', ')}, … (${ids.length})`;
}

function chainText(p: Partition): string {
  return p.chain.map((r) => `${r.node} ${r.state}`).join(' → ');
}

function rangeOf(p: Partition): string {
  return `[${p.start.length ? displayBytes(p.start) : '-∞'}, ${p.end.length ? displayBytes(p.end) : '+∞'})`;
}
