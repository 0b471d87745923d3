import { randomBytes } from 'node:crypto';
import type { Etcd3, Watcher } from 'etcd3';
import { z } from 'zod';
import type { Logger } from '../common/index.js';
import { etcdCall, etcdFailure } from './etcd-connection.js';
import { ETCD_PREFIX } from './etcd-map-store.js';

/**
 * What topology change an operation makes (README "Live data movement"): each is a plan the
 * leading coordinator carries out step by step, recorded in etcd so a coordinator that dies
 * half-way leaves a record the next leader resumes.
 */
export const OPERATION_KINDS = ['move', 'drain-node', 'set-replicas', 'rebalance', 'split', 'merge'] as const;
export type OperationKind = (typeof OPERATION_KINDS)[number];

/**
 * `pending` (submitted, no step started) → `running` → `completed` | `failed`; `cancelling` (asked
 * by `cluster cancel`) → `cancelled` once the coordinator has rolled back or finished the step in
 * hand. The last three are final.
 */
export const OPERATION_STATES = ['pending', 'running', 'completed', 'failed', 'cancelling', 'cancelled'] as const;
export type OperationState = (typeof OPERATION_STATES)[number];

export function isFinalOperationState(state: OperationState): boolean {
  return state === 'completed' || state === 'failed' || state === 'cancelled';
}

const node = z.string().regex(/^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$/, 'node must be HOST:PORT');
const partitionId = z.number().int().min(0).max(0xffffffff);
const hexKey = z.string().regex(/^(?:[0-9a-fA-F]{2})+$/, 'a key must be hex bytes');

/** The arguments of each kind, as `cluster …` submits them. */
const operationArgsSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('move'), partition: partitionId, from: node, to: node }),
  z.object({ kind: z.literal('drain-node'), node }),
  z.object({ kind: z.literal('set-replicas'), replicas: z.number().int().min(1).max(16), partitions: z.array(partitionId).optional() }),
  // `auto`: started by the coordinator itself when a node registered.
  z.object({ kind: z.literal('rebalance'), auto: z.boolean().optional() }),
  // `at` (hex) or `auto` (the partition's median from SplitKeys); `newPartition` is chosen by the coordinator when absent.
  z.object({ kind: z.literal('split'), partition: partitionId, at: hexKey.optional(), auto: z.boolean().optional(), newPartition: partitionId.optional() }),
  z.object({ kind: z.literal('merge'), partitions: z.tuple([partitionId, partitionId]) }),
]);
export type OperationArgs = z.infer<typeof operationArgsSchema>;

/** One step of a plan: what the coordinator does to one partition, with its progress. */
const stepSchema = z.object({
  /** For people: "move partition 3 from 127.0.0.1:7001 to 127.0.0.1:7004". */
  description: z.string(),
  partition: partitionId,
  from: node.optional(),
  to: node.optional(),
  state: z.enum(['pending', 'running', 'done', 'failed', 'skipped', 'rolled-back']),
  /** Where a running step is: e.g. "syncing", "removing source", "pausing writes". */
  phase: z.string().optional(),
  bytesTotal: z.number().int().min(0).optional(),
  bytesDone: z.number().int().min(0).optional(),
  rowsTotal: z.number().int().min(0).optional(),
  rowsDone: z.number().int().min(0).optional(),
  startedAtMs: z.number().optional(),
  finishedAtMs: z.number().optional(),
  error: z.string().optional(),
});
export type OperationStep = z.infer<typeof stepSchema>;

/** A read or write pause a step needed (a split's final cut, a head hand-over), measured. */
const pauseSchema = z.object({ partition: partitionId, ms: z.number().min(0), atMs: z.number(), reason: z.string() });
export type OperationPause = z.infer<typeof pauseSchema>;

const recordSchema = z.object({
  id: z.string().regex(/^op-[0-9a-z-]+$/),
  args: operationArgsSchema,
  state: z.enum(OPERATION_STATES),
  createdAtMs: z.number(),
  updatedAtMs: z.number(),
  finishedAtMs: z.number().optional(),
  /** Who submitted it: "cli HOST:PID", "coordinator ID" (auto-rebalance). */
  requestedBy: z.string().optional(),
  limits: z.object({
    /** Copy rate of each movement's sync, bytes/s; absent = unthrottled. */
    maxBytesPerSecond: z.number().int().min(1).optional(),
    /** Movements (syncing replicas this operation added) at once, cluster-wide with other operations'. */
    maxMovements: z.number().int().min(1),
    /** The longest a step may hold reads or writes; a step that would hold them longer backs off and tries again. */
    maxPauseMs: z.number().int().min(1),
  }),
  steps: z.array(stepSchema),
  pauses: z.array(pauseSchema),
  /** The latest thing that happened, for `cluster operations`. */
  message: z.string().optional(),
  error: z.string().optional(),
});
export type OperationRecord = z.infer<typeof recordSchema>;

/** A record with the etcd mod revision it was read at: what `update` compares. */
export interface StoredOperation {
  record: OperationRecord;
  modRevision: string;
}

export const DEFAULT_MAX_MOVEMENTS = 2;
export const DEFAULT_MAX_PAUSE_MS = 2000;

/** `op-20261201-180512-3fa9c1`: sorts by submission time. */
export function newOperationId(nowMs = Date.now()): string {
  const iso = new Date(nowMs).toISOString();
  return `op-${iso.slice(0, 10).replaceAll('-', '')}-${iso.slice(11, 19).replaceAll(':', '')}-${randomBytes(3).toString('hex')}`;
}

/** Checks a record from the outside (an RPC, a file); throws a ZodError naming the field. */
export function parseOperationRecord(value: unknown): OperationRecord {
  return recordSchema.parse(value);
}

/** Checks submitted arguments; throws a ZodError naming the field. */
export function parseOperationArgs(value: unknown): OperationArgs {
  return operationArgsSchema.parse(value);
}

/**
 * The keys of data movement (README "etcd layout"):
 * - `operations/ID`: an operation record (no lease: it outlives every process);
 * - `draining/HOST:PORT`: a node being drained or drained (no lease); nothing is placed on it;
 * - `throttle/P/HOST:PORT`: the copy rate for the sync of P's replica on that node `{maxBytesPerSecond, operation}`;
 * - `pause/P`: a request that P's head hold writes (`{operation, epoch, reason, maxPauseMs, requestedAtMs}`);
 *   `paused/P/HOST:PORT`: the head's answer under its lease;
 * - `gc/HOST:PORT`: a node's data awaiting GC, under its lease.
 */
export function operationKeys(prefix = ETCD_PREFIX): {
  operations: string;
  operation: (id: string) => string;
  draining: string;
  drainingOf: (address: string) => string;
  throttle: string;
  throttleOf: (partition: number, address: string) => string;
  pause: string;
  pauseOf: (partition: number) => string;
  paused: string;
  pausedOf: (partition: number, address: string) => string;
  gc: string;
  gcOf: (address: string) => string;
} {
  return {
    operations: `${prefix}/operations/`,
    operation: (id) => `${prefix}/operations/${id}`,
    draining: `${prefix}/draining/`,
    drainingOf: (address) => `${prefix}/draining/${address}`,
    throttle: `${prefix}/throttle/`,
    throttleOf: (partition, address) => `${prefix}/throttle/${partition}/${address}`,
    pause: `${prefix}/pause/`,
    pauseOf: (partition) => `${prefix}/pause/${partition}`,
    paused: `${prefix}/paused/`,
    pausedOf: (partition, address) => `${prefix}/paused/${partition}/${address}`,
    gc: `${prefix}/gc/`,
    gcOf: (address) => `${prefix}/gc/${address}`,
  };
}

/**
 * Operation records in etcd. Every change after `create` is a compare-and-swap on the record's
 * mod revision, so the CLI cancelling and the coordinator advancing never overwrite each other:
 * the loser reads again and re-applies its change.
 */
export class EtcdOperationStore {
  readonly keys: ReturnType<typeof operationKeys>;

  constructor(
    private readonly etcd: Etcd3,
    /** The etcd URL without secrets, for messages. */
    readonly display: string,
    prefix = ETCD_PREFIX,
  ) {
    this.keys = operationKeys(prefix);
  }

  /** Writes a new record; false when one with its id exists. */
  async create(record: OperationRecord): Promise<boolean> {
    const checked = recordSchema.parse(record);
    const key = this.keys.operation(checked.id);
    const res = await etcdCall(this.display, `writing operation ${checked.id}`, () => this.etcd.if(key, 'Create', '==', 0).then(this.etcd.put(key).value(JSON.stringify(checked))).commit());
    return res.succeeded;
  }

  async get(id: string): Promise<StoredOperation | undefined> {
    const res = await etcdCall(this.display, `reading operation ${id}`, () => this.etcd.get(this.keys.operation(id)).exec());
    const kv = res.kvs[0];
    if (kv === undefined) return undefined;
    const record = parseStored(kv.value);
    return record === undefined ? undefined : { record, modRevision: kv.mod_revision };
  }

  /** Every record, oldest first (ids sort by submission time), and the revision read at. Unreadable records are left out. */
  async list(): Promise<{ operations: StoredOperation[]; revision: string }> {
    const res = await etcdCall(this.display, 'reading operations', () => this.etcd.getAll().prefix(this.keys.operations).exec());
    const operations: StoredOperation[] = [];
    for (const kv of res.kvs) {
      const record = parseStored(kv.value);
      if (record !== undefined) operations.push({ record, modRevision: kv.mod_revision });
    }
    operations.sort((a, b) => (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : 0));
    return { operations, revision: res.header.revision };
  }

  /** Replaces the record read at `modRevision`; false when it changed since (read again and retry). */
  async replace(stored: StoredOperation, next: OperationRecord): Promise<boolean> {
    const checked = recordSchema.parse({ ...next, updatedAtMs: Date.now() });
    const key = this.keys.operation(checked.id);
    const res = await etcdCall(this.display, `updating operation ${checked.id}`, () => this.etcd.if(key, 'Mod', '==', stored.modRevision).then(this.etcd.put(key).value(JSON.stringify(checked))).commit());
    return res.succeeded;
  }

  /**
   * Applies `change` to the current record until the compare-and-swap wins (at most `attempts`
   * reads). `change` returning undefined leaves the record as it is. Resolves to the record written
   * (or left), undefined when there is no such operation.
   */
  async update(id: string, change: (record: OperationRecord) => OperationRecord | undefined, attempts = 20): Promise<OperationRecord | undefined> {
    for (let i = 0; i < attempts; i++) {
      const stored = await this.get(id);
      if (stored === undefined) return undefined;
      const next = change(stored.record);
      if (next === undefined) return stored.record;
      if (await this.replace(stored, next)) return next;
    }
    throw etcdFailure(new Error(`operation ${id} kept changing under ${attempts} updates`), this.display, `updating operation ${id}`);
  }

  /** Watches records from `revision` on; `onChange` after every put or delete (and on reconnect). */
  async watch(revision: string, onChange: () => void, logger?: Logger): Promise<Watcher> {
    const watcher = await this.etcd.watch().prefix(this.keys.operations).startRevision(String(BigInt(revision) + 1n)).create();
    watcher.on('put', onChange);
    watcher.on('delete', onChange);
    watcher.on('connected', onChange);
    watcher.on('disconnected', (err) => logger?.warn({ err: err.message }, 'etcd watch of operations disconnected; reconnecting'));
    watcher.on('error', (err) => logger?.warn({ err: err.message }, 'etcd watch of operations failed'));
    return watcher;
  }
}

function parseStored(value: Buffer): OperationRecord | undefined {
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch {
    return undefined;
  }
  const parsed = recordSchema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

/** `draining/HOST:PORT`: a node being drained or drained; nothing is placed on it while the mark is there. */
export interface DrainMark {
  node: string;
  /** The drain-node operation that set it. */
  operation: string;
  /** The registration's data-folder identity when it was marked: a node that registers with another one is a new node, and the mark goes. */
  identity?: string;
  markedAtMs: number;
}

const drainMarkSchema = z.object({ node, operation: z.string(), identity: z.string().optional(), markedAtMs: z.number() });

/** `throttle/P/HOST:PORT`: the copy rate the sync of P's replica on that node keeps to. */
export interface ThrottleMark {
  maxBytesPerSecond: number;
  operation: string;
}

const throttleMarkSchema = z.object({ maxBytesPerSecond: z.number().int().min(1), operation: z.string() });

/**
 * The marks operations leave beside their records (drains, throttles), in the same etcd. Puts are
 * plain (no lease): a mark outlives the coordinator that wrote it, and writing one twice is harmless.
 */
export class EtcdMovementMarks {
  readonly keys: ReturnType<typeof operationKeys>;

  constructor(
    private readonly etcd: Etcd3,
    readonly display: string,
    prefix = ETCD_PREFIX,
  ) {
    this.keys = operationKeys(prefix);
  }

  /** Every drain mark, by node. Unreadable marks count as marks without an identity (the node stays excluded). */
  async drainMarks(): Promise<Map<string, DrainMark>> {
    const res = await etcdCall(this.display, 'reading drain marks', () => this.etcd.getAll().prefix(this.keys.draining).exec());
    const marks = new Map<string, DrainMark>();
    for (const kv of res.kvs) {
      const address = kv.key.toString('utf8').slice(this.keys.draining.length);
      let json: unknown;
      try {
        json = JSON.parse(kv.value.toString('utf8'));
      } catch {
        json = undefined;
      }
      const parsed = drainMarkSchema.safeParse(json);
      marks.set(address, parsed.success ? parsed.data : { node: address, operation: 'unknown', markedAtMs: 0 });
    }
    return marks;
  }

  async markDraining(mark: DrainMark): Promise<void> {
    await this.put(this.keys.drainingOf(mark.node), JSON.stringify(drainMarkSchema.parse(mark)), `marking ${mark.node} draining`);
  }

  async clearDraining(address: string): Promise<void> {
    await this.del(this.keys.drainingOf(address), `clearing the drain mark of ${address}`);
  }

  async setThrottle(partition: number, address: string, mark: ThrottleMark): Promise<void> {
    await this.put(this.keys.throttleOf(partition, address), JSON.stringify(throttleMarkSchema.parse(mark)), `writing the throttle of partition ${partition} on ${address}`);
  }

  async clearThrottle(partition: number, address: string): Promise<void> {
    await this.del(this.keys.throttleOf(partition, address), `clearing the throttle of partition ${partition} on ${address}`);
  }

  private async put(key: string, value: string, what: string): Promise<void> {
    await etcdCall(this.display, what, () => this.etcd.put(key).value(value).exec());
  }

  private async del(key: string, what: string): Promise<void> {
    await etcdCall(this.display, what, () => this.etcd.delete().key(key).exec());
  }
}
