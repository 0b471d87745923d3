import type { Logger } from '../common/index.js';
import { displayBytes, type Partition, type PartitionMap, type StoreClient } from '../store/index.js';

/** Options of the poller. Times in milliseconds. */
export interface PartitionPollerOptions {
  /** Fetches the map and the nodes' PartitionStats. Required; the caller owns and closes it. */
  client: StoreClient;
  /** Pause between the end of one poll and the start of the next. Default 10000. */
  intervalMs?: number;
  /** Budget of one poll's RPCs (map refresh, then stats of every node in parallel). Default 5000. */
  pollTimeoutMs?: number;
  /** Cluster totals kept for the page's sparkline, one per poll. Default 360 (an hour at 10 s). */
  historyLength?: number;
  /** Called after every poll, successful or not (for the poll latency metric). */
  onPoll?: (result: PollResult) => void;
  /** Clock. Default Date.now. */
  now?: () => number;
  logger: Logger;
}

/** What one poll achieved. */
export interface PollResult {
  atMs: number;
  durationMs: number;
  /** The map was fetched and at least one node answered. */
  ok: boolean;
  nodesUp: number;
  nodesDown: number;
  /** Why the poll got nothing at all (no map). */
  error?: string;
}

/**
 * Whether a partition's figures are current:
 * - `ok`: read in the last poll;
 * - `unreachable`: its node did not answer the last poll; the figures are the last known ones;
 * - `not-reported`: its node answered but did not report it (the node has another map version).
 */
export type PartitionStatus = 'ok' | 'unreachable' | 'not-reported';

/** Change between the last two samples of a partition, per second. */
export interface PartitionRates {
  /** Time between the two samples. */
  intervalMs: number;
  /** Net change of the entry count (inserts minus deletes and expiries; overwrites do not count). */
  entriesPerSecond: number;
  /** Net change of the logical size, bytes per second. */
  logicalBytesPerSecond: number;
  /** Whether the partition was written between the two samples (its last write time moved). */
  wrote: boolean;
  /** Entries read per second (gets, scanned and checksummed entries); null when the node restarted in between (its counters restart). */
  readsPerSecond: number | null;
  /** Entries written per second (puts, deletes, bulk rows, overwrites included); null when the node restarted in between. */
  writesPerSecond: number | null;
}

/** One partition as the API and the page show it. All figures come from one sample, `ageMs` old. */
export interface PartitionView {
  id: number;
  /** Key range `[start, end)` as hex; "" = beginning / end of the keyspace. */
  start: string;
  end: string;
  /** The same bounds for people: text when printable, else 0x-hex; "" for open ends. */
  startDisplay: string;
  endDisplay: string;
  node: string;
  status: PartitionStatus;
  /** Approximate entry count (expired entries count until swept); null = never read. */
  entries: number | null;
  /** Sum of key and record sizes. */
  logicalBytes: number | null;
  /** LevelDB's on-disk estimate (excludes the memtable). */
  diskBytes: number | null;
  /** Unix ms of the last write; null = never written or never read. */
  lastWriteMs: number | null;
  /** When these figures were read (Unix ms); null = never. */
  sampledAtMs: number | null;
  /** Age of the figures at the time of the request. */
  ageMs: number | null;
  /** Null until two samples exist, and while the figures are not current. */
  rates: PartitionRates | null;
  /** The partition's chain, head first (one entry for a single-replica partition), as the map has it, with what each replica's node last reported. */
  chain: ReplicaView[];
}

/** One replica of a partition's chain. */
export interface ReplicaView {
  node: string;
  /** serving or syncing (the map's). */
  state: string;
  /** Whether the node answered the last poll; null before the first. */
  up: boolean | null;
  /** The last write sequence number the replica applied (the head: assigned); null = not reported. */
  lastSeq: number | null;
  /**
   * The head's lastSeq minus this replica's (0 for the head; ≥ 0); null when either is unknown. Both
   * come from one poll, read at about the same moment. Right after a chain change a replica that
   * has not received a write under the new epoch reports 0, so a quiet chain may show a lag until
   * its next write.
   */
  lagSequences: number | null;
  /** Writes this replica forwarded that the tail has not acknowledged; null = not reported. */
  unacked: number | null;
  /** A syncing replica's copy progress; null otherwise. */
  sync: { rows: number; bytes: number; totalRows: number } | null;
}

/** One store node of the map. */
export interface NodeView {
  node: string;
  /** Answered the last poll; null before the first poll. */
  up: boolean | null;
  /** The map version the node reported; null if it never answered. */
  mapVersion: number | null;
  /** Partitions whose chain it heads. */
  partitions: number;
  /** Replicas it holds, any place in a chain. */
  replicas: number;
  /** Unix ms of the last answer; null = never. */
  lastSeenMs: number | null;
  /** Why the last poll got no answer. */
  error: string | null;
}

/** Totals over the partitions of the current map, from their last known figures. */
export interface ClusterView {
  ready: boolean;
  mapVersion: number | null;
  partitions: number;
  nodes: number;
  nodesUp: number;
  entries: number;
  logicalBytes: number;
  diskBytes: number;
  /** Partitions whose figures are not from the last poll (their last known figures are in the totals). */
  stalePartitions: number;
  /** Partitions never read (not in the totals). */
  unknownPartitions: number;
  pollIntervalMs: number;
  lastPoll: PollResult | null;
  /** Cluster totals after each poll, oldest first. */
  history: Array<{ atMs: number; entries: number; logicalBytes: number }>;
}

interface Sample {
  entries: number;
  logicalBytes: number;
  diskBytes: number;
  lastWriteMs: number;
  reads: number;
  writes: number;
  atMs: number;
}

interface ReplicaSample {
  lastSeq: number;
  unacked: number;
  sync: { rows: number; bytes: number; totalRows: number } | null;
}

interface NodeState {
  up: boolean;
  mapVersion: number | null;
  lastSeenMs: number | null;
  error: string | null;
}

/**
 * Polls every store node's PartitionStats on an interval and keeps, per partition, the last two
 * samples (for rates) and, per node, whether it answered. A node that stops answering keeps its
 * partitions' last figures, marked unreachable with their age — never zeros.
 */
export class PartitionPoller {
  readonly intervalMs: number;
  private readonly client: StoreClient;
  private readonly pollTimeoutMs: number;
  private readonly historyLength: number;
  private readonly onPoll: ((result: PollResult) => void) | undefined;
  private readonly now: () => number;
  private readonly logger: Logger;
  private map: PartitionMap | undefined;
  private readonly samples = new Map<number, { current: Sample; previous?: Sample }>();
  /** Partitions read in the last poll. */
  private fresh = new Set<number>();
  private replicas = new Map<string, ReplicaSample>();
  private readonly nodes = new Map<string, NodeState>();
  private readonly history: ClusterView['history'] = [];
  private lastPoll: PollResult | null = null;
  private everReady = false;
  private readyWaiters: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<PollResult> | undefined;
  private readonly stop = new AbortController();

  constructor(options: PartitionPollerOptions) {
    this.client = options.client;
    this.intervalMs = positive('intervalMs', options.intervalMs ?? 10_000);
    this.pollTimeoutMs = positive('pollTimeoutMs', options.pollTimeoutMs ?? 5000);
    this.historyLength = positive('historyLength', options.historyLength ?? 360);
    this.onPoll = options.onPoll;
    this.now = options.now ?? Date.now;
    this.logger = options.logger.child({ module: 'metrics-poller' });
  }

  /** Polls now and then every `intervalMs` until `close()`. */
  start(): void {
    if (this.timer !== undefined || this.stop.signal.aborted) return;
    const loop = (): void => {
      this.poll().finally(() => {
        if (!this.stop.signal.aborted) this.timer = setTimeout(loop, this.intervalMs);
      });
    };
    this.timer = setTimeout(loop, 0);
  }

  /** Polls now (joining a poll already running). Never rejects: failures are in the result. */
  poll(): Promise<PollResult> {
    this.running ??= this.pollOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** True once a poll fetched the map and heard from at least one node. */
  get ready(): boolean {
    return this.everReady;
  }

  /** Resolves once ready (or rejects when the signal aborts). */
  waitUntilReady(signal?: AbortSignal): Promise<void> {
    if (this.everReady) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(signal!.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.readyWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** The partitions of the current map in key order, with their last known figures. */
  partitions(): PartitionView[] {
    const now = this.now();
    return (this.map?.partitions ?? []).map((p) => {
      const sample = this.samples.get(p.id);
      const status: PartitionStatus = this.fresh.has(p.id) ? 'ok' : this.nodes.get(p.node)?.up === false ? 'unreachable' : 'not-reported';
      const current = sample?.current;
      const previous = sample?.previous;
      let rates: PartitionRates | null = null;
      if (status === 'ok' && current && previous && current.atMs > previous.atMs) {
        const seconds = (current.atMs - previous.atMs) / 1000;
        rates = {
          intervalMs: current.atMs - previous.atMs,
          entriesPerSecond: round((current.entries - previous.entries) / seconds),
          logicalBytesPerSecond: round((current.logicalBytes - previous.logicalBytes) / seconds),
          wrote: current.lastWriteMs > previous.lastWriteMs,
          readsPerSecond: current.reads >= previous.reads ? round((current.reads - previous.reads) / seconds) : null,
          writesPerSecond: current.writes >= previous.writes ? round((current.writes - previous.writes) / seconds) : null,
        };
      }
      return {
        id: p.id,
        start: p.start.toString('hex'),
        end: p.end.toString('hex'),
        startDisplay: p.start.length > 0 ? displayBytes(p.start) : '',
        endDisplay: p.end.length > 0 ? displayBytes(p.end) : '',
        node: p.node,
        status,
        entries: current?.entries ?? null,
        logicalBytes: current?.logicalBytes ?? null,
        diskBytes: current?.diskBytes ?? null,
        lastWriteMs: current && current.lastWriteMs > 0 ? current.lastWriteMs : null,
        sampledAtMs: current?.atMs ?? null,
        ageMs: current ? Math.max(0, now - current.atMs) : null,
        rates,
        chain: this.chainOf(p),
      };
    });
  }

  /** Every node of the current map, in key order of its first partition. */
  nodeViews(): NodeView[] {
    const map = this.map;
    if (!map) return [];
    return map.replicaNodes().map((node) => {
      const state = this.nodes.get(node);
      return {
        node,
        up: state?.up ?? null,
        mapVersion: state?.mapVersion ?? null,
        partitions: map.partitionsOf(node).length,
        replicas: map.replicasOf(node).length,
        lastSeenMs: state?.lastSeenMs ?? null,
        error: state?.error ?? null,
      };
    });
  }

  cluster(): ClusterView {
    const partitions = this.partitions();
    const nodes = this.nodeViews();
    const totals = sumFigures(partitions);
    return {
      ready: this.everReady,
      mapVersion: this.map?.version ?? null,
      partitions: partitions.length,
      nodes: nodes.length,
      nodesUp: nodes.filter((n) => n.up === true).length,
      entries: totals.entries,
      logicalBytes: totals.logicalBytes,
      diskBytes: totals.diskBytes,
      stalePartitions: partitions.filter((p) => p.status !== 'ok' && p.entries !== null).length,
      unknownPartitions: partitions.filter((p) => p.entries === null).length,
      pollIntervalMs: this.intervalMs,
      lastPoll: this.lastPoll,
      history: [...this.history],
    };
  }

  /** A partition's chain with the last poll's figures of each replica. */
  private chainOf(p: Partition): ReplicaView[] {
    const head = this.replicas.get(`${p.id}/${p.chain[0]?.node}`);
    return p.chain.map((r) => {
      const sample = this.replicas.get(`${p.id}/${r.node}`);
      return {
        node: r.node,
        state: r.state,
        up: this.nodes.get(r.node)?.up ?? null,
        lastSeq: sample?.lastSeq ?? null,
        lagSequences: sample === undefined || head === undefined ? null : Math.max(0, head.lastSeq - sample.lastSeq),
        unacked: sample?.unacked ?? null,
        sync: sample?.sync ?? null,
      };
    });
  }

  /** The current map, if one was ever fetched. */
  currentMap(): PartitionMap | undefined {
    return this.map;
  }

  /** Stops polling and waits for a running poll. Idempotent; the client stays open (the caller's). */
  async close(): Promise<void> {
    this.stop.abort();
    clearTimeout(this.timer);
    await this.running;
  }

  private async pollOnce(): Promise<PollResult> {
    const startedAt = this.now();
    const started = performance.now();
    const options = { timeoutMs: this.pollTimeoutMs, signal: this.stop.signal };
    let result: PollResult;
    try {
      try {
        this.map = await this.client.refreshMap(options);
      } catch (err) {
        // Keep polling the nodes of the last map: they may answer stats even when no seed serves the map.
        if (!this.map) throw err;
        this.logger.debug({ err }, 'partition map refresh failed; using the last map');
      }
      const map = this.map;
      const answers = await this.client.stats(options);
      const atMs = this.now();
      const fresh = new Set<number>();
      // Only this poll's answers: a replica's figures are never mixed with another poll's head figures.
      const replicas = new Map<string, ReplicaSample>();
      let up = 0;
      for (const answer of answers) {
        const state = this.nodes.get(answer.node) ?? { up: false, mapVersion: null, lastSeenMs: null, error: null };
        this.nodes.set(answer.node, state);
        if (!answer.result.ok) {
          if (state.up || state.error === null) this.logger.warn({ node: answer.node, err: answer.result.error.message }, 'store node did not answer PartitionStats');
          state.up = false;
          state.error = answer.result.error.message;
          continue;
        }
        up++;
        Object.assign(state, { up: true, mapVersion: answer.result.mapVersion, lastSeenMs: atMs, error: null });
        for (const r of answer.result.replicas) {
          replicas.set(`${r.partitionId}/${answer.node}`, { lastSeq: r.lastSeq, unacked: r.unacked, sync: r.state === 'syncing' ? { rows: r.syncRows, bytes: r.syncBytes, totalRows: r.syncTotalRows } : null });
        }
        for (const s of answer.result.partitions) {
          // Figures belong to the partition id; the range and node shown are the current map's.
          if (!map.byId(s.id)) continue;
          const current: Sample = { entries: s.approxCount, logicalBytes: s.logicalBytes, diskBytes: s.diskBytes, lastWriteMs: s.lastWriteMs, reads: s.reads, writes: s.writes, atMs };
          this.samples.set(s.id, { current, previous: this.samples.get(s.id)?.current });
          fresh.add(s.id);
        }
      }
      for (const id of this.samples.keys()) if (!map.byId(id)) this.samples.delete(id);
      for (const node of this.nodes.keys()) if (!map.replicaNodes().includes(node)) this.nodes.delete(node);
      this.fresh = fresh;
      this.replicas = replicas;
      result = { atMs: startedAt, durationMs: round(performance.now() - started), ok: up > 0, nodesUp: up, nodesDown: answers.length - up };
      if (up > 0) this.becomeReady();
      const totals = sumFigures(this.partitions());
      this.history.push({ atMs, entries: totals.entries, logicalBytes: totals.logicalBytes });
      if (this.history.length > this.historyLength) this.history.splice(0, this.history.length - this.historyLength);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // Said once per outage, not on every poll.
      if (!this.stop.signal.aborted) this.logger[this.lastPoll?.error === undefined ? 'warn' : 'debug']({ err: message }, 'poll failed: no partition map');
      result = { atMs: startedAt, durationMs: round(performance.now() - started), ok: false, nodesUp: 0, nodesDown: this.nodes.size, error: message };
    }
    this.lastPoll = result;
    this.onPoll?.(result);
    return result;
  }

  private becomeReady(): void {
    if (this.everReady) return;
    this.everReady = true;
    this.logger.info({ mapVersion: this.map?.version, partitions: this.map?.partitions.length }, 'first poll done: ready');
    for (const wake of this.readyWaiters.splice(0)) wake();
  }
}

function sumFigures(partitions: readonly PartitionView[]): { entries: number; logicalBytes: number; diskBytes: number } {
  let entries = 0;
  let logicalBytes = 0;
  let diskBytes = 0;
  for (const p of partitions) {
    entries += p.entries ?? 0;
    logicalBytes += p.logicalBytes ?? 0;
    diskBytes += p.diskBytes ?? 0;
  }
  return { entries, logicalBytes, diskBytes };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 1) throw new RangeError(`${name} must be ≥ 1, got ${value}`);
  return value;
}
