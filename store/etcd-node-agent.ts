import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3, Lease, Watcher } from 'etcd3';
import type { Logger } from '../common/index.js';
import { connectEtcd, etcdFailure, isEtcdAuthFailure, loadEtcd3, parseEtcdUrl, type EtcdConnectionOptions } from './etcd-connection.js';
import { EtcdMapStore, type NodeRegistration, type StoredMap, type SyncReport } from './etcd-map-store.js';
import { NodeConnection, type StoreCredentials } from './node-connection.js';
import { readNodeOf, type PartitionMap } from './partition-map.js';
import { syncReplica, type SyncProgress } from './replica-sync.js';
import { SyncThrottle } from './sync-throttle.js';
import { operationKeys } from './etcd-operations.js';
import type { ChainPosition } from './partition-store.js';
import { StoreError } from './store-errors.js';
import { EtcdSplitAgent } from './etcd-split-agent.js';
import type { StoreNode } from './store-node.js';

/** How often a node reports its replicas' lag and forward retries to etcd, ms. */
const REPLICATION_REPORT_MS = 1000;

/** Options of a node's etcd membership. */
export interface EtcdNodeAgentOptions {
  etcd: EtcdConnectionOptions;
  /** This node's address, HOST:PORT (the registration key). Required. */
  node: string;
  /** Lease asked for, ms (etcd grants whole seconds, at least its minimum TTL). Default 5000. */
  leaseMs?: number;
  /**
   * The identity of the node's data folder (kept in it). A registration under this address with the
   * same identity is this node's own from an earlier run (restarted within its lease) and is taken
   * over at once; one with another identity belongs to another process (STORE_NODE_DUPLICATE unless
   * it goes within its lease). Omitted: every existing registration counts as another process's.
   */
  identity?: string;
  /** How long start-up tries to reach etcd before failing with STORE_ETCD_UNAVAILABLE. Default 10000 ms. */
  connectTimeoutMs?: number;
  logger: Logger;
  /** Test-only (SHARDPIPE_FAULT_INJECTION_HOLD_PREPARES): while a file exists here, split and merge prepares wait before they start. */
  faultInjectionHoldPreparesFile?: string;
}

/**
 * A store node's membership in an etcd-managed cluster: registers under a lease and keeps it alive,
 * watches the partition map and installs every new one on the node, and fences the node when it
 * cannot confirm its lease for a whole lease (store/README.md "What a node does with the map").
 *
 * The fence deadline counts from when the last confirmed keep-alive was *sent*: etcd renewed the
 * lease no earlier than that, so the lease cannot have run out in etcd before this node fences.
 */
/** Pause before a sync report that etcd refused is written again. */
const REPORT_RETRY_MS = 1000;

export class EtcdNodeAgent {
  readonly store: EtcdMapStore;
  private readonly etcd: Etcd3;
  private readonly address: string;
  private readonly identity: string | undefined;
  private readonly holdPreparesFile: string | undefined;
  private readonly logger: Logger;
  private readonly askedTtlSeconds: number;
  private lease: Lease;
  private grantedLeaseMs: number;
  private node: StoreNode | undefined;
  private watcher: Watcher | undefined;
  /** Splits: prepares and the cut's write pause (store/etcd-split-agent.ts). */
  private splits: EtcdSplitAgent | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  private resyncing: Promise<void> | undefined;
  private credentials: StoreCredentials = {};
  /** What a fast sync's ChangedKeys (role replica) presents; undefined: `credentials`. */
  private replicaCredentials: StoreCredentials | undefined;
  private readonly syncs = new Map<number, RunningSync>();
  /** Restarted heads being compared with their successor, by partition. */
  private readonly headChecks = new Map<number, Promise<void>>();
  /** The epoch a resync was last asked for, by partition (a fenced restarted head). */
  private readonly resyncAsked = new Map<number, number>();
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  private closed: Promise<void> | undefined;

  private constructor(etcd: Etcd3, store: EtcdMapStore, options: EtcdNodeAgentOptions, lease: Lease, grantedLeaseMs: number) {
    this.etcd = etcd;
    this.store = store;
    this.address = options.node;
    this.identity = options.identity;
    this.holdPreparesFile = options.faultInjectionHoldPreparesFile;
    this.logger = options.logger.child({ module: 'etcd-membership' });
    this.askedTtlSeconds = ttlSeconds(options.leaseMs ?? 5000);
    this.lease = lease;
    this.grantedLeaseMs = grantedLeaseMs;
  }

  /** The agent's etcd connection, for the node's operation RPCs (OperationAdmin); closed with the agent. */
  get etcdClient(): Etcd3 {
    return this.etcd;
  }

  /** The lease etcd granted, ms. */
  get leaseMs(): number {
    return this.grantedLeaseMs;
  }

  /** Connects and registers under a fresh lease; STORE_ETCD_UNAVAILABLE (URL without secrets, timeout) when etcd cannot be reached. */
  static async start(options: EtcdNodeAgentOptions): Promise<EtcdNodeAgent> {
    const display = parseEtcdUrl(options.etcd.url).display;
    const etcd = connectEtcd(options.etcd);
    const store = new EtcdMapStore(etcd, display);
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    const ttl = ttlSeconds(options.leaseMs ?? 5000);
    for (;;) {
      try {
        const { lease, leaseMs } = await register(etcd, store, options.node, ttl, options.identity);
        const agent = new EtcdNodeAgent(etcd, store, options, lease, leaseMs);
        agent.logger.info({ etcd: display, node: options.node, leaseMs }, 'registered in etcd');
        agent.loop = agent.keepAlive();
        return agent;
      } catch (err) {
        if (err instanceof StoreError && err.code === 'STORE_NODE_DUPLICATE') {
          etcd.close();
          throw err;
        }
        if (Date.now() >= deadline || isEtcdAuthFailure(err)) {
          etcd.close();
          throw etcdFailure(err, display, `registering node ${options.node} (tried for ${timeoutMs} ms)`, options.etcd.callTimeoutMs);
        }
        await sleep(200);
      }
    }
  }

  /** The map in etcd, waiting (watching, not polling) until `cluster init` writes one. */
  async waitForMap(signal?: AbortSignal): Promise<StoredMap> {
    const { map, revision } = await this.store.readAt();
    if (map !== undefined) return { map, revision };
    this.logger.info({ etcd: this.store.display }, 'waiting for a partition map in etcd (shardpipe cluster init)');
    return new Promise<StoredMap>((resolve, reject) => {
      let watcher: Watcher | undefined;
      const done = (fn: () => void): void => {
        signal?.removeEventListener('abort', onAbort);
        watcher?.cancel().catch((err: unknown) => this.logger.debug({ err }, 'cancelling the map watch failed'));
        fn();
      };
      const onAbort = (): void => done(() => reject(signal!.reason));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.store
        .watch(revision, () => {
          // Read again rather than trust the event alone: the read carries the revision to watch from.
          this.store.read().then((stored) => stored && done(() => resolve(stored)), (err: unknown) => done(() => reject(err)));
        }, this.logger)
        .then((w) => {
          watcher = w;
          if (signal?.aborted) done(() => reject(signal.reason));
        }, reject);
    });
  }

  /**
   * Installs `from` on `node` if needed, then keeps the node's map in step with etcd and fences it
   * when the lease cannot be confirmed. Every replica the map gives this node as `syncing` is
   * copied from its chain's tail (with `credentials`) and reported under `syncs/` in etcd.
   */
  async follow(node: StoreNode, from: StoredMap, credentials: StoreCredentials = {}, replicaCredentials?: StoreCredentials): Promise<void> {
    this.node = node;
    this.credentials = credentials;
    this.splits = new EtcdSplitAgent({ etcd: this.etcd, node, address: this.address, lease: () => this.lease, logger: this.logger, ...(this.holdPreparesFile === undefined ? {} : { holdPreparesFile: this.holdPreparesFile }) });
    await this.splits.start();
    this.replicaCredentials = replicaCredentials;
    await this.install(from.map);
    this.armFence(Date.now());
    this.watcher = await this.store.watch(from.revision, (map) => {
      this.install(map).catch((err: unknown) => this.logger.error({ err, mapVersion: map.version }, 'installing the partition map from etcd failed'));
    }, this.logger);
    void this.reportReplication();
    void this.reportGc();
  }

  /**
   * Every second, writes the partitions awaiting GC on this node under `gc/HOST:PORT` (under the
   * lease: `[{partition, leftAtMs, deleteAtMs, bytes}]`) when they changed or the lease is new;
   * removes the key once nothing waits. `cluster status --etcd` and the metrics server read it.
   */
  private async reportGc(): Promise<void> {
    const signal = this.stop.signal;
    const key = operationKeys().gcOf(this.address);
    let written: { text: string; lease: Lease } | undefined;
    while (!signal.aborted) {
      const node = this.node;
      if (node !== undefined && !node.isFenced) {
        const pending = node.gcPending();
        const text = JSON.stringify(pending);
        const lease = this.lease;
        if (written?.text !== text || written.lease !== lease) {
          try {
            if (pending.length > 0) await lease.put(key).value(text).exec();
            else if (written !== undefined) await this.etcd.delete().key(key).exec();
            written = { text, lease };
          } catch (err) {
            this.logger.debug({ err: (err as Error).message }, 'writing the GC report to etcd failed; trying again in a second');
          }
        }
      }
      await sleep(REPLICATION_REPORT_MS, undefined, { signal }).catch(() => undefined);
    }
  }

  /**
   * Every second, writes each replica's lag and forward retries under `replication/P/NODE` (under
   * the lease) when they changed: the coordinator and `cluster status` read them there.
   */
  private async reportReplication(): Promise<void> {
    const signal = this.stop.signal;
    const written = new Map<number, string>();
    while (!signal.aborted) {
      await sleep(REPLICATION_REPORT_MS, undefined, { signal }).catch(() => undefined);
      const node = this.node;
      if (signal.aborted || node === undefined || node.isFenced) continue;
      for (const r of node.replicaStates()) {
        const size = await node
          .replicaStore(r.partitionId)
          ?.stats()
          .catch((err: unknown) => {
            // A replica closing under a map change: its report goes without a size this time.
            this.logger.debug({ err: (err as Error).message, partition: r.partitionId }, 'reading the replica size failed');
            return undefined;
          });
        const body = { partition: r.partitionId, node: this.address, epoch: r.epoch, lagSequences: r.lagSequences, forwardRetries: r.forwardRetries, ...(r.lastForwardRetry === undefined ? {} : { lastForwardRetry: r.lastForwardRetry }), ...(size === undefined ? {} : { bytes: size.logicalBytes, rows: size.count }) };
        const text = JSON.stringify(body);
        if (written.get(r.partitionId) === text) continue;
        try {
          await this.lease.put(this.store.keys.replicationOf(r.partitionId, this.address)).value(JSON.stringify({ ...body, updatedAtMs: Date.now() })).exec();
          written.set(r.partitionId, text);
        } catch (err) {
          this.logger.debug({ err: (err as Error).message, partition: r.partitionId }, 'writing the replication report to etcd failed; trying again in a second');
        }
      }
    }
  }

  /** Stops keeping the lease and revokes it (the coordinator sees the node leave at once). Idempotent. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.stop.abort();
      clearTimeout(this.fenceTimer);
      await Promise.all([...this.syncs.values()].map((s) => s.done));
      await this.loop;
      await this.splits?.close();
      await this.watcher?.cancel().catch((err: unknown) => this.logger.debug({ err }, 'cancelling the map watch failed'));
      await this.lease.revoke().catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'could not revoke the etcd lease; it runs out by itself'));
      this.etcd.close();
    })();
    return this.closed;
  }

  private async install(map: PartitionMap): Promise<void> {
    const node = this.node;
    // A draining node keeps the map it drains under; it leaves etcd when it stops.
    if (node === undefined || node.isDraining) return;
    // etcd is the truth: its map replaces whatever the node holds, whichever version that has.
    if (!node.map.equals(map)) await node.setMap(map, { force: true, fromEtcd: true });
    this.splits?.kick();
    this.followSyncs(map);
    this.followHeadChecks();
  }

  /**
   * A head restarted on its own data (within its lease: still head) takes no write until its
   * persisted position is compared with its successor's (store/README.md "The write path"): equal
   * or behind it, it goes on; ahead (writes applied, never forwarded), it asks the coordinator
   * (`syncs/P/NODE` state `resync`, under the lease, for the current epoch) to make it a syncing
   * replica. Called on every map installed: a new epoch gets a new request.
   */
  private followHeadChecks(): void {
    const node = this.node;
    if (node === undefined || this.stop.signal.aborted) return;
    for (const { partition, check } of node.headRestartChecks()) {
      if (check.state === 'checking') {
        if (this.headChecks.has(partition.id)) continue;
        const running = this.compareWithSuccessor(partition.id).finally(() => this.headChecks.delete(partition.id));
        this.headChecks.set(partition.id, running);
        running.then(() => this.followHeadChecks()).catch((err: unknown) => this.logger.error({ err, partition: partition.id }, 'comparing a restarted head with its successor stopped'));
      } else if (this.resyncAsked.get(partition.id) !== partition.epoch) {
        this.resyncAsked.set(partition.id, partition.epoch);
        const report: SyncReport = {
          partition: partition.id,
          node: this.address,
          epoch: partition.epoch,
          state: 'resync',
          source: check.successor ?? '',
          rows: 0,
          bytes: 0,
          totalRows: 0,
          startedAtMs: Date.now(),
          updatedAtMs: Date.now(),
          error: `restarted head at ${check.persisted.stream}:${check.persisted.seq}, successor ${check.successor ?? '?'} at ${check.successorPosition?.stream ?? ''}:${check.successorPosition?.seq ?? 0}`,
        };
        this.lease
          .put(this.store.keys.sync(partition.id, this.address))
          .value(JSON.stringify(report))
          .exec()
          .catch((err: unknown) => {
            this.resyncAsked.delete(partition.id);
            this.logger.warn({ err: (err as Error).message, partition: partition.id }, 'asking the coordinator for a resync failed; asking again with the next map');
          });
      }
    }
  }

  /** Reads the successor's persisted position (a replica Checksum of the partition's first key: one snapshot, no scan) until it answers or the check is moot. */
  private async compareWithSuccessor(partitionId: number): Promise<void> {
    const signal = this.stop.signal;
    let backoffMs = 100;
    while (!signal.aborted) {
      const node = this.node!;
      const map = node.map;
      const partition = map.byId(partitionId);
      const check = node.headRestartChecks().find((c) => c.partition.id === partitionId)?.check;
      if (partition === undefined || check?.state !== 'checking') return;
      const successor = partition.chain[1]!.node;
      const connection = new NodeConnection(successor, this.credentials);
      try {
        const end = Buffer.concat([partition.start, Buffer.from([0])]);
        const r = await connection.unary('checksum', { mapVersion: map.version, start: partition.start, end, includeEtag: false, snapshotId: '', replica: true, maxEntries: 0 }, { deadline: Date.now() + 2000, signal });
        if (node.map.version === map.version) {
          node.confirmHead(partitionId, successor, { stream: r.chainStream, seq: r.chainSeq });
          return;
        }
      } catch (err) {
        if (signal.aborted) return;
        this.logger.info({ err: (err as Error).message, partition: partitionId, successor, backoffMs }, 'a restarted head could not read its successor\'s position yet; trying again');
        await sleep(backoffMs, undefined, { signal }).catch(() => undefined);
        backoffMs = Math.min(2000, backoffMs * 2);
      } finally {
        connection.close();
      }
    }
  }

  /**
   * Starts a sync for every replica of this node the map calls `syncing`, from the chain's tail
   * (its last serving replica: it holds every acknowledged write, and it is the one replica that
   * serves reads, snapshots included), stops those no longer syncing, restarts one whose tail
   * changed, and re-reports a finished copy under a newer epoch so the coordinator can still
   * promote it after an unrelated chain change.
   */
  private followSyncs(map: PartitionMap): void {
    if (this.stop.signal.aborted) return;
    const wanted = new Set<number>();
    for (const p of map.replicasOf(this.address)) {
      if (p.chain.find((r) => r.node === this.address)?.state !== 'syncing') continue;
      wanted.add(p.id);
      const source = readNodeOf(p);
      const running = this.syncs.get(p.id);
      if (running !== undefined && running.source === source) {
        if (running.report?.state === 'copied' && running.report.epoch !== p.epoch) this.report({ ...running.report, epoch: p.epoch, updatedAtMs: Date.now() }, running);
        continue;
      }
      running?.abort.abort();
      // The tail changed: the new tail is ahead of the old one in the chain and holds everything it
      // held, so the copy resumes after the last key done (the verification still covers it all).
      this.startSync(p.id, source, running?.copiedThrough, running === undefined ? undefined : { fastFrom: running.fastFrom, forceFull: running.forceFull });
    }
    for (const [id, running] of this.syncs) {
      if (wanted.has(id)) continue;
      running.abort.abort();
      this.syncs.delete(id);
      this.node?.reportSync(id, undefined);
      // Promoted (or dropped from the chain): the report has done its work.
      this.etcd.delete().key(this.store.keys.sync(id, this.address)).exec().catch((err: unknown) => this.logger.debug({ err: (err as Error).message }, 'removing a sync report failed; it goes with the lease'));
    }
  }

  private startSync(partitionId: number, source: string, copiedThrough?: Buffer, before?: { fastFrom: ChainPosition | undefined; forceFull: boolean }): void {
    const abort = new AbortController();
    // The position the replica's data is at before this sync writes anything (a returning node's,
    // persisted with its last write): a fast sync copies only what changed after it. Kept across
    // attempts and source changes: every attempt only moves the data toward the stream's later state.
    const persisted = this.node?.replicaStore(partitionId)?.chainPosition;
    const fastFrom = before !== undefined ? before.fastFrom : persisted !== undefined && persisted.stream !== '' ? persisted : undefined;
    const running: RunningSync = {
      source,
      abort,
      done: Promise.resolve(),
      report: undefined,
      writes: Promise.resolve(),
      throttle: new SyncThrottle(),
      fastFrom,
      forceFull: before?.forceFull ?? false,
      ...(copiedThrough === undefined ? {} : { copiedThrough }),
    };
    this.syncs.set(partitionId, running);
    let throttleRead: () => void = () => undefined;
    const throttled = new Promise<void>((resolve) => (throttleRead = resolve));
    // The copy starts once the throttle has been read (it never runs faster than asked, even briefly).
    const synced = throttled.then(() => this.runSync(partitionId, running)).then(() => running.writes);
    running.done = Promise.all([synced, this.followThrottle(partitionId, running, synced, throttleRead)])
      .then(() => undefined)
      .catch((err: unknown) => this.logger.error({ err, partition: partitionId }, 'replica sync stopped'));
  }

  /**
   * Keeps a sync's copy rate at what `throttle/P/NODE` in etcd says (`{maxBytesPerSecond}`, written
   * by the operation that started the movement): read at the start, then by watch until the sync ends.
   */
  private async followThrottle(partitionId: number, running: RunningSync, synced: Promise<unknown>, read: () => void): Promise<void> {
    const key = operationKeys().throttleOf(partitionId, this.address);
    const log = this.logger.child({ partition: partitionId });
    const apply = (text: string | undefined): void => {
      const rate = parseThrottle(text);
      if (rate.error !== undefined) log.warn({ key, error: rate.error }, 'ignoring a malformed sync throttle in etcd');
      if (rate.error === undefined && rate.bytesPerSecond !== running.throttle.bytesPerSecond) {
        running.throttle.setRate(rate.bytesPerSecond);
        log.info({ maxBytesPerSecond: rate.bytesPerSecond ?? null, operation: rate.operation }, rate.bytesPerSecond === undefined ? 'replica sync unthrottled' : 'replica sync throttled');
      }
    };
    const signal = AbortSignal.any([this.stop.signal, running.abort.signal]);
    let watcher: Watcher | undefined;
    try {
      const got = await this.etcd.get(key).exec();
      apply(got.kvs[0]?.value.toString('utf8'));
      read();
      if (signal.aborted) return;
      watcher = await this.etcd.watch().key(key).startRevision(String(BigInt(got.header.revision) + 1n)).create();
      watcher.on('put', (kv) => apply(kv.value.toString('utf8')));
      watcher.on('delete', () => apply(undefined));
      watcher.on('error', (err: unknown) => log.debug({ err: (err as Error).message }, 'the sync throttle watch failed; it reconnects'));
      // Until the sync is over (done, stopped, or the node closes).
      await Promise.race([synced.catch(() => undefined), new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))]);
    } catch (err) {
      if (!signal.aborted) log.warn({ err: (err as Error).message }, 'reading the sync throttle from etcd failed; the copy runs unthrottled');
    } finally {
      read();
      await watcher?.cancel().catch(() => undefined);
    }
  }

  private async runSync(partitionId: number, running: RunningSync): Promise<void> {
    const signal = AbortSignal.any([this.stop.signal, running.abort.signal]);
    const log = this.logger.child({ partition: partitionId, source: running.source });
    let backoffMs = 200;
    while (!signal.aborted) {
      const node = this.node!;
      const map = node.map;
      const partition = map.byId(partitionId);
      const target = node.replicaStore(partitionId);
      if (partition === undefined || target === undefined) return;
      const startedAtMs = Date.now();
      node.reportSync(partitionId, { rows: 0, bytes: 0, totalRows: 0 });
      const fastFrom = running.forceFull ? undefined : running.fastFrom;
      const base = { partition: partitionId, node: this.address, source: running.source, startedAtMs };
      const at = (progress: SyncProgress, state: SyncReport['state'], error?: string): SyncReport => ({
        ...base,
        epoch: node.map.byId(partitionId)?.epoch ?? partition.epoch,
        state,
        rows: progress.rows,
        bytes: progress.bytes,
        totalRows: progress.totalRows,
        mode: progress.mode,
        ...(running.fastSkipped === undefined ? {} : { fastSkipped: running.fastSkipped }),
        ...(running.throttle.bytesPerSecond === undefined ? {} : { maxBytesPerSecond: running.throttle.bytesPerSecond }),
        updatedAtMs: Date.now(),
        ...(error === undefined ? {} : { error }),
      });
      // A resumed copy (after a source change or a failed call) goes on in key order: a full one.
      let last: SyncProgress = { rows: 0, bytes: 0, totalRows: 0, deleted: 0, mode: fastFrom !== undefined && running.copiedThrough === undefined ? 'fast' : 'full' };
      let counted = { rows: 0, bytes: 0 };
      const count = (progress: SyncProgress): void => {
        const by = node.syncCopied[progress.mode];
        by.keys += Math.max(0, progress.rows - counted.rows);
        by.bytes += Math.max(0, progress.bytes - counted.bytes);
        counted = { rows: progress.rows, bytes: progress.bytes };
      };
      let reportedAt = 0;
      const connection = new NodeConnection(running.source, this.credentials);
      const changes = this.replicaCredentials === undefined ? undefined : new NodeConnection(running.source, this.replicaCredentials);
      try {
        log.info(
          { epoch: partition.epoch, ...(running.copiedThrough === undefined ? {} : { resumedAfter: running.copiedThrough.toString('hex') }), ...(fastFrom === undefined ? {} : { fastFrom: `${fastFrom.stream}:${fastFrom.seq}` }) },
          'replica sync started: copying the partition from a snapshot of the chain\'s tail',
        );
        this.report(at(last, 'copying'), running);
        const result = await syncReplica({
          partition,
          mapVersion: map.version,
          target,
          source: connection,
          signal,
          beforeSnapshot: () => node.holdReplicaForSnapshot(partitionId),
          onSnapshot: (position) => node.positionReplica(partitionId, position),
          ...(running.copiedThrough === undefined ? {} : { startAfter: running.copiedThrough }),
          ...(fastFrom === undefined ? {} : { fastFrom }),
          throttle: running.throttle,
          ...(changes === undefined ? {} : { changesSource: changes }),
          onProgress: (progress) => {
            if (progress.mode !== last.mode) counted = { rows: 0, bytes: 0 };
            if (progress.fastSkipped !== undefined) running.fastSkipped = progress.fastSkipped;
            last = progress;
            count(progress);
            if (progress.copiedThrough !== undefined) running.copiedThrough = progress.copiedThrough;
            node.reportSync(partitionId, progress);
            if (Date.now() - reportedAt < 500) return;
            reportedAt = Date.now();
            this.report(at(progress, 'copying'), running);
          },
        });
        log.info(
          { mode: result.mode, rows: result.rows, bytes: result.bytes, deleted: result.deleted, ms: Date.now() - startedAtMs, ...(running.fastSkipped === undefined ? {} : { fastSkipped: running.fastSkipped }), throttledMs: Math.round(running.throttle.waitedMs) },
          'replica sync copied and verified the partition; waiting for the coordinator to make it serving',
        );
        this.report(at(result, 'copied'), running);
        return;
      } catch (err) {
        if (signal.aborted) return;
        // A copy that did not verify starts from the first key; one cut off (source gone) resumes.
        if (err instanceof StoreError && err.code === 'STORE_SYNC_MISMATCH') running.copiedThrough = undefined;
        // A fast copy that did not verify (the replica's data was not the stream's at its position:
        // it stopped mid-copy, or held writes the chain never got) copies the whole partition next.
        if (err instanceof StoreError && err.code === 'STORE_SYNC_MISMATCH' && last.mode === 'fast') running.forceFull = true;
        log.warn({ err: (err as Error).message, backoffMs }, 'replica sync failed; starting it again');
        this.report(at(last, 'failed', (err as Error).message), running);
        await sleep(backoffMs, undefined, { signal }).catch(() => undefined);
        backoffMs = Math.min(5000, backoffMs * 2);
      } finally {
        connection.close();
        changes?.close();
      }
    }
  }

  /** Puts a sync report under this node's lease (it goes when the node does); failures are logged. */
  private report(report: SyncReport, running: RunningSync): void {
    running.report = report;
    // One write at a time, in order: a late `copying` must never land after `copied`.
    running.writes = running.writes
      .then(() => this.lease.put(this.store.keys.sync(report.partition, this.address)).value(JSON.stringify(report)).exec())
      .then(
        () => undefined,
        (err: unknown) => {
          this.logger.warn({ err: (err as Error).message, partition: report.partition }, 'writing the sync report to etcd failed; writing it again in 1 s');
          // The report must reach etcd in the end: a `copied` lost while etcd was down would leave the
          // replica syncing for ever (the coordinator promotes only what it reads). Only the latest
          // report of a sync still running is written again.
          setTimeout(() => {
            if (!this.stop.signal.aborted && running.report === report && this.syncs.get(report.partition) === running) this.report(report, running);
          }, REPORT_RETRY_MS).unref();
        },
      );
  }

  private async keepAlive(): Promise<void> {
    const signal = this.stop.signal;
    while (!signal.aborted) {
      const intervalMs = Math.max(100, Math.floor(this.grantedLeaseMs / 3));
      const sentAt = Date.now();
      try {
        await this.lease.keepaliveOnce({ deadline: sentAt + intervalMs });
        this.confirmed(sentAt);
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof loadEtcd3().EtcdLeaseInvalidError) await this.renewRegistration();
        else this.logger.debug({ err: (err as Error).message }, 'etcd lease keep-alive failed');
      }
      const wait = intervalMs - (Date.now() - sentAt);
      if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => undefined);
    }
  }

  /** The lease ran out in etcd (revoked, or etcd came back after it expired): fence, register anew, resync. */
  private async renewRegistration(): Promise<void> {
    this.node?.fence('its etcd lease expired');
    this.lease.release();
    const sentAt = Date.now();
    try {
      const { lease, leaseMs } = await register(this.etcd, this.store, this.address, this.askedTtlSeconds, this.identity);
      this.lease = lease;
      this.grantedLeaseMs = leaseMs;
      // Resync requests went with the old lease: ask again with the next map installed.
      this.resyncAsked.clear();
      this.logger.info({ leaseMs }, 'registered in etcd again under a new lease');
      this.confirmed(sentAt);
    } catch (err) {
      // Someone else took this node's name while its lease was gone: it stays fenced rather than share it.
      if (err instanceof StoreError && err.code === 'STORE_NODE_DUPLICATE') this.logger.error({ err }, 'registering in etcd again failed: another process holds this node\'s registration; staying fenced');
      else this.logger.debug({ err: (err as Error).message }, 'registering in etcd again failed; retrying');
    }
  }

  private confirmed(sentAt: number): void {
    this.armFence(sentAt);
    if (this.node?.isFenced) {
      this.resyncing ??= this.resync().finally(() => {
        this.resyncing = undefined;
      });
    }
  }

  /** Reads the current map (linearizable), installs it and only then serves again. */
  private async resync(): Promise<void> {
    try {
      const stored = await this.store.read();
      if (stored === undefined) return;
      await this.install(stored.map);
      this.node?.unfence();
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'reading the partition map after a lost etcd session failed; staying fenced');
    }
  }

  private armFence(sentAt: number): void {
    if (this.node === undefined) return;
    clearTimeout(this.fenceTimer);
    const leaseMs = this.grantedLeaseMs;
    this.fenceTimer = setTimeout(() => this.node?.fence(`no etcd lease keep-alive confirmed for ${leaseMs} ms`), Math.max(0, sentAt + leaseMs - Date.now()));
    this.fenceTimer.unref();
  }
}

interface RunningSync {
  source: string;
  /** The replica's position before the sync (undefined: none, a fresh replica): where a fast sync copies from. */
  fastFrom: ChainPosition | undefined;
  /** A fast copy failed its verification: copy the whole partition. */
  forceFull: boolean;
  /** Why the source's change log could not be used, once a fast copy was tried (kept for the reports of later attempts). */
  fastSkipped?: string;
  throttle: SyncThrottle;
  /** Where this replica's copy got to (kept when the chain's tail changes: the copy from the new one resumes after it). */
  copiedThrough?: Buffer;
  abort: AbortController;
  done: Promise<void>;
  report: SyncReport | undefined;
  writes: Promise<void>;
}

/**
 * Registers `address` under a fresh lease, only if no one else holds the registration: two nodes
 * started with the same --node would otherwise overwrite each other's. This node's own registration
 * from an earlier run (same data-folder identity) is taken over at once. Any other is waited for, up
 * to its lease and a second more (a node without an identity that died goes with its lease); one
 * still there after that is kept alive by a live process.
 */
async function register(etcd: Etcd3, store: EtcdMapStore, address: string, ttl: number, identity: string | undefined): Promise<{ lease: Lease; leaseMs: number }> {
  const lease = etcd.lease(ttl, { autoKeepAlive: false });
  const key = store.keys.node(address);
  try {
    const leaseId = await lease.grant();
    // etcd may grant more than asked (its minimum TTL): fence by what it granted.
    const res = await lease.keepaliveOnce({ deadline: Date.now() + 5000 });
    const leaseMs = Number(res.TTL) * 1000;
    const registration: NodeRegistration = { node: address, registeredAtMs: Date.now(), leaseMs, pid: process.pid, ...(identity === undefined ? {} : { identity }) };
    let deadline: number | undefined;
    for (;;) {
      const put = await etcd.if(key, 'Create', '==', 0).then(etcd.put(key).value(JSON.stringify(registration)).lease(leaseId)).else(etcd.get(key)).commit();
      if (put.succeeded) return { lease, leaseMs };
      const held = put.responses[0]?.response_range?.kvs[0];
      if (held === undefined) continue;
      const holder = parseRegistration(held.value.toString());
      if (identity !== undefined && holder?.identity === identity) {
        // This node's own registration from before a restart: take it over, unless it changed meanwhile.
        const taken = await etcd.if(key, 'Mod', '==', held.mod_revision).then(etcd.put(key).value(JSON.stringify(registration)).lease(leaseId)).commit();
        if (taken.succeeded) return { lease, leaseMs };
        continue;
      }
      deadline ??= Date.now() + (holder?.leaseMs ?? ttl * 1000) + 1000;
      if (Date.now() >= deadline) {
        throw new StoreError(
          'STORE_NODE_DUPLICATE',
          `another process is registered in etcd as node ${address} (pid ${holder?.pid ?? '?'}, registered ${holder ? new Date(holder.registeredAtMs).toISOString() : 'at an unknown time'}) and keeps its lease alive: every node needs its own --node HOST:PORT; stop the other one or pick another address`,
        );
      }
      await untilChanged(store, put.header.revision, deadline);
    }
  } catch (err) {
    lease.release();
    throw err;
  }
}

/** `throttle/P/NODE` as written by an operation: `{maxBytesPerSecond, operation}`; absent = unthrottled. */
function parseThrottle(text: string | undefined): { bytesPerSecond?: number; operation?: string; error?: string } {
  if (text === undefined) return {};
  try {
    const value = JSON.parse(text) as { maxBytesPerSecond?: unknown; operation?: unknown };
    const rate = value.maxBytesPerSecond;
    const operation = typeof value.operation === 'string' ? value.operation : undefined;
    if (rate === undefined || rate === null) return { ...(operation === undefined ? {} : { operation }) };
    if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 1) return { error: `maxBytesPerSecond must be a number ≥ 1, got ${JSON.stringify(rate)}` };
    return { bytesPerSecond: rate, ...(operation === undefined ? {} : { operation }) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

function parseRegistration(text: string): NodeRegistration | undefined {
  try {
    return JSON.parse(text) as NodeRegistration;
  } catch {
    // Not ours to read: wait the default lease for it.
    return undefined;
  }
}

/** Resolves when a registration changes after `revision` (by watch) or at `deadline`. */
async function untilChanged(store: EtcdMapStore, revision: string, deadline: number): Promise<void> {
  let wake: () => void = () => undefined;
  const woken = new Promise<void>((resolve) => (wake = resolve));
  const watcher = await store.watchNodes(revision, () => wake());
  const timer = setTimeout(wake, Math.max(0, deadline - Date.now()));
  try {
    await woken;
  } finally {
    clearTimeout(timer);
    await watcher.cancel();
  }
}

function ttlSeconds(leaseMs: number): number {
  if (!Number.isFinite(leaseMs) || leaseMs < 1000 || leaseMs > 3_600_000) throw new RangeError(`--lease must be 1s–1h, got ${leaseMs} ms`);
  return Math.ceil(leaseMs / 1000);
}
