import { z } from 'zod';
import { Key, DEFAULT_MAX_KEY_BYTES, displayBytes } from './key.js';
import { MAX_CHAIN_REPLICAS, MAX_MAP_VERSION } from './field-limits.js';
import { StoreError } from './store-errors.js';
import type { PartitionMapProto, ReplicaProto } from './proto/gen/shardpipe/store/v1/store.js';

/** What a replica of a chain does (store/README.md has the table of states and transitions). */
export type ReplicaState = 'serving' | 'syncing';

/** One replica of a partition's chain. */
export interface Replica {
  /** HOST:PORT. */
  readonly node: string;
  readonly state: ReplicaState;
}

/** One range partition `[start, end)`. Empty `start` = the beginning, empty `end` = the end of the keyspace. */
export interface Partition {
  readonly id: number;
  readonly start: Buffer;
  readonly end: Buffer;
  /** The chain head's address, HOST:PORT: the node writes go to (reads go to readNodeOf). */
  readonly node: string;
  /** The replicas, head first; a static map's partition is a chain of one serving replica. */
  readonly chain: readonly Replica[];
  /** Changes whenever the chain or the range changes; 1 in a static map. */
  readonly epoch: number;
  /** Replicas this chain should have when it differs from the map's (`cluster set-replicas --partitions`); absent = the map's. */
  readonly replicas?: number;
}

/** The replicas `partition`'s chain should have: its own setting, else the map's. */
export function targetReplicas(map: PartitionMap, partition: Partition): number {
  return partition.replicas ?? map.replicas;
}

/** The replica reads of a partition go to: the last serving one of its chain (a syncing tail serves no reads). */
export function readNodeOf(partition: Partition): string {
  for (let i = partition.chain.length - 1; i >= 0; i--) if (partition.chain[i]!.state === 'serving') return partition.chain[i]!.node;
  return partition.node;
}

/** A partition as given to PartitionMap.create: without `chain`, a chain of one (`node`, serving). */
export interface PartitionSpec {
  readonly id: number;
  readonly start: Buffer;
  readonly end: Buffer;
  /** The head; may be left out when `chain` is given, and must then equal its first node. */
  readonly node?: string;
  readonly chain?: readonly Replica[];
  /** Default 1. */
  readonly epoch?: number;
  /** Replicas this chain should have, 1–16; absent = the map's. Kept in the JSON form only (the proto map does not carry it: only the coordinator uses it). */
  readonly replicas?: number;
}

/** Map-wide settings beside the partitions. */
export interface PartitionMapOptions {
  /** Replicas each chain should have (the coordinator adds syncing tails up to it). Default 1. */
  replicas?: number;
  maxKeyBytes?: number;
}

const NODE_ADDRESS = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$/;

const REPLICA_STATES: readonly ReplicaState[] = ['serving', 'syncing'];

const mapFileSchema = z.object({
  version: z.number().int().min(1, 'version must be 1 or more'),
  replicas: z.number().int().min(1).max(MAX_CHAIN_REPLICAS).optional(),
  partitions: z
    .array(
      z.object({
        id: z.number().int().min(0).max(0xffffffff),
        start: z.string().regex(/^(?:[0-9a-fA-F]{2})*$/, 'start must be hex bytes ("" = beginning)'),
        end: z.string().regex(/^(?:[0-9a-fA-F]{2})*$/, 'end must be hex bytes ("" = end)'),
        node: z.string().regex(NODE_ADDRESS, 'node must be HOST:PORT'),
        chain: z
          .array(z.object({ node: z.string().regex(NODE_ADDRESS, 'node must be HOST:PORT'), state: z.enum(['serving', 'syncing']) }))
          .min(1, 'a chain needs at least one replica')
          .max(MAX_CHAIN_REPLICAS)
          .optional(),
        epoch: z.number().int().min(1).max(MAX_MAP_VERSION).optional(),
        replicas: z.number().int().min(1).max(MAX_CHAIN_REPLICAS).optional(),
      }),
    )
    .min(1, 'a map needs at least one partition'),
});

/** The JSON file form of a map: keys as hex strings. */
export type PartitionMapJson = z.infer<typeof mapFileSchema>;

/**
 * A versioned set of range partitions covering the whole keyspace without gaps or overlaps.
 * Immutable; lookups are binary searches.
 */
export class PartitionMap {
  readonly version: number;
  /** Replicas each chain should have (the replication factor); 1 for a static map. */
  readonly replicas: number;
  /** Sorted by start. */
  readonly partitions: readonly Partition[];

  private constructor(version: number, replicas: number, partitions: Partition[]) {
    this.version = version;
    this.replicas = replicas;
    this.partitions = Object.freeze(partitions);
    Object.freeze(this);
  }

  /**
   * Builds and validates a map; throws StoreError STORE_INVALID_MAP naming the first problem.
   * The last argument is the longest key (a number, as before) or the map options.
   */
  static create(version: number, partitions: readonly PartitionSpec[], options: number | PartitionMapOptions = {}): PartitionMap {
    const { maxKeyBytes = DEFAULT_MAX_KEY_BYTES, replicas = 1 } = typeof options === 'number' ? { maxKeyBytes: options } : options;
    if (!Number.isSafeInteger(version) || version < 1) invalid(`version must be a whole number of 1 or more, got ${version}`);
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_CHAIN_REPLICAS) invalid(`replicas must be 1–${MAX_CHAIN_REPLICAS}, got ${replicas}`);
    if (partitions.length === 0) invalid('a map needs at least one partition');
    const sorted = [...partitions].sort((a, b) => Buffer.compare(a.start, b.start));
    const ids = new Set<number>();
    sorted.forEach((p, i) => {
      if (!Number.isInteger(p.id) || p.id < 0 || p.id > 0xffffffff) invalid(`partition id must be a whole number 0–4294967295, got ${p.id}`);
      if (ids.has(p.id)) invalid(`partition id ${p.id} is used twice`);
      ids.add(p.id);
      checkChain(p);
      for (const [name, bound] of [['start', p.start], ['end', p.end]] as const) {
        if (bound.length > 0 && Key.problem(bound, maxKeyBytes) !== undefined) {
          invalid(`partition ${p.id}: ${name} ${Key.problem(bound, maxKeyBytes)}`);
        }
      }
      if (i === 0 && p.start.length !== 0) invalid(`gap: the first partition (${p.id}) must start at the beginning of the keyspace (""), starts at "${displayBytes(p.start)}"`);
      const next = sorted[i + 1];
      if (next === undefined) {
        if (p.end.length !== 0) invalid(`gap: the last partition (${p.id}) must end at the end of the keyspace (""), ends at "${displayBytes(p.end)}"`);
      } else {
        if (p.end.length === 0) invalid(`overlap: partition ${p.id} runs to the end of the keyspace but partition ${next.id} starts at "${displayBytes(next.start)}"`);
        const cmp = Buffer.compare(p.end, next.start);
        if (cmp < 0) invalid(`gap between partition ${p.id} (ends "${displayBytes(p.end)}") and ${next.id} (starts "${displayBytes(next.start)}")`);
        if (cmp > 0) invalid(`overlap between partition ${p.id} (ends "${displayBytes(p.end)}") and ${next.id} (starts "${displayBytes(next.start)}")`);
      }
      if (p.end.length > 0 && Buffer.compare(p.start, p.end) >= 0) invalid(`partition ${p.id} is empty: start "${displayBytes(p.start)}" is not below end "${displayBytes(p.end)}"`);
    });
    return new PartitionMap(
      version,
      replicas,
      sorted.map((p) => {
        const chain = Object.freeze((p.chain ?? [{ node: p.node!, state: 'serving' as const }]).map((r) => Object.freeze({ node: r.node, state: r.state })));
        return Object.freeze({ id: p.id, start: Buffer.from(p.start), end: Buffer.from(p.end), node: chain[0]!.node, chain, epoch: p.epoch ?? 1, ...(p.replicas === undefined ? {} : { replicas: p.replicas }) });
      }),
    );
  }

  /** Parses the JSON file form (validated with precise errors). */
  static fromJson(json: unknown): PartitionMap {
    const parsed = mapFileSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      invalid(`${issue?.path.join('.') || 'map'}: ${issue?.message ?? 'invalid'}`);
    }
    return PartitionMap.create(
      parsed.data.version,
      parsed.data.partitions.map((p) => ({ id: p.id, start: Buffer.from(p.start, 'hex'), end: Buffer.from(p.end, 'hex'), node: p.node, chain: p.chain, epoch: p.epoch, replicas: p.replicas })),
      { replicas: parsed.data.replicas ?? 1 },
    );
  }

  static fromProto(proto: PartitionMapProto): PartitionMap {
    return PartitionMap.create(
      proto.version,
      proto.partitions.map((p) => ({
        id: p.id,
        start: p.start,
        end: p.end,
        node: p.node,
        chain: p.chain.length === 0 ? undefined : p.chain.map(replicaFromProto),
        epoch: p.epoch === 0 ? 1 : p.epoch,
      })),
      { replicas: proto.replicas === 0 ? 1 : proto.replicas },
    );
  }

  /**
   * A map of `count` partitions split evenly over the first two key bytes (boundary i is the
   * 2-byte big-endian value floor(i × 65536 / count)), assigned to `nodes` round-robin.
   */
  static evenlySplit(version: number, nodes: readonly string[], count: number): PartitionMap {
    if (!Number.isInteger(count) || count < 1 || count > 65536) throw new RangeError(`partitions must be 1–65536, got ${count}`);
    const splits: Buffer[] = [];
    for (let i = 1; i < count; i++) {
      const b = Buffer.alloc(2);
      b.writeUInt16BE(Math.floor((i * 65536) / count));
      splits.push(b);
    }
    return PartitionMap.fromSplitKeys(version, nodes, splits);
  }

  /** A map whose partitions start at the given sorted, distinct split keys, nodes round-robin. */
  static fromSplitKeys(version: number, nodes: readonly string[], splitKeys: readonly Buffer[]): PartitionMap {
    if (nodes.length === 0) throw new RangeError('at least one node is needed');
    const bounds = [Buffer.alloc(0), ...splitKeys, Buffer.alloc(0)];
    const partitions: PartitionSpec[] = [];
    for (let i = 0; i + 1 < bounds.length; i++) {
      partitions.push({ id: i, start: bounds[i]!, end: bounds[i + 1]!, node: nodes[i % nodes.length]! });
    }
    return PartitionMap.create(version, partitions);
  }

  /** The partition that owns `key`. */
  lookup(key: Uint8Array): Partition {
    const parts = this.partitions;
    let lo = 0;
    let hi = parts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (Buffer.compare(parts[mid]!.start, key) <= 0) lo = mid;
      else hi = mid - 1;
    }
    return parts[lo]!;
  }

  byId(id: number): Partition | undefined {
    return this.partitions.find((p) => p.id === id);
  }

  /** Partitions whose chain `node` heads (the ones it serves until chains forward writes). */
  partitionsOf(node: string): Partition[] {
    return this.partitions.filter((p) => p.node === node);
  }

  /** Partitions whose chain holds a replica on `node`, in any state. */
  replicasOf(node: string): Partition[] {
    return this.partitions.filter((p) => p.chain.some((r) => r.node === node));
  }

  /** Distinct chain-head addresses, in key order of their first partition. */
  nodes(): string[] {
    return [...new Set(this.partitions.map((p) => p.node))];
  }

  /** Distinct addresses of the replicas reads go to (each chain's tail: its last serving replica), in key order. */
  readNodes(): string[] {
    return [...new Set(this.partitions.map(readNodeOf))];
  }

  /** Distinct addresses of every replica of every chain, in key order of their first partition. */
  replicaNodes(): string[] {
    return [...new Set(this.partitions.flatMap((p) => p.chain.map((r) => r.node)))];
  }

  /** Same version, replication factor and identical partitions (ranges, chains, epochs). */
  equals(other: PartitionMap): boolean {
    return (
      this.version === other.version &&
      this.replicas === other.replicas &&
      this.partitions.length === other.partitions.length &&
      this.partitions.every((p, i) => {
        const q = other.partitions[i]!;
        return (
          p.id === q.id &&
          p.epoch === q.epoch &&
          p.replicas === q.replicas &&
          p.start.equals(q.start) &&
          p.end.equals(q.end) &&
          p.chain.length === q.chain.length &&
          p.chain.every((r, j) => r.node === q.chain[j]!.node && r.state === q.chain[j]!.state)
        );
      })
    );
  }

  /** The same partitions under a new version. */
  withVersion(version: number): PartitionMap {
    return PartitionMap.create(version, this.partitions, { replicas: this.replicas });
  }

  /** A static single-replica map writes the file form it always had; chains and epochs appear otherwise. */
  toJson(): PartitionMapJson {
    const plain = this.replicas === 1 && this.partitions.every((p) => p.chain.length === 1 && p.epoch === 1 && p.replicas === undefined);
    return {
      version: this.version,
      ...(plain ? {} : { replicas: this.replicas }),
      partitions: this.partitions.map((p) => ({
        id: p.id,
        start: p.start.toString('hex'),
        end: p.end.toString('hex'),
        node: p.node,
        ...(plain ? {} : { chain: p.chain.map((r) => ({ node: r.node, state: r.state })), epoch: p.epoch }),
        ...(p.replicas === undefined ? {} : { replicas: p.replicas }),
      })),
    };
  }

  toProto(): PartitionMapProto {
    return {
      version: this.version,
      replicas: this.replicas,
      partitions: this.partitions.map((p) => ({ id: p.id, start: p.start, end: p.end, node: p.node, chain: p.chain.map(replicaToProto), epoch: p.epoch })),
    };
  }
}

/** Chain invariants (store/README.md): non-empty, distinct nodes, head serving, serving before syncing. */
function checkChain(p: PartitionSpec): void {
  const chain = p.chain ?? (p.node === undefined ? [] : [{ node: p.node, state: 'serving' as const }]);
  if (chain.length === 0) invalid(`partition ${p.id}: a chain needs at least one replica`);
  if (chain.length > MAX_CHAIN_REPLICAS) invalid(`partition ${p.id}: a chain may have at most ${MAX_CHAIN_REPLICAS} replicas, got ${chain.length}`);
  if (p.node !== undefined && p.node !== chain[0]!.node) invalid(`partition ${p.id}: node "${p.node}" is not the head of its chain ("${chain[0]!.node}")`);
  const seen = new Set<string>();
  chain.forEach((r, i) => {
    if (!NODE_ADDRESS.test(r.node)) invalid(`partition ${p.id}: node must be HOST:PORT, got "${r.node}"`);
    if (!REPLICA_STATES.includes(r.state)) invalid(`partition ${p.id}: replica ${r.node} has unknown state "${String(r.state)}" (serving or syncing)`);
    if (seen.has(r.node)) invalid(`partition ${p.id}: node ${r.node} is in its chain twice`);
    seen.add(r.node);
    if (i === 0 && r.state !== 'serving') invalid(`partition ${p.id}: the head ${r.node} must be serving, is ${r.state}`);
    if (r.state === 'serving' && chain[i - 1]?.state === 'syncing') invalid(`partition ${p.id}: serving replica ${r.node} comes after a syncing one (syncing replicas are the tail)`);
  });
  if (p.epoch !== undefined && (!Number.isSafeInteger(p.epoch) || p.epoch < 1)) invalid(`partition ${p.id}: epoch must be a whole number of 1 or more, got ${p.epoch}`);
  if (p.replicas !== undefined && (!Number.isInteger(p.replicas) || p.replicas < 1 || p.replicas > MAX_CHAIN_REPLICAS)) invalid(`partition ${p.id}: replicas must be 1–${MAX_CHAIN_REPLICAS}, got ${p.replicas}`);
}

function replicaFromProto(r: ReplicaProto): Replica {
  if (r.state > 2) invalid(`replica ${r.node}: state must be 0–2 (1 serving, 2 syncing), got ${r.state}`);
  return { node: r.node, state: r.state === 2 ? 'syncing' : 'serving' };
}

function replicaToProto(r: Replica): ReplicaProto {
  return { node: r.node, state: r.state === 'syncing' ? 2 : 1 };
}

/** True when `key` lies in `[partition.start, partition.end)`. */
export function partitionContains(partition: Pick<Partition, 'start' | 'end'>, key: Uint8Array): boolean {
  return Buffer.compare(partition.start, key) <= 0 && (partition.end.length === 0 || Buffer.compare(key, partition.end) < 0);
}

function invalid(message: string): never {
  throw new StoreError('STORE_INVALID_MAP', `invalid partition map: ${message}`);
}
