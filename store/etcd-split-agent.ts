import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3, Lease, Watcher } from 'etcd3';
import type { Logger } from '../common/index.js';
import { etcdKeys } from './etcd-map-store.js';
import { operationKeys } from './etcd-operations.js';
import { splitEtcdKeys, splitValues, type MergePrepareRequest, type PausedReport, type PauseRequest, type SplitPreparedReport, type SplitPrepareRequest } from './etcd-split.js';
import { readNodeOf } from './partition-map.js';
import { StoreError } from './store-errors.js';
import type { StoreNode } from './store-node.js';
import type { WritePauseRecord } from './write-pause.js';

/** Options of a node's part in splits over etcd. */
export interface EtcdSplitAgentOptions {
  etcd: Etcd3;
  node: StoreNode;
  /** This node's address, HOST:PORT. */
  address: string;
  /** The node's current lease (it changes when the node registers again). */
  lease: () => Lease;
  prefix?: string;
  logger: Logger;
  /** Test-only fault injection: while a file exists at this path, prepares wait before they start. */
  holdPreparesFile?: string;
}

interface HeldPause {
  operation: string;
  epoch: number;
  mapVersion: number;
  heldAtMs: number;
  /** Set once the timeout's release won (its report is written). */
  releasedByTimeout?: boolean;
  timer?: NodeJS.Timeout;
}

/**
 * A node's side of splits in etcd (store/README.md "Split and merge"): follows `prepare/P`
 * (prepares the split of a partition it holds; the read replica answers an `--auto` split's median
 * key) and `pause/P` (as P's head: holds writes, reports `paused` once the chain is at one sequence
 * number, releases them when the split's map is installed, or when the pause runs out — the latter
 * only by a transaction that succeeds while the map is still the one it paused under, so a split
 * committed from that `paused` report can never meet writes the head let go on).
 */
/** How long a prepare waits for this node's map to catch up with the request: 25 × 200 ms. */
const CATCH_UP_ATTEMPTS = 25;
const CATCH_UP_PAUSE_MS = 200;

export class EtcdSplitAgent {
  private readonly etcd: Etcd3;
  private readonly node: StoreNode;
  private readonly address: string;
  private readonly lease: () => Lease;
  private readonly logger: Logger;
  private readonly holdPreparesFile: string | undefined;
  private readonly keys: ReturnType<typeof splitEtcdKeys> & ReturnType<typeof operationKeys>;
  private readonly mapVersionKey: string;
  private watchers: Watcher[] = [];
  /** Reports written, by key: the same one is not written again. */
  private readonly reported = new Map<string, string>();
  /** The prepare in flight per partition: its operation/key (or merge/operation) and the epoch it was asked at. */
  private readonly preparing = new Map<number, { id: string; epoch: number }>();
  /** Partitions whose request was made again at another epoch while a prepare was in flight: looked at again when it ends. */
  private readonly superseded = new Set<number>();
  private readonly pauses = new Map<number, HeldPause>();
  /** The pause request (its `requestedAtMs`) last acted on, by partition: one request, one hold. */
  private readonly handled = new Map<number, number>();
  private readonly stopRelease: () => void;
  private pending = false;
  private running: Promise<void> | undefined;
  private closed = false;

  constructor(options: EtcdSplitAgentOptions) {
    this.etcd = options.etcd;
    this.node = options.node;
    this.address = options.address;
    this.lease = options.lease;
    this.logger = options.logger.child({ module: 'split' });
    this.holdPreparesFile = options.holdPreparesFile;
    this.keys = { ...splitEtcdKeys(options.prefix), ...operationKeys(options.prefix) };
    this.mapVersionKey = etcdKeys(options.prefix).mapVersion;
    this.stopRelease = this.node.writePause.onRelease((r) => this.released(r));
  }

  /**
   * Removes this node's `paused` reports from an earlier run (their lease may still live: a head
   * killed mid-cut must not have its old report taken for a pause it no longer holds), then follows
   * the requests.
   */
  async start(): Promise<void> {
    const stale = await this.etcd.getAll().prefix(this.keys.paused).keys();
    for (const key of stale) if (key.endsWith(`/${this.address}`)) await this.etcd.delete().key(key).exec();
    const { header } = await this.etcd.get(this.keys.prepare).exec();
    const from = String(BigInt(header.revision) + 1n);
    for (const prefix of [this.keys.prepare, this.keys.merge, this.keys.pause]) {
      const watcher = await this.etcd.watch().prefix(prefix).startRevision(from).create();
      watcher.on('put', () => this.kick());
      watcher.on('delete', () => this.kick());
      watcher.on('connected', () => this.kick());
      watcher.on('error', (err) => this.logger.warn({ err: err.message }, 'etcd watch of split requests failed'));
      this.watchers.push(watcher);
    }
    this.kick();
  }

  /** Looks at the requests again (after every map installed, and every change to them). */
  kick(): void {
    if (this.closed) return;
    this.pending = true;
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stopRelease();
    for (const held of this.pauses.values()) clearTimeout(held.timer);
    await Promise.all(this.watchers.map((w) => w.cancel().catch((err: unknown) => this.logger.debug({ err }, 'cancelling a split watch failed'))));
    await this.running;
  }

  private async drain(): Promise<void> {
    while (this.pending && !this.closed) {
      this.pending = false;
      try {
        await this.reconcile();
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'following split requests failed; trying again');
        await new Promise((resolve) => setTimeout(resolve, 200));
        this.pending = true;
      }
    }
  }

  private async reconcile(): Promise<void> {
    const [prepares, merges, pauses] = await Promise.all([this.readAll(this.keys.prepare, splitValues.prepare), this.readAll(this.keys.merge, splitValues.merge), this.readAll(this.keys.pause, splitValues.pause)]);
    const map = this.node.map;
    const keep = new Map<number, string>();
    for (const r of prepares.values()) if (r.at !== undefined) keep.set(r.newPartition, r.operation);
    await this.node.forgetSplitsExcept(keep);
    for (const [partition, request] of prepares) {
      const p = map.byId(partition);
      if (p === undefined || p.epoch !== request.epoch || map.byId(request.newPartition) !== undefined) continue;
      if (p.chain.find((r) => r.node === this.address)?.state !== 'serving') continue;
      if (request.at === undefined) {
        if (readNodeOf(p) === this.address) await this.reportMedian(request);
        continue;
      }
      this.startPrepare(partition, `${request.operation}/${request.at}`, request.epoch, () => this.prepare(request));
    }
    await this.node.forgetMergesExcept(new Map([...merges].map(([partition, r]) => [partition, r.operation])));
    for (const [partition, request] of merges) {
      const p = map.byId(partition);
      const q = map.byId(request.other);
      if (p === undefined || q === undefined || p.epoch !== request.epoch || q.epoch !== request.otherEpoch) continue;
      this.startPrepare(partition, `merge/${request.operation}`, request.epoch, () => this.prepareMerge(request));
    }
    for (const [partition, request] of pauses) {
      const p = map.byId(partition);
      if (p === undefined || p.node !== this.address || p.epoch !== request.epoch) continue;
      if (this.handled.get(partition) === request.requestedAtMs) continue;
      this.handled.set(partition, request.requestedAtMs);
      void this.pause(partition, request);
    }
    // A pause whose request went (the operation gave up or finished): its writes go on.
    for (const partition of [...this.pauses.keys()]) {
      if (!pauses.has(partition) && this.node.writePause.isHeld(partition)) this.node.releaseWrites(partition, 'the pause request was removed');
    }
    // A pause held under a map version etcd has moved past, P unchanged (another partition's step
    // was committed meanwhile): the commit needs the version the pause was reported under, so no
    // commit can use it any more. Its writes go on now (not held until P changes) and the
    // coordinator, seeing `released`, asks again.
    for (const [partition, held] of [...this.pauses]) {
      if (held.mapVersion < map.version && this.node.writePause.isHeld(partition)) this.node.releaseWrites(partition, `the map changed under the pause (version ${held.mapVersion} → ${map.version}) without a change to partition ${partition}: the cut is asked again`);
    }
  }

  /** Runs a split's or merge's prepare of `partition` unless one of that request is in flight (see stillPreparing). */
  private startPrepare(partition: number, id: string, epoch: number, run: () => Promise<void>): void {
    if (this.stillPreparing(partition, id, epoch)) return;
    const flight = { id, epoch };
    this.preparing.set(partition, flight);
    void run().finally(() => this.prepared(partition, flight));
  }

  /**
   * Whether this request's prepare is in flight already. The coordinator asks again at a new epoch
   * when the chain changed under a split; that request waits for the one in flight (one prepare of
   * P at a time), which is then looked at again: without that it waited for an unrelated change.
   */
  private stillPreparing(partition: number, id: string, epoch: number): boolean {
    const flight = this.preparing.get(partition);
    if (flight?.id !== id) return false;
    if (flight.epoch !== epoch) this.superseded.add(partition);
    return true;
  }

  private prepared(partition: number, flight: { id: string; epoch: number }): void {
    if (this.preparing.get(partition) === flight) this.preparing.delete(partition);
    if (this.superseded.delete(partition)) this.kick();
  }

  private async readAll<T>(prefix: string, parse: (v: Buffer) => T | undefined): Promise<Map<number, T>> {
    const res = await this.etcd.getAll().prefix(prefix).exec();
    const out = new Map<number, T>();
    for (const kv of res.kvs) {
      const id = Number(kv.key.toString().slice(prefix.length));
      const value = parse(kv.value);
      if (Number.isInteger(id) && value !== undefined) out.set(id, value);
    }
    return out;
  }

  private async reportMedian(request: SplitPrepareRequest): Promise<void> {
    const key = await this.node.medianKey(request.partition);
    const report: SplitPreparedReport =
      key === undefined
        ? { operation: request.operation, node: this.address, epoch: request.epoch, state: 'failed', error: `partition ${request.partition} has too few rows to find a median key: give the split key (--at)`, updatedAtMs: Date.now() }
        : { operation: request.operation, node: this.address, epoch: request.epoch, state: 'key', at: key.toString('hex'), updatedAtMs: Date.now() };
    await this.report(this.keys.preparedOf(request.partition, this.address), report);
  }

  private async prepare(request: SplitPrepareRequest): Promise<void> {
    const at = Buffer.from(request.at!, 'hex');
    let report: SplitPreparedReport;
    try {
      await this.whileHeld(request);
      const rows = await this.whileMapCatchesUp(request, () => this.node.prepareSplit({ operation: request.operation, partition: request.partition, epoch: request.epoch, newPartition: request.newPartition, at }));
      report = { operation: request.operation, node: this.address, epoch: request.epoch, state: 'prepared', at: request.at, rows, updatedAtMs: Date.now() };
    } catch (err) {
      if (this.closed || this.outdatedPrepare(request, err)) return;
      this.logger.warn({ err, partition: request.partition, operation: request.operation }, 'preparing a split failed');
      report = { operation: request.operation, node: this.address, epoch: request.epoch, state: 'failed', at: request.at, error: (err as Error).message, updatedAtMs: Date.now() };
    }
    await this.report(this.keys.preparedOf(request.partition, this.address), report).catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'writing a split report failed; writing it again with the next change'));
  }

  private async prepareMerge(request: MergePrepareRequest): Promise<void> {
    let report: SplitPreparedReport;
    try {
      await this.whileHeld(request);
      const rows = await this.whileMapCatchesUp(request, () => this.node.prepareMerge(request));
      report = { operation: request.operation, node: this.address, epoch: request.epoch, state: 'prepared', rows, updatedAtMs: Date.now() };
    } catch (err) {
      if (this.closed || this.outdatedPrepare(request, err)) return;
      this.logger.warn({ err, partition: request.partition, operation: request.operation }, 'preparing a merge failed');
      report = { operation: request.operation, node: this.address, epoch: request.epoch, state: 'failed', error: (err as Error).message, updatedAtMs: Date.now() };
    }
    await this.report(this.keys.preparedOf(request.partition, this.address), report).catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'writing a merge report failed; writing it again with the next change'));
  }

  /**
   * Whether a prepare that failed was for an epoch this node's map is past (the chain changed under
   * it: a drain moved the partition away and closed its store here, a replica was removed). No
   * `failed` report then: one at the old epoch could still be taken by a coordinator that has not
   * seen the change yet and end the operation; the coordinator asks again at the new epoch instead.
   */
  private outdatedPrepare(request: { partition: number; epoch: number; operation: string }, err: unknown): boolean {
    if (!this.mapIsPast(request)) return false;
    this.logger.info({ err: (err as Error).message, partition: request.partition, operation: request.operation, requestEpoch: request.epoch, epoch: this.node.map.byId(request.partition)?.epoch }, 'a prepare for an older epoch ended without a report: the operation is asked again at the new one');
    return true;
  }

  /** Whether this node's map has the request's partition at a newer epoch than the request's. */
  private mapIsPast(request: { partition: number; epoch: number }): boolean {
    return (this.node.map.byId(request.partition)?.epoch ?? -1) > request.epoch;
  }

  /** Fault injection (SHARDPIPE_FAULT_INJECTION_HOLD_PREPARES): waits while the hold file exists. */
  private async whileHeld(request: { partition: number; epoch: number; operation: string }): Promise<void> {
    const file = this.holdPreparesFile;
    if (file === undefined || !existsSync(file)) return;
    this.logger.warn({ partition: request.partition, epoch: request.epoch, operation: request.operation }, 'fault injection: holding a prepare (SHARDPIPE_FAULT_INJECTION_HOLD_PREPARES)');
    while (existsSync(file) && !this.closed) await sleep(50);
  }

  /**
   * A request can reach this node before the map it was planned from (or before the install that
   * gives it the partitions asked about has finished): a refusal for ownership or epoch is tried
   * again for a few seconds before it is reported as a failure that ends the operation. A request
   * this node's map is past (the partition is at a newer epoch here) is not waited for: the
   * coordinator asks again at the new epoch.
   */
  private async whileMapCatchesUp<T>(request: { partition: number; epoch: number }, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const transient = err instanceof StoreError && (err.code === 'STORE_NOT_OWNER' || err.code === 'STORE_STALE_EPOCH');
        if (!transient || this.mapIsPast(request) || this.closed || attempt >= CATCH_UP_ATTEMPTS) throw err;
        await sleep(CATCH_UP_PAUSE_MS);
      }
    }
  }

  /** Holds P's writes for the cut; reports `paused` once the chain is at one sequence number. */
  private async pause(partition: number, request: PauseRequest): Promise<void> {
    const mapVersion = this.node.map.version;
    const held: HeldPause = { operation: request.operation, epoch: request.epoch, mapVersion, heldAtMs: Date.now() };
    this.pauses.set(partition, held);
    const position = await this.node.holdWrites(partition, request.maxPauseMs).catch((err: unknown) => {
      this.logger.warn({ err: (err as Error).message, partition }, 'holding writes for a cut failed');
      return undefined;
    });
    held.heldAtMs = this.node.writePause.heldSince(partition) ?? held.heldAtMs;
    if (this.pauses.get(partition) !== held || !this.node.writePause.isHeld(partition)) return;
    if (position === undefined) {
      await this.releaseUnlessCommitted(partition, held, `the chain did not acknowledge every write within the pause (${this.node.unsettledWrites(partition)})`);
      return;
    }
    const report: PausedReport = { operation: request.operation, node: this.address, epoch: request.epoch, state: 'paused', stream: position.stream, seq: position.seq, mapVersion, heldAtMs: held.heldAtMs };
    try {
      await this.lease().put(this.keys.pausedOf(partition, this.address)).value(JSON.stringify(report)).exec();
    } catch (err) {
      this.logger.warn({ err: (err as Error).message, partition }, 'reporting a pause failed');
      await this.releaseUnlessCommitted(partition, held, 'the pause could not be reported');
      return;
    }
    const left = held.heldAtMs + request.maxPauseMs - Date.now();
    held.timer = setTimeout(() => void this.releaseUnlessCommitted(partition, held, 'the pause ran out (--max-pause) before the split was committed'), Math.max(0, left));
  }

  /**
   * Lets held writes go on, but only by a transaction that succeeds while the map is the one the
   * writes were held under (it replaces the `paused` report, which the coordinator's commit
   * compares): either the split commits, or the writes go on — never both.
   */
  private async releaseUnlessCommitted(partition: number, held: HeldPause, reason: string): Promise<void> {
    if (this.pauses.get(partition) !== held || !this.node.writePause.isHeld(partition)) return;
    const ms = Date.now() - held.heldAtMs;
    const report: PausedReport = { operation: held.operation, node: this.address, epoch: held.epoch, state: 'released', mapVersion: held.mapVersion, heldAtMs: held.heldAtMs, ms, reason };
    try {
      const lease = this.lease();
      const leaseId = await lease.grant();
      const res = await this.etcd.if(this.mapVersionKey, 'Value', '==', String(held.mapVersion)).then(this.etcd.put(this.keys.pausedOf(partition, this.address)).value(JSON.stringify(report)).lease(leaseId)).commit();
      if (!res.succeeded) {
        this.logger.info({ partition }, 'the map changed while the pause ran out (the cut committed, or another partition changed): the writes go on once this node installs it');
        return;
      }
    } catch (err) {
      // etcd cannot tell us: keep holding (a node that cannot reach etcd fences itself within its lease).
      this.logger.warn({ err: (err as Error).message, partition }, 'could not release a pause that ran out (etcd unreachable); the writes stay held until the map is known');
      return;
    }
    held.releasedByTimeout = true;
    this.logger.warn({ partition, ms, reason }, 'released held writes without a split: the coordinator tries the cut again later');
    this.node.releaseWrites(partition, reason);
  }

  /** Every release of held writes: reported as `released` with the pause measured (unless the timeout's transaction did). */
  private released(record: WritePauseRecord): void {
    const held = this.pauses.get(record.partitionId);
    if (held === undefined) return;
    clearTimeout(held.timer);
    this.pauses.delete(record.partitionId);
    if (held.releasedByTimeout) return;
    const report: PausedReport = { operation: held.operation, node: this.address, epoch: held.epoch, state: 'released', mapVersion: held.mapVersion, heldAtMs: held.heldAtMs, ms: record.ms, heldWrites: record.held, reason: record.reason };
    this.lease()
      .put(this.keys.pausedOf(record.partitionId, this.address))
      .value(JSON.stringify(report))
      .exec()
      .catch((err: unknown) => this.logger.warn({ err: (err as Error).message, partition: record.partitionId }, 'reporting the end of a pause failed'));
    this.logger.info({ partition: record.partitionId, ms: record.ms, heldWrites: record.held, reason: record.reason }, 'released held writes');
  }

  private async report(key: string, report: SplitPreparedReport): Promise<void> {
    const { updatedAtMs: _, ...same } = report;
    const text = JSON.stringify(same);
    if (this.reported.get(key) === text) return;
    await this.lease().put(key).value(JSON.stringify(report)).exec();
    this.reported.set(key, text);
  }
}
