import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Campaign, Etcd3, Watcher } from 'etcd3';
import type { Logger } from '../common/index.js';
import { DEFAULT_MAX_MOVEMENTS, DEFAULT_MAX_PAUSE_MS, ETCD_PREFIX, EtcdMapStore, EtcdMovementMarks, EtcdOperationStore, StoreError, connectEtcd, etcdFailure, isFinalOperationState, newOperationId, parseEtcdUrl, type EtcdConnectionOptions, type NodeRegistration, type PartitionMap, type ReplicationReport } from '../store/index.js';
import { promote, reconcile, resync, type ChainChange, type CopiedReplica } from './chain-plan.js';
import type { OperationRunner } from './operation-runner.js';
import { defaultRunners } from './operation-runners.js';
import { endUnrunnable } from './unrunnable-operation.js';

/** Options of one coordinator process. */
export interface CoordinatorOptions {
  etcd: EtcdConnectionOptions;
  /** TTL of the election lease, ms (whole seconds): how long a dead leader blocks a takeover. Default 5000. */
  leaseMs?: number;
  /** Name in the election and logs. Default `hostname:pid:random`. */
  id?: string;
  /** Called after every committed change (tests and logs). */
  onChange?: (change: { version: number; changes: ChainChange[]; promoted?: CopiedReplica[] }) => void;
  /** How long start-up tries to reach etcd before failing with STORE_ETCD_UNAVAILABLE. Default 10000 ms. */
  connectTimeoutMs?: number;
  /** Called when this coordinator becomes the leader. */
  onElected?: () => void;
  /** Who carries out operations of each kind (README "Live data movement"); an operation of a kind none runs waits. */
  runners?: readonly OperationRunner[];
  /**
   * Start a `rebalance` (`auto: true`) by itself when a registered node has held no replica for a
   * whole lease (its registration's `leaseMs`) and no rebalance is running (once per registration).
   * Default true; `coordinator --no-auto-rebalance`.
   */
  autoRebalance?: boolean;
  logger: Logger;
}

/**
 * Keeps chains in step with node registrations. Any number run against one etcd; one leads
 * (etcd3 Election). The leader watches registrations and the map and, after every event, runs one
 * reconcile pass (coordinator/chain-plan.ts) written as one compare-and-swap transaction; a lost
 * race or an etcd failure just runs the pass again from what etcd holds. A leader killed at any
 * point leaves either the old map or the new one, and the next leader's first pass finishes the work.
 */
export class Coordinator {
  readonly id: string;
  private readonly etcd: Etcd3;
  private readonly store: EtcdMapStore;
  private readonly operations: EtcdOperationStore;
  private readonly marks: EtcdMovementMarks;
  private readonly autoRebalance: boolean;
  /** Registrations (`node@registeredAtMs`) an automatic rebalance was considered for. */
  private readonly autoRebalanced = new Set<string>();
  /** When this coordinator first saw each registration hold no replica (its clock, ms). */
  private readonly emptySince = new Map<string, number>();
  private autoTimer: NodeJS.Timeout | undefined;
  private readonly runners: readonly OperationRunner[];
  /** Operations of a kind no runner carries out, logged once each. */
  private readonly unrunnable = new Set<string>();
  /** Operations backing off (OperationAdvance.retryAfterMs): skipped until then; the timer runs the pass when due. */
  private readonly backingOff = new Map<string, { untilMs: number; timer: NodeJS.Timeout }>();
  private readonly logger: Logger;
  private readonly ttlSeconds: number;
  private readonly onChange: CoordinatorOptions['onChange'];
  private readonly onElected: CoordinatorOptions['onElected'];
  private readonly stop = new AbortController();
  private campaign: Campaign | undefined;
  private watchers: Watcher[] = [];
  /** Forward retries last seen per `partition/node` replication report. */
  private readonly retriesSeen = new Map<string, number>();
  private leading = false;
  private pending = false;
  private running: Promise<void> | undefined;
  private closed: Promise<void> | undefined;

  private constructor(options: CoordinatorOptions) {
    const leaseMs = options.leaseMs ?? 5000;
    if (!Number.isFinite(leaseMs) || leaseMs < 1000 || leaseMs > 3_600_000) throw new RangeError(`--lease must be 1s–1h, got ${leaseMs} ms`);
    this.ttlSeconds = Math.ceil(leaseMs / 1000);
    this.id = options.id ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    const display = parseEtcdUrl(options.etcd.url).display;
    this.etcd = connectEtcd(options.etcd);
    this.store = new EtcdMapStore(this.etcd, display);
    this.operations = new EtcdOperationStore(this.etcd, display);
    this.marks = new EtcdMovementMarks(this.etcd, display);
    this.autoRebalance = options.autoRebalance ?? true;
    this.runners = options.runners ?? defaultRunners();
    this.logger = options.logger.child({ module: 'coordinator', coordinator: this.id });
    this.onChange = options.onChange;
    this.onElected = options.onElected;
  }

  /**
   * Checks that etcd answers (retrying for `connectTimeoutMs`; refused credentials fail at once),
   * then campaigns; leadership comes when etcd grants it.
   */
  static async start(options: CoordinatorOptions): Promise<Coordinator> {
    const coordinator = new Coordinator(options);
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await coordinator.store.readAt();
        break;
      } catch (err) {
        const refused = err instanceof StoreError && err.code === 'STORE_ETCD_UNAUTHENTICATED';
        if (Date.now() >= deadline || refused) {
          coordinator.etcd.close();
          throw refused ? err : etcdFailure((err as Error).cause ?? err, coordinator.store.display, `starting coordinator ${coordinator.id} (tried for ${timeoutMs} ms)`, options.etcd.callTimeoutMs);
        }
        await sleep(200);
      }
    }
    coordinator.campaignAgain();
    return coordinator;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Resigns (another coordinator takes over at once) and disconnects. Idempotent. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.stop.abort();
      clearTimeout(this.autoTimer);
      for (const b of this.backingOff.values()) clearTimeout(b.timer);
      this.backingOff.clear();
      this.leading = false;
      await this.running;
      await this.cancelWatches();
      await this.campaign?.resign().catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'resigning failed; the election lease runs out by itself'));
      this.etcd.close();
    })();
    return this.closed;
  }

  private campaignAgain(): void {
    if (this.stop.signal.aborted) return;
    const campaign = this.etcd.election(this.store.keys.election, this.ttlSeconds).campaign(this.id);
    this.campaign = campaign;
    campaign.on('elected', () => {
      this.logger.info('elected leader');
      this.leading = true;
      this.onElected?.();
      void this.lead();
    });
    campaign.on('error', (err) => {
      if (this.stop.signal.aborted) return;
      this.logger.warn({ err: err.message, wasLeader: this.leading }, 'election campaign failed; campaigning again');
      this.leading = false;
      this.cancelWatches()
        .then(() => sleep(200, undefined, { signal: this.stop.signal }))
        .then(() => this.campaignAgain(), () => undefined);
    });
  }

  /** Sets up the watches (retrying while etcd does not answer and we still lead), then runs a first pass. */
  private async lead(): Promise<void> {
    let backoffMs = 100;
    while (this.leading && !this.stop.signal.aborted) {
      try {
        const { revision } = await this.store.nodes();
        const kick = (): void => this.schedule();
        this.watchers.push(await this.store.watchNodes(revision, kick, this.logger));
        this.watchers.push(await this.store.watch(revision, kick, this.logger));
        this.watchers.push(await this.store.watchSyncs(revision, kick, this.logger));
        this.watchers.push(await this.store.watchReplication(revision, (r) => this.noteReplication(r), this.logger));
        this.watchers.push(await this.operations.watch(revision, kick, this.logger));
        for (const prefix of new Set(this.runners.flatMap((r) => r.watchPrefixes ?? []))) {
          const watcher = await this.etcd.watch().prefix(`${ETCD_PREFIX}/${prefix}`).startRevision(String(BigInt(revision) + 1n)).create();
          watcher.on('put', kick);
          watcher.on('delete', kick);
          watcher.on('connected', kick);
          watcher.on('error', (err) => this.logger.warn({ err: err.message, prefix }, 'etcd watch of operation answers failed'));
          this.watchers.push(watcher);
        }
        this.schedule();
        return;
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'starting to lead failed; trying again');
        await this.cancelWatches();
        await sleep(backoffMs, undefined, { signal: this.stop.signal }).catch(() => undefined);
        backoffMs = Math.min(2000, backoffMs * 2);
      }
    }
  }

  /**
   * A replica's report of forwards it had to send again: logged once per new retry count, naming
   * the successor and the error. Chains change on lease expiry alone (a slow successor whose lease
   * holds keeps its place); this makes the retries visible where the chains are decided.
   */
  private noteReplication(report: ReplicationReport): void {
    const key = `${report.partition}/${report.node}`;
    const seen = this.retriesSeen.get(key) ?? 0;
    this.retriesSeen.set(key, report.forwardRetries);
    if (report.forwardRetries > seen && report.lastForwardRetry !== undefined) {
      this.logger.warn(
        { partition: report.partition, node: report.node, successor: report.lastForwardRetry.successor, retries: report.forwardRetries - seen, total: report.forwardRetries, error: report.lastForwardRetry.error, lagSequences: report.lagSequences },
        'a replica sent forwards again: its successor failed or did not answer within --forward-timeout',
      );
    }
  }

  /** Runs a pass now, or once more after the running one (events during a pass are never lost). */
  private schedule(): void {
    this.pending = true;
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
  }

  private async drain(): Promise<void> {
    let backoffMs = 100;
    while (this.pending && this.leading && !this.stop.signal.aborted) {
      this.pending = false;
      try {
        await this.pass();
        backoffMs = 100;
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'reconcile pass failed; trying again');
        this.pending = true;
        await sleep(backoffMs, undefined, { signal: this.stop.signal }).catch(() => undefined);
        backoffMs = Math.min(2000, backoffMs * 2);
      }
    }
  }

  /** One pass: read registrations and the map, plan, write with CAS; a lost race passes again. */
  private async pass(): Promise<void> {
    for (;;) {
      if (!this.leading || this.stop.signal.aborted) return;
      const stored = await this.store.read();
      // Before `cluster init` there is nothing to do: the map watch runs the next pass.
      if (stored === undefined) return;
      const { nodes } = await this.store.nodes();
      const draining = await this.drainingNodes(nodes);
      // Membership first; a promotion waits for a pass where no replica is to be removed or added.
      const plan = reconcile(stored.map, new Set(nodes.keys()), draining) ?? (await this.resyncs(stored.map, nodes)) ?? (await this.promotion(stored.map, nodes));
      if (plan === undefined) {
        // Operations go on only from a map that needs no membership change.
        if (await this.advanceOperations(stored.map, nodes)) continue;
        await this.startAutoRebalance(stored.map, nodes, draining);
        return;
      }
      if (await this.store.replace(stored.map.version, plan.map)) {
        const promoted = 'promoted' in plan ? plan.promoted : undefined;
        const changes = 'changes' in plan ? plan.changes : [];
        const resynced = 'resynced' in plan ? plan.resynced : undefined;
        if (resynced) this.logger.warn({ version: plan.map.version, resynced }, 'restarted heads held writes their successors lack: made them syncing replicas (their successors head the chains)');
        else this.logger.info({ version: plan.map.version, ...(promoted ? { promoted } : { changes }) }, promoted ? 'promoted synced replicas to serving' : 'changed chains');
        this.onChange?.({ version: plan.map.version, changes, ...(promoted ? { promoted } : {}) });
        if (resynced) continue;
        // A promotion can leave another promotion or change due: pass again.
        if (promoted) continue;
        return;
      }
      this.logger.info({ version: stored.map.version }, 'the map changed while planning; planning again');
    }
  }

  /**
   * Restarted heads that hold writes their successor lacks (a `resync` report at the current epoch
   * from a live node that still serves the partition) become syncing replicas, as `cluster repair`
   * makes them: their successor heads, and their copy from the tail drops the unforwarded writes.
   */
  private async resyncs(map: PartitionMap, live: ReadonlyMap<string, unknown>): Promise<{ map: PartitionMap; resynced: Array<{ partition: number; node: string }> } | undefined> {
    const { reports } = await this.store.syncReports();
    let next = map;
    const resynced: Array<{ partition: number; node: string }> = [];
    for (const r of reports) {
      if (r.state !== 'resync' || !live.has(r.node)) continue;
      const p = next.byId(r.partition);
      if (p === undefined || p.epoch !== r.epoch || p.chain.find((c) => c.node === r.node)?.state !== 'serving') continue;
      try {
        next = resync(next, r.partition, r.node);
        resynced.push({ partition: r.partition, node: r.node });
        // One per transaction (the map version moves by one); the pass runs again for the next.
        break;
      } catch (err) {
        this.logger.warn({ err: (err as Error).message, partition: r.partition, node: r.node }, 'a restarted head asked for a resync that cannot be made');
      }
    }
    return resynced.length === 0 ? undefined : { map: next, resynced };
  }

  /**
   * Advances every operation not in a final state by one step, oldest first. True when a step
   * changed the map (the pass then plans again from the new map); a lost race on the map or on a
   * record is left to the next pass, which re-derives the step from what etcd holds.
   */
  private async advanceOperations(map: PartitionMap, nodes: ReadonlyMap<string, NodeRegistration>): Promise<boolean> {
    if (this.runners.length === 0) return false;
    const { operations } = await this.operations.list();
    const active = operations.filter((o) => !isFinalOperationState(o.record.state));
    if (active.length === 0) return false;
    const { reports: syncs } = await this.store.syncReports();
    for (const stored of active) {
      if (!this.leading || this.stop.signal.aborted) return false;
      const op = stored.record;
      const backoff = this.backingOff.get(op.id);
      if (backoff !== undefined && backoff.untilMs > Date.now() && op.state !== 'cancelling') continue;
      const runner = this.runners.find((r) => r.kinds.includes(op.args.kind));
      if (runner === undefined) {
        const ended = endUnrunnable(op, this.runners, Date.now());
        if (ended !== undefined) {
          if (await this.operations.replace(stored, ended)) this.logger.warn({ operation: op.id, kind: op.args.kind, state: ended.state }, 'no runner carries out operations of this kind: ended it before any step');
          continue;
        }
        if (!this.unrunnable.has(op.id)) this.logger.warn({ operation: op.id, kind: op.args.kind }, 'no runner carries out operations of this kind; it waits');
        this.unrunnable.add(op.id);
        continue;
      }
      const step = await runner.advance(op, { map, nodes, syncs, maps: this.store, operations: this.operations, marks: this.marks, etcd: this.etcd, logger: this.logger.child({ operation: op.id }), nowMs: Date.now() });
      if (step === undefined) continue;
      if (step.map !== undefined) {
        if (!(await this.store.replace(map.version, step.map))) return true;
        this.logger.info({ operation: op.id, version: step.map.version, message: step.record.message }, 'operation step changed the map');
        this.onChange?.({ version: step.map.version, changes: [] });
      }
      if (step.retryAfterMs !== undefined) this.backOff(op.id, step.retryAfterMs);
      if (!(await this.operations.replace(stored, step.record))) this.logger.info({ operation: op.id }, 'the operation changed while advancing it; the next pass reads it again');
      else if (isFinalOperationState(step.record.state)) this.logger.info({ operation: op.id, state: step.record.state, error: step.record.error }, 'operation finished');
      if (step.map !== undefined) return true;
    }
    return false;
  }

  private backOff(operation: string, ms: number): void {
    clearTimeout(this.backingOff.get(operation)?.timer);
    const timer = setTimeout(() => {
      this.backingOff.delete(operation);
      this.schedule();
    }, ms);
    this.backingOff.set(operation, { untilMs: Date.now() + ms, timer });
  }

  /**
   * Nodes with a drain mark (nothing is placed on them). A mark whose node registered again with
   * another data-folder identity is a new, empty node at that address: the mark is deleted.
   */
  private async drainingNodes(nodes: ReadonlyMap<string, NodeRegistration>): Promise<Set<string>> {
    const marks = await this.marks.drainMarks();
    const draining = new Set<string>();
    for (const [address, mark] of marks) {
      const identity = nodes.get(address)?.identity;
      if (mark.identity !== undefined && identity !== undefined && identity !== mark.identity) {
        await this.marks.clearDraining(address);
        this.logger.info({ node: address, operation: mark.operation }, 'a drained node registered with a new data folder: its drain mark is cleared');
        continue;
      }
      draining.add(address);
    }
    return draining;
  }

  /**
   * A rebalance when a live node that is not draining has held no replica for a whole lease (once
   * per registration), unless one runs or it is off. The lease's wait lets a dead node's lease run
   * out first: a node started to replace it then joins the short chains by reconcile, not by moves.
   */
  private async startAutoRebalance(map: PartitionMap, nodes: ReadonlyMap<string, NodeRegistration>, draining: ReadonlySet<string>): Promise<void> {
    if (!this.autoRebalance) return;
    const now = Date.now();
    const empty = [...nodes.values()].filter((r) => !draining.has(r.node) && map.replicasOf(r.node).length === 0 && !this.autoRebalanced.has(`${r.node}@${r.registeredAtMs}`));
    const seen = new Set(empty.map((r) => `${r.node}@${r.registeredAtMs}`));
    for (const key of this.emptySince.keys()) if (!seen.has(key)) this.emptySince.delete(key);
    for (const key of seen) if (!this.emptySince.has(key)) this.emptySince.set(key, now);
    const waitMs = (r: NodeRegistration): number => this.emptySince.get(`${r.node}@${r.registeredAtMs}`)! + r.leaseMs - now;
    const young = empty.filter((r) => waitMs(r) > 0);
    if (young.length > 0 && this.autoTimer === undefined) {
      this.autoTimer = setTimeout(() => {
        this.autoTimer = undefined;
        this.schedule();
      }, Math.min(...young.map(waitMs)) + 50);
      this.autoTimer.unref();
    }
    const fresh = empty.filter((r) => waitMs(r) <= 0);
    if (fresh.length === 0) return;
    for (const r of fresh) {
      this.autoRebalanced.add(`${r.node}@${r.registeredAtMs}`);
      this.emptySince.delete(`${r.node}@${r.registeredAtMs}`);
    }
    const { operations } = await this.operations.list();
    if (operations.some((o) => o.record.args.kind === 'rebalance' && !isFinalOperationState(o.record.state))) return;
    const id = newOperationId(now);
    const names = fresh.map((r) => r.node);
    await this.operations.create({
      id,
      args: { kind: 'rebalance', auto: true },
      state: 'pending',
      createdAtMs: now,
      updatedAtMs: now,
      requestedBy: `coordinator ${this.id}`,
      limits: { maxMovements: DEFAULT_MAX_MOVEMENTS, maxPauseMs: DEFAULT_MAX_PAUSE_MS },
      steps: [],
      pauses: [],
      message: `started by the coordinator: ${names.join(', ')} registered holding no replica`,
    });
    this.logger.info({ operation: id, nodes: names }, 'nodes holding no replica registered: started a rebalance');
  }

  /** Promotes syncing replicas whose live node reported a verified copy at the current epoch. */
  private async promotion(map: PartitionMap, live: ReadonlyMap<string, unknown>): Promise<{ map: PartitionMap; promoted: CopiedReplica[] } | undefined> {
    const { reports } = await this.store.syncReports();
    return promote(map, reports.filter((r) => r.state === 'copied' && live.has(r.node)));
  }

  private async cancelWatches(): Promise<void> {
    const watchers = this.watchers;
    this.watchers = [];
    await Promise.all(watchers.map((w) => w.cancel().catch((err: unknown) => this.logger.debug({ err }, 'cancelling a watch failed'))));
  }
}
