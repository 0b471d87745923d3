import type { Etcd3, Watcher } from 'etcd3';
import { z } from 'zod';
import type { Logger } from '../common/index.js';
import { etcdCall } from './etcd-connection.js';
import { PartitionMap } from './partition-map.js';
import { StoreError } from './store-errors.js';

/** Default key prefix of one cluster in etcd (`--etcd-prefix` is not offered yet: one cluster per etcd). */
export const ETCD_PREFIX = '/shardpipe/v1';

/**
 * The keys one cluster uses in etcd (README "etcd layout"):
 * - `map`: the partition map, JSON file form with chains and epochs;
 * - `map-version`: the map's version as a decimal string, the key every change compares (CAS);
 * - `nodes/HOST:PORT`: a node's registration, attached to its lease (gone when the lease is);
 * - `coordinator/`: the coordinators' election (etcd3 Election).
 */
export function etcdKeys(prefix = ETCD_PREFIX): {
  map: string;
  mapVersion: string;
  nodes: string;
  node: (address: string) => string;
  election: string;
  syncs: string;
  sync: (partition: number, address: string) => string;
  replication: string;
  replicationOf: (partition: number, address: string) => string;
} {
  return {
    map: `${prefix}/map`,
    mapVersion: `${prefix}/map-version`,
    nodes: `${prefix}/nodes/`,
    node: (address) => `${prefix}/nodes/${address}`,
    election: `${prefix}/coordinator`,
    // `syncs/PARTITION/HOST:PORT`: a syncing replica's progress, under its node's lease.
    syncs: `${prefix}/syncs/`,
    sync: (partition, address) => `${prefix}/syncs/${partition}/${address}`,
    // `replication/PARTITION/HOST:PORT`: a replica's lag and forward retries, under its node's lease.
    replication: `${prefix}/replication/`,
    replicationOf: (partition, address) => `${prefix}/replication/${partition}/${address}`,
  };
}

/**
 * What a syncing replica reports under its lease (`syncs/P/NODE`): `copying` with progress, then
 * `copied` once its copy matched the source snapshot's checksum at `epoch` — the coordinator then
 * promotes it to serving; `failed` (with `error`) while it retries.
 */
export interface SyncReport {
  partition: number;
  node: string;
  /** The partition's epoch the report is for; the coordinator only acts on the current one. */
  epoch: number;
  /** `resync`: not a sync yet but a restarted head asking to become one (it holds writes its successor lacks). */
  state: 'copying' | 'copied' | 'failed' | 'resync';
  /** The replica copied from. */
  source: string;
  rows: number;
  bytes: number;
  totalRows: number;
  /** `fast`: the keys changed since the replica's position (rows = keys copied, totalRows = keys changed); `full`: the whole partition. Absent in reports of older nodes. */
  mode?: 'fast' | 'full';
  /** Why a fast sync was not possible (the source's change log did not reach back to the replica's position), when it was tried. */
  fastSkipped?: string;
  /** The copy rate the sync keeps to (throttle/P/NODE), bytes/s; absent = unthrottled. */
  maxBytesPerSecond?: number;
  startedAtMs: number;
  updatedAtMs: number;
  error?: string;
}

/**
 * What a replica reports under its node's lease (`replication/P/NODE`, written when it changes, at
 * most every second): how far behind its head it is and the forwards it had to send again, so the
 * coordinator and `cluster status` see them, not only the node's log.
 */
export interface ReplicationReport {
  partition: number;
  node: string;
  epoch: number;
  lagSequences: number;
  forwardRetries: number;
  lastForwardRetry?: { successor: string; error: string; atMs: number };
  /** The replica's logical bytes and row count (PartitionStats logicalBytes / count): what rebalance weighs. Absent from nodes of before. */
  bytes?: number;
  rows?: number;
  updatedAtMs: number;
}

const replicationReportSchema = z.object({
  partition: z.number().int().min(0),
  node: z.string(),
  epoch: z.number().int().min(1),
  lagSequences: z.number().int().min(0),
  forwardRetries: z.number().int().min(0),
  lastForwardRetry: z.object({ successor: z.string(), error: z.string(), atMs: z.number() }).optional(),
  bytes: z.number().int().min(0).optional(),
  rows: z.number().int().min(0).optional(),
  updatedAtMs: z.number(),
});

const syncReportSchema = z.object({
  partition: z.number().int().min(0),
  node: z.string(),
  epoch: z.number().int().min(1),
  state: z.enum(['copying', 'copied', 'failed', 'resync']),
  source: z.string(),
  rows: z.number().int().min(0),
  bytes: z.number().int().min(0),
  totalRows: z.number().int().min(0),
  mode: z.enum(['fast', 'full']).optional(),
  fastSkipped: z.string().optional(),
  maxBytesPerSecond: z.number().min(0).optional(),
  startedAtMs: z.number(),
  updatedAtMs: z.number(),
  error: z.string().optional(),
});

/** What a node writes under its lease. */
export interface NodeRegistration {
  node: string;
  /** When this registration was written (Unix ms). */
  registeredAtMs: number;
  /** The lease's TTL as granted by etcd, in ms. */
  leaseMs: number;
  pid: number;
  /** The identity of the node's data folder: a registration with the same one is this node's own, left by an earlier run. */
  identity?: string;
}

const registrationSchema = z.object({ node: z.string(), registeredAtMs: z.number(), leaseMs: z.number(), pid: z.number(), identity: z.string().optional() });

/** A map read from etcd with the etcd revision it was read at (a watch continues from there). */
export interface StoredMap {
  map: PartitionMap;
  revision: string;
}

/**
 * The partition map and node registrations of one cluster in etcd. Every change of the map is one
 * transaction that writes the map and its version together, guarded by a compare on the version
 * read before (compare-and-swap): of two writers starting from the same map, exactly one wins.
 */
export class EtcdMapStore {
  readonly keys: ReturnType<typeof etcdKeys>;

  constructor(
    private readonly etcd: Etcd3,
    /** The etcd URL without secrets, for messages. */
    readonly display: string,
    prefix = ETCD_PREFIX,
  ) {
    this.keys = etcdKeys(prefix);
  }

  /** The current map, or undefined before `cluster init`. Linearizable read. */
  async read(): Promise<StoredMap | undefined> {
    const { map, revision } = await this.readAt();
    return map === undefined ? undefined : { map, revision };
  }

  /** The current map (if any) and the etcd revision of the read, to watch from. */
  async readAt(): Promise<{ map: PartitionMap | undefined; revision: string }> {
    const res = await etcdCall(this.display, 'reading the partition map', () => this.etcd.get(this.keys.map).exec());
    const kv = res.kvs[0];
    return { map: kv === undefined ? undefined : this.parse(kv.value), revision: res.header.revision };
  }

  /** Writes the first map; false when a map exists already. */
  async create(map: PartitionMap): Promise<boolean> {
    const res = await etcdCall(this.display, 'writing the first partition map', () =>
      this.etcd
        .if(this.keys.mapVersion, 'Create', '==', 0)
        .then(this.etcd.put(this.keys.map).value(JSON.stringify(map.toJson())), this.etcd.put(this.keys.mapVersion).value(String(map.version)))
        .commit(),
    );
    return res.succeeded;
  }

  /**
   * Replaces the map at version `expectedVersion` by `next` (whose version must be one higher) in
   * one transaction; false when the stored version is no longer `expectedVersion` (someone else won)
   * or a `guard` key changed since it was read at its `modRevision`.
   */
  async replace(expectedVersion: number, next: PartitionMap, guard?: { key: string; modRevision: string } | ReadonlyArray<{ key: string; modRevision: string }>): Promise<boolean> {
    if (next.version !== expectedVersion + 1) throw new RangeError(`a map change moves the version by one: expected ${expectedVersion + 1}, got ${next.version}`);
    let txn = this.etcd.if(this.keys.mapVersion, 'Value', '==', String(expectedVersion));
    // `guard`: also only while these keys are as read (a split's cut: the head's `paused` report).
    for (const g of guard === undefined ? [] : 'key' in guard ? [guard] : guard) txn = txn.and(g.key, 'Mod', '==', g.modRevision);
    const res = await etcdCall(this.display, `writing partition map version ${next.version}`, () =>
      txn.then(this.etcd.put(this.keys.map).value(JSON.stringify(next.toJson())), this.etcd.put(this.keys.mapVersion).value(String(next.version))).commit(),
    );
    return res.succeeded;
  }

  /**
   * Calls `onMap` with every map written after `revision` (the etcd client re-attaches a broken
   * watch and resumes where it was). Errors and reconnects go to the logger.
   */
  async watch(revision: string | undefined, onMap: (map: PartitionMap) => void, logger?: Logger): Promise<Watcher> {
    let builder = this.etcd.watch().key(this.keys.map);
    if (revision !== undefined) builder = builder.startRevision(String(BigInt(revision) + 1n));
    const watcher = await builder.create();
    watcher.on('put', (kv) => {
      try {
        onMap(this.parse(kv.value));
      } catch (err) {
        logger?.error({ err }, 'the partition map in etcd is invalid; keeping the installed one');
      }
    });
    watcher.on('disconnected', (err) => logger?.warn({ err: err.message }, 'etcd watch of the partition map disconnected; reconnecting'));
    watcher.on('error', (err) => logger?.warn({ err: err.message }, 'etcd watch of the partition map failed'));
    return watcher;
  }

  /** Registered (live) nodes, by address, with the etcd revision they were read at. */
  async nodes(): Promise<{ nodes: Map<string, NodeRegistration>; revision: string }> {
    const res = await etcdCall(this.display, 'reading node registrations', () => this.etcd.getAll().prefix(this.keys.nodes).exec());
    const nodes = new Map<string, NodeRegistration>();
    for (const kv of res.kvs) {
      const parsed = registrationSchema.safeParse(safeJson(kv.value.toString('utf8')));
      if (parsed.success) nodes.set(parsed.data.node, parsed.data);
    }
    return { nodes, revision: res.header.revision };
  }

  /** Watches registrations from `revision` on; `onChange` is called after every put or delete. */
  async watchNodes(revision: string, onChange: () => void, logger?: Logger): Promise<Watcher> {
    const watcher = await this.etcd.watch().prefix(this.keys.nodes).startRevision(String(BigInt(revision) + 1n)).create();
    watcher.on('put', onChange);
    watcher.on('delete', onChange);
    // A reconnected watch may have missed nothing (it resumes), but re-reading is cheap and certain.
    watcher.on('connected', onChange);
    watcher.on('disconnected', (err) => logger?.warn({ err: err.message }, 'etcd watch of node registrations disconnected; reconnecting'));
    watcher.on('error', (err) => logger?.warn({ err: err.message }, 'etcd watch of node registrations failed'));
    return watcher;
  }

  /** Every sync report (syncing replicas' progress), with the revision read at. */
  async syncReports(): Promise<{ reports: SyncReport[]; revision: string }> {
    const res = await etcdCall(this.display, 'reading sync reports', () => this.etcd.getAll().prefix(this.keys.syncs).exec());
    const reports: SyncReport[] = [];
    for (const kv of res.kvs) {
      const parsed = syncReportSchema.safeParse(safeJson(kv.value.toString('utf8')));
      if (parsed.success) reports.push(parsed.data);
    }
    return { reports, revision: res.header.revision };
  }

  /** Every replication report (replicas' lag and forward retries). */
  async replicationReports(): Promise<ReplicationReport[]> {
    const res = await etcdCall(this.display, 'reading replication reports', () => this.etcd.getAll().prefix(this.keys.replication).exec());
    const reports: ReplicationReport[] = [];
    for (const kv of res.kvs) {
      const parsed = replicationReportSchema.safeParse(safeJson(kv.value.toString('utf8')));
      if (parsed.success) reports.push(parsed.data);
    }
    return reports;
  }

  /** Watches replication reports from `revision` on; `onPut` gets every report written. */
  async watchReplication(revision: string, onPut: (report: ReplicationReport) => void, logger?: Logger): Promise<Watcher> {
    const watcher = await this.etcd.watch().prefix(this.keys.replication).startRevision(String(BigInt(revision) + 1n)).create();
    watcher.on('put', (kv) => {
      const parsed = replicationReportSchema.safeParse(safeJson(kv.value.toString('utf8')));
      if (parsed.success) onPut(parsed.data);
    });
    watcher.on('disconnected', (err) => logger?.warn({ err: err.message }, 'etcd watch of replication reports disconnected; reconnecting'));
    watcher.on('error', (err) => logger?.warn({ err: err.message }, 'etcd watch of replication reports failed'));
    return watcher;
  }

  /** Watches sync reports from `revision` on; `onChange` is called after every put or delete. */
  async watchSyncs(revision: string, onChange: () => void, logger?: Logger): Promise<Watcher> {
    const watcher = await this.etcd.watch().prefix(this.keys.syncs).startRevision(String(BigInt(revision) + 1n)).create();
    watcher.on('put', onChange);
    watcher.on('delete', onChange);
    watcher.on('connected', onChange);
    watcher.on('disconnected', (err) => logger?.warn({ err: err.message }, 'etcd watch of sync reports disconnected; reconnecting'));
    watcher.on('error', (err) => logger?.warn({ err: err.message }, 'etcd watch of sync reports failed'));
    return watcher;
  }

  private parse(value: Buffer): PartitionMap {
    try {
      return PartitionMap.fromJson(JSON.parse(value.toString('utf8')));
    } catch (err) {
      if (err instanceof StoreError) throw err;
      throw new StoreError('STORE_INVALID_MAP', `the partition map in etcd (${this.keys.map}) is not JSON: ${(err as Error).message}`, { cause: err });
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
