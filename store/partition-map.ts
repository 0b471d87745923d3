import { z } from 'zod';
import { Key, DEFAULT_MAX_KEY_BYTES, displayBytes } from './key.js';
import { StoreError } from './store-errors.js';
import type { PartitionMapProto } from './proto/gen/shardpipe/store/v1/store.js';

/** One range partition `[start, end)`. Empty `start` = the beginning, empty `end` = the end of the keyspace. */
export interface Partition {
  readonly id: number;
  readonly start: Buffer;
  readonly end: Buffer;
  /** The owning node's address, HOST:PORT. */
  readonly node: string;
}

const NODE_ADDRESS = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$/;

const mapFileSchema = z.object({
  version: z.number().int().min(1, 'version must be 1 or more'),
  partitions: z
    .array(
      z.object({
        id: z.number().int().min(0).max(0xffffffff),
        start: z.string().regex(/^(?:[0-9a-fA-F]{2})*$/, 'start must be hex bytes ("" = beginning)'),
        end: z.string().regex(/^(?:[0-9a-fA-F]{2})*$/, 'end must be hex bytes ("" = end)'),
        node: z.string().regex(NODE_ADDRESS, 'node must be HOST:PORT'),
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
  /** Sorted by start. */
  readonly partitions: readonly Partition[];

  private constructor(version: number, partitions: Partition[]) {
    this.version = version;
    this.partitions = Object.freeze(partitions);
    Object.freeze(this);
  }

  /** Builds and validates a map; throws StoreError STORE_INVALID_MAP naming the first problem. */
  static create(version: number, partitions: readonly Partition[], maxKeyBytes = DEFAULT_MAX_KEY_BYTES): PartitionMap {
    if (!Number.isSafeInteger(version) || version < 1) invalid(`version must be a whole number of 1 or more, got ${version}`);
    if (partitions.length === 0) invalid('a map needs at least one partition');
    const sorted = [...partitions].sort((a, b) => Buffer.compare(a.start, b.start));
    const ids = new Set<number>();
    sorted.forEach((p, i) => {
      if (!Number.isInteger(p.id) || p.id < 0 || p.id > 0xffffffff) invalid(`partition id must be a whole number 0–4294967295, got ${p.id}`);
      if (ids.has(p.id)) invalid(`partition id ${p.id} is used twice`);
      ids.add(p.id);
      if (!NODE_ADDRESS.test(p.node)) invalid(`partition ${p.id}: node must be HOST:PORT, got "${p.node}"`);
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
    return new PartitionMap(version, sorted.map((p) => Object.freeze({ id: p.id, start: Buffer.from(p.start), end: Buffer.from(p.end), node: p.node })));
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
      parsed.data.partitions.map((p) => ({ id: p.id, start: Buffer.from(p.start, 'hex'), end: Buffer.from(p.end, 'hex'), node: p.node })),
    );
  }

  static fromProto(proto: PartitionMapProto): PartitionMap {
    return PartitionMap.create(proto.version, proto.partitions.map((p) => ({ id: p.id, start: p.start, end: p.end, node: p.node })));
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
    const partitions: Partition[] = [];
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

  /** Partitions assigned to `node`. */
  partitionsOf(node: string): Partition[] {
    return this.partitions.filter((p) => p.node === node);
  }

  /** Distinct node addresses, in key order of their first partition. */
  nodes(): string[] {
    return [...new Set(this.partitions.map((p) => p.node))];
  }

  /** Same version and identical partitions. */
  equals(other: PartitionMap): boolean {
    return (
      this.version === other.version &&
      this.partitions.length === other.partitions.length &&
      this.partitions.every((p, i) => {
        const q = other.partitions[i]!;
        return p.id === q.id && p.node === q.node && p.start.equals(q.start) && p.end.equals(q.end);
      })
    );
  }

  /** The same partitions under a new version. */
  withVersion(version: number): PartitionMap {
    return PartitionMap.create(version, this.partitions);
  }

  toJson(): PartitionMapJson {
    return {
      version: this.version,
      partitions: this.partitions.map((p) => ({ id: p.id, start: p.start.toString('hex'), end: p.end.toString('hex'), node: p.node })),
    };
  }

  toProto(): PartitionMapProto {
    return { version: this.version, partitions: this.partitions.map((p) => ({ id: p.id, start: p.start, end: p.end, node: p.node })) };
  }
}

/** True when `key` lies in `[partition.start, partition.end)`. */
export function partitionContains(partition: Pick<Partition, 'start' | 'end'>, key: Uint8Array): boolean {
  return Buffer.compare(partition.start, key) <= 0 && (partition.end.length === 0 || Buffer.compare(key, partition.end) < 0);
}

function invalid(message: string): never {
  throw new StoreError('STORE_INVALID_MAP', `invalid partition map: ${message}`);
}
