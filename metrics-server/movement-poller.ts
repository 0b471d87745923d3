import type { Logger } from '../common/index.js';
import { EtcdOperationStore, connectEtcd, isFinalOperationState, parseEtcdUrl, readGcReports, type EtcdConnectionOptions, type OperationKind, type OperationRecord, type OperationState } from '../store/index.js';
import type { PartitionView } from './partition-poller.js';

/** Options of the movement poller. Times in milliseconds. */
export interface MovementPollerOptions {
  /** The cluster's etcd (operation records under `operations/`, GC reports under `gc/`). Required. */
  etcd: EtcdConnectionOptions;
  /** Pause between reads of etcd. Default 10000. */
  intervalMs?: number;
  /** Operations that finished, kept in the view for people, newest first. Default 5. */
  finishedShown?: number;
  /** Clock. Default Date.now. */
  now?: () => number;
  logger: Logger;
}

/** One operation as the page and the API show it; bytes and rows summed over its steps. */
export interface OperationView {
  id: string;
  kind: OperationKind;
  state: OperationState;
  message: string | null;
  createdAtMs: number;
  updatedAtMs: number;
  steps: number;
  stepsDone: number;
  /** The running step's description and phase, if one runs. */
  current: string | null;
  /** Bytes done: finished steps count whole, running ones as far as they got. */
  bytesDone: number;
  /** Bytes of every step that knows its size; null when none does yet. */
  bytesTotal: number | null;
  rowsDone: number;
  rowsTotal: number | null;
  /** Seconds left at the rate since the first step started; null when unknown (no rate or no total). */
  etaSeconds: number | null;
  /** Seconds since the progress (bytes, rows, steps, phase) last changed, as this server saw it; first seen: since the record's update time. */
  stalledSeconds: number;
}

/** Data on a node that left a chain, waiting for the node's GC. */
export interface GcView {
  node: string;
  partition: number;
  bytes: number;
  leftAtMs: number;
  deleteAtMs: number;
}

/** What the "Data movement" panel shows. */
export interface MovementView {
  /** `not-configured`: the metrics server was started without `--etcd` (operations and GC are then unknown). */
  etcd: 'ok' | 'unreachable' | 'not-configured';
  error: string | null;
  /** When etcd was last read (Unix ms); null = never. */
  readAtMs: number | null;
  /** Operations not finished yet, oldest first. */
  operations: OperationView[];
  /** The last operations that finished, newest first. */
  finished: OperationView[];
  gc: GcView[];
  /** Share of the cluster's data per node (from the partition figures; see nodeDataShares). */
  nodes: NodeShareView[];
}

/** One node's share of the data. */
export interface NodeShareView {
  node: string;
  /** Logical bytes of every replica the node holds (a syncing one: as far as its copy got). */
  bytes: number;
  /** `bytes` ÷ the sum over all nodes (0–1); 0 when the cluster holds nothing. */
  share: number;
  replicas: number;
}

/**
 * Per-node data from the partitions' figures: a partition's logical bytes (read at its tail; every
 * serving replica of a chain holds the same data) count once for each serving replica, a syncing
 * replica counts what its copy reached. Partitions never read count 0.
 */
export function nodeDataShares(partitions: readonly PartitionView[]): NodeShareView[] {
  const byNode = new Map<string, { bytes: number; replicas: number }>();
  for (const p of partitions) {
    for (const r of p.chain) {
      const entry = byNode.get(r.node) ?? { bytes: 0, replicas: 0 };
      byNode.set(r.node, entry);
      entry.replicas++;
      entry.bytes += r.state === 'serving' ? (p.logicalBytes ?? 0) : Math.min(r.sync?.bytes ?? 0, p.logicalBytes ?? Infinity);
    }
  }
  let total = 0;
  for (const e of byNode.values()) total += e.bytes;
  return [...byNode]
    .map(([node, e]) => ({ node, bytes: e.bytes, share: total > 0 ? e.bytes / total : 0, replicas: e.replicas }))
    .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
}

/** Bytes, rows and steps of one record. */
export function operationProgress(record: OperationRecord, nowMs: number): Omit<OperationView, 'stalledSeconds'> {
  let bytesDone = 0;
  let bytesTotal = 0;
  let bytesKnown = false;
  let rowsDone = 0;
  let rowsTotal = 0;
  let rowsKnown = false;
  let stepsDone = 0;
  let firstStart = Infinity;
  let current: string | null = null;
  for (const step of record.steps) {
    const finished = step.state === 'done' || step.state === 'skipped';
    if (finished || step.state === 'failed' || step.state === 'rolled-back') stepsDone++;
    if (step.bytesTotal !== undefined) {
      bytesKnown = true;
      bytesTotal += step.bytesTotal;
    }
    if (step.rowsTotal !== undefined) {
      rowsKnown = true;
      rowsTotal += step.rowsTotal;
    }
    bytesDone += step.state === 'done' ? (step.bytesTotal ?? step.bytesDone ?? 0) : (step.bytesDone ?? 0);
    rowsDone += step.state === 'done' ? (step.rowsTotal ?? step.rowsDone ?? 0) : (step.rowsDone ?? 0);
    if (step.startedAtMs !== undefined) firstStart = Math.min(firstStart, step.startedAtMs);
    if (step.state === 'running' && current === null) current = step.phase === undefined ? step.description : `${step.description}: ${step.phase}`;
  }
  const elapsedS = (nowMs - firstStart) / 1000;
  const rate = Number.isFinite(elapsedS) && elapsedS > 0 ? bytesDone / elapsedS : 0;
  const etaSeconds = bytesKnown && rate > 0 && !isFinalOperationState(record.state) ? Math.max(0, Math.round((bytesTotal - bytesDone) / rate)) : null;
  return {
    id: record.id,
    kind: record.args.kind,
    state: record.state,
    message: record.message ?? record.error ?? null,
    createdAtMs: record.createdAtMs,
    updatedAtMs: record.updatedAtMs,
    steps: record.steps.length,
    stepsDone,
    current,
    bytesDone,
    bytesTotal: bytesKnown ? bytesTotal : null,
    rowsDone,
    rowsTotal: rowsKnown ? rowsTotal : null,
    etaSeconds,
  };
}

/**
 * Reads the cluster's operation records and GC reports from etcd on an interval, for the metrics
 * server's "Data movement" panel and its operation metrics. etcd down: the last figures stay,
 * marked `unreachable`.
 */
export class MovementPoller {
  readonly intervalMs: number;
  private readonly etcd: ReturnType<typeof connectEtcd>;
  private readonly operationsStore: EtcdOperationStore;
  private readonly display: string;
  private readonly finishedShown: number;
  private readonly now: () => number;
  private readonly logger: Logger;
  private operations: OperationView[] = [];
  private finished: OperationView[] = [];
  private gc: GcView[] = [];
  private state: 'ok' | 'unreachable' = 'unreachable';
  private error: string | null = 'not read yet';
  private readAtMs: number | null = null;
  /** Per operation: its last progress fingerprint and when it changed. */
  private readonly progressSeen = new Map<string, { fingerprint: string; changedAtMs: number }>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(options: MovementPollerOptions) {
    this.display = parseEtcdUrl(options.etcd.url).display;
    this.etcd = connectEtcd(options.etcd);
    this.operationsStore = new EtcdOperationStore(this.etcd, this.display);
    this.intervalMs = options.intervalMs ?? 10_000;
    if (!Number.isFinite(this.intervalMs) || this.intervalMs < 1) throw new RangeError(`intervalMs must be ≥ 1, got ${this.intervalMs}`);
    this.finishedShown = options.finishedShown ?? 5;
    this.now = options.now ?? Date.now;
    this.logger = options.logger.child({ module: 'movement-poller' });
  }

  start(): void {
    if (this.timer !== undefined || this.stopped) return;
    const loop = (): void => {
      this.poll().finally(() => {
        if (!this.stopped) this.timer = setTimeout(loop, this.intervalMs);
      });
    };
    this.timer = setTimeout(loop, 0);
  }

  /** Reads etcd now (joining a read running). Never rejects. */
  poll(): Promise<void> {
    this.running ??= this.pollOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** The panel's figures; `partitions` gives the per-node shares. */
  view(partitions: readonly PartitionView[]): MovementView {
    return { etcd: this.state, error: this.error, readAtMs: this.readAtMs, operations: this.operations, finished: this.finished, gc: this.gc, nodes: nodeDataShares(partitions) };
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    this.etcd.close();
  }

  private async pollOnce(): Promise<void> {
    try {
      const [{ operations }, reports] = await Promise.all([this.operationsStore.list(), readGcReports(this.etcd, this.display)]);
      const now = this.now();
      const views = operations.map(({ record }) => this.withStall(record, now));
      const ids = new Set(operations.map((o) => o.record.id));
      for (const id of this.progressSeen.keys()) if (!ids.has(id)) this.progressSeen.delete(id);
      this.operations = views.filter((v) => !isFinalOperationState(v.state));
      this.finished = views.filter((v) => isFinalOperationState(v.state)).sort((a, b) => b.updatedAtMs - a.updatedAtMs).slice(0, this.finishedShown);
      this.gc = reports.flatMap((r) => r.partitions.map((p) => ({ node: r.node, partition: p.partition, bytes: p.bytes, leftAtMs: p.leftAtMs, deleteAtMs: p.deleteAtMs })));
      if (this.state !== 'ok') this.logger.info({ etcd: this.display }, 'reading operations and GC reports from etcd');
      this.state = 'ok';
      this.error = null;
      this.readAtMs = now;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (this.state === 'ok' || this.readAtMs === null) this.logger.warn({ err: message }, 'reading operations from etcd failed; showing the last figures');
      this.state = 'unreachable';
      this.error = message;
    }
  }

  private withStall(record: OperationRecord, now: number): OperationView {
    const progress = operationProgress(record, now);
    const fingerprint = JSON.stringify([record.state, progress.bytesDone, progress.rowsDone, progress.stepsDone, progress.current]);
    const seen = this.progressSeen.get(record.id);
    if (seen === undefined || seen.fingerprint !== fingerprint) {
      this.progressSeen.set(record.id, { fingerprint, changedAtMs: seen === undefined ? Math.min(now, record.updatedAtMs) : now });
    }
    // Queued behind other operations' movements (the cluster-wide --max-movements): not stalled
    // itself; the operation holding the slot is the one that shows a stall if there is one.
    if (waitsForMovementSlot(record)) this.progressSeen.set(record.id, { fingerprint, changedAtMs: now });
    const changedAtMs = this.progressSeen.get(record.id)!.changedAtMs;
    return { ...progress, stalledSeconds: Math.max(0, Math.round((now - changedAtMs) / 1000)) };
  }
}

/** A running operation with steps still to start and none running: the coordinator holds them until a movement slot frees. */
function waitsForMovementSlot(record: OperationRecord): boolean {
  return record.state === 'running' && record.steps.some((s) => s.state === 'pending') && !record.steps.some((s) => s.state === 'running');
}
