import { statfs } from 'node:fs/promises';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

type Labels = 'method' | 'code';

/** Seconds; RPCs range from sub-millisecond gets to scans streaming for minutes. */
const RPC_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];

/**
 * RPC metrics of a store node, by method (Get, BulkInsert, Scan, ...) and gRPC status name
 * (OK, FAILED_PRECONDITION, ...): `shardpipe_store_rpc_total` and
 * `shardpipe_store_rpc_duration_seconds`. Several nodes may share one registry.
 */
export class StoreRpcMetrics {
  private readonly calls: Counter<Labels>;
  private readonly seconds: Histogram<Labels>;

  constructor(registry: Registry) {
    this.calls =
      (registry.getSingleMetric('shardpipe_store_rpc_total') as Counter<Labels> | undefined) ??
      new Counter({ name: 'shardpipe_store_rpc_total', help: 'RPCs answered by this store node, by method and gRPC status', labelNames: ['method', 'code'], registers: [registry] });
    this.seconds =
      (registry.getSingleMetric('shardpipe_store_rpc_duration_seconds') as Histogram<Labels> | undefined) ??
      new Histogram({
        name: 'shardpipe_store_rpc_duration_seconds',
        help: 'Time from receiving an RPC to its final status (for Scan: the whole stream), by method and gRPC status',
        labelNames: ['method', 'code'],
        buckets: RPC_BUCKETS_SECONDS,
        registers: [registry],
      });
  }

  /** Starts timing one call; the returned function records it with the call's final gRPC status code. */
  start(method: string): (grpcCode: number | undefined) => void {
    const started = process.hrtime.bigint();
    return (grpcCode = GrpcStatus.UNKNOWN) => {
      const labels = { method, code: GrpcStatus[grpcCode] ?? String(grpcCode) };
      this.calls.inc(labels);
      this.seconds.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
    };
  }
}

/** What a node reports for its health and limit metrics. */
export interface StoreNodeMetricsSource {
  node: string;
  partitions: () => ReadonlyArray<{ partitionId: number; serving: boolean; writeErrors: number }>;
  inflightBytes: () => number;
  waitingBytes: () => number;
  /** The node's data folder: the free and total bytes of its file system are reported. */
  dataDir: string;
  /** The replicas the node holds, their state and a syncing one's copy progress. */
  replicas?: () => ReadonlyArray<{ partitionId: number; state: string; sync: { rows: number; bytes: number; totalRows: number } | undefined; lagSequences?: number; forwardRetries?: number }>;
  /** Object GC: data of partitions that left the node, awaiting deletion, and what was deleted (store/partition-gc.ts). */
  gc?: () => { graceMs: number; pendingPartitions: number; pendingBytes: number; oldestPendingMs: number; deletedPartitions: number; deletedBytes: number };
  /** Keys and bytes (as PartitionStats counts them) this node's syncs copied since it started, by mode (fast: changed keys only; full: the whole partition). */
  syncCopied?: () => Readonly<Record<'fast' | 'full', { keys: number; bytes: number }>>;
}

type NodeLabels = 'node' | 'partition';
const nodeSources = new WeakMap<Registry, Set<StoreNodeMetricsSource>>();

/**
 * Health and limit metrics of store nodes, read when scraped: `shardpipe_partition_serving`
 * (1 = takes writes, 0 = recovering from a write fault), `shardpipe_partition_write_errors_total`,
 * `shardpipe_store_inflight_bytes` / `shardpipe_store_inflight_waiting_bytes` (the request budget)
 * `shardpipe_store_overloaded_total` (calls refused with STORE_OVERLOADED, by method) and
 * `shardpipe_store_disk_free_bytes` / `shardpipe_store_disk_total_bytes` (the data folder's file
 * system, as statfs reports it; free = available to the node's user); `shardpipe_replica_state`
 * (1 per replica held, labelled with its state) and, for syncing replicas, `shardpipe_replica_sync_bytes`,
 * `_sync_rows` and `_sync_total_rows` (the current copy's progress); `shardpipe_replica_lag_sequences`
 * (the head's sequence number minus the one this replica holds durably) and
 * `shardpipe_replica_forward_retries` (forwards sent again since the node started).
 * Several nodes may share one registry; each is labelled with its address.
 */
export class StoreNodeMetrics {
  private readonly overloaded: Counter<'node' | 'method'>;
  private readonly pauses: Histogram<'node'>;
  private readonly sources: Set<StoreNodeMetricsSource>;

  constructor(
    private readonly registry: Registry,
    private readonly source: StoreNodeMetricsSource,
  ) {
    let sources = nodeSources.get(registry);
    if (sources === undefined) {
      sources = new Set();
      nodeSources.set(registry, sources);
      registerNodeGauges(registry, sources);
    }
    this.sources = sources;
    sources.add(source);
    this.overloaded =
      (registry.getSingleMetric('shardpipe_store_overloaded_total') as Counter<'node' | 'method'> | undefined) ??
      new Counter({ name: 'shardpipe_store_overloaded_total', help: 'Calls refused with STORE_OVERLOADED (in-flight request budget full), by method', labelNames: ['node', 'method'], registers: [registry] });
    this.pauses =
      (registry.getSingleMetric('shardpipe_write_pause_seconds') as Histogram<'node'> | undefined) ??
      new Histogram({
        name: 'shardpipe_write_pause_seconds',
        help: "How long a head held a partition's writes for a split's cut, from the pause request to the release",
        labelNames: ['node'],
        buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
        registers: [registry],
      });
  }

  /** Records one write pause (WritePause release), seconds. */
  writePause(seconds: number): void {
    this.pauses.observe({ node: this.source.node }, seconds);
  }

  /** Counts one call refused for overload. */
  refused(method: string): void {
    this.overloaded.inc({ node: this.source.node, method });
  }

  /** Stops reporting this node (its gauges disappear at the next scrape). */
  close(): void {
    this.sources.delete(this.source);
  }
}

function registerNodeGauges(registry: Registry, sources: Set<StoreNodeMetricsSource>): void {
  new Gauge<NodeLabels>({
    name: 'shardpipe_partition_serving',
    help: '1 while the partition takes writes, 0 while it recovers from a write fault (disk full, I/O error)',
    labelNames: ['node', 'partition'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of sources) for (const p of s.partitions()) this.set({ node: s.node, partition: String(p.partitionId) }, p.serving ? 1 : 0);
    },
  });
  new Counter<NodeLabels>({
    name: 'shardpipe_partition_write_errors_total',
    help: 'LevelDB write failures of the partition since it was opened',
    labelNames: ['node', 'partition'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of sources) for (const p of s.partitions()) this.inc({ node: s.node, partition: String(p.partitionId) }, p.writeErrors);
    },
  });
  new Gauge<'node'>({
    name: 'shardpipe_store_inflight_bytes',
    help: 'Request bytes the node holds for admitted calls (bounded by --max-inflight-bytes)',
    labelNames: ['node'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of sources) this.set({ node: s.node }, s.inflightBytes());
    },
  });
  new Gauge<'node'>({
    name: 'shardpipe_store_inflight_waiting_bytes',
    help: 'Request bytes of calls waiting for room in the in-flight budget',
    labelNames: ['node'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of sources) this.set({ node: s.node }, s.waitingBytes());
    },
  });
  new Gauge<NodeLabels | 'state'>({
    name: 'shardpipe_replica_state',
    help: "1 for the state (serving, syncing) of each replica this node holds, by partition",
    labelNames: ['node', 'partition', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of sources) for (const r of s.replicas?.() ?? []) this.set({ node: s.node, partition: String(r.partitionId), state: r.state }, 1);
    },
  });
  type ReplicaFigures = ReturnType<NonNullable<StoreNodeMetricsSource['replicas']>>[number];
  // One series per replica this node holds; `pick` undefined leaves the replica out (no sync running).
  const replicaGauge = (name: string, help: string, pick: (r: ReplicaFigures) => number | undefined): void => {
    new Gauge<NodeLabels>({
      name,
      help,
      labelNames: ['node', 'partition'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sources) {
          for (const r of s.replicas?.() ?? []) {
            const value = pick(r);
            if (value !== undefined) this.set({ node: s.node, partition: String(r.partitionId) }, value);
          }
        }
      },
    });
  };
  replicaGauge('shardpipe_replica_lag_sequences', "Writes of its chain's head this replica does not hold durably yet: the head's sequence number (as the latest forward carried it) minus this replica's (0 at the head)", (r) => r.lagSequences ?? 0);
  replicaGauge('shardpipe_replica_forward_retries', 'Forwards this replica sent again (failed or not answered within --forward-timeout) since the node started', (r) => r.forwardRetries ?? 0);
  replicaGauge('shardpipe_replica_sync_bytes', 'Bytes (key, record header and value, as PartitionStats counts them) a syncing replica has copied so far in its current sync (restarts at 0 when a sync starts again)', (r) => r.sync?.bytes);
  replicaGauge('shardpipe_replica_sync_rows', 'Rows a syncing replica has copied so far in its current sync', (r) => r.sync?.rows);
  replicaGauge('shardpipe_replica_sync_total_rows', "Rows in the snapshot a syncing replica copies (0 until it has one)", (r) => r.sync?.totalRows);
  registerGcMetrics(registry, sources);
  const copied = (name: string, help: string, pick: (c: { keys: number; bytes: number }) => number): void => {
    new Counter<'node' | 'mode'>({
      name,
      help,
      labelNames: ['node', 'mode'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sources) {
          const by = s.syncCopied?.();
          if (by === undefined) continue;
          for (const mode of ['fast', 'full'] as const) this.inc({ node: s.node, mode }, pick(by[mode]));
        }
      },
    });
  };
  copied('shardpipe_replica_sync_copied_bytes_total', 'Bytes (as PartitionStats counts them) the syncs of this node copied, by mode (fast: the keys changed since the replica\'s position, from its source\'s change log; full: the whole partition)', (c) => c.bytes);
  copied('shardpipe_replica_sync_copied_keys_total', 'Keys the syncs of this node copied (written or deleted), by mode', (c) => c.keys);
  const disk = async (pick: (f: { bavail: number; blocks: number; bsize: number }) => number, gauge: Gauge<'node'>): Promise<void> => {
    gauge.reset();
    for (const s of sources) {
      try {
        gauge.set({ node: s.node }, pick(await statfs(s.dataDir)));
      } catch {
        // The folder vanished or is unreadable: no figure rather than a wrong one.
      }
    }
  };
  new Gauge<'node'>({
    name: 'shardpipe_store_disk_free_bytes',
    help: "Bytes available to the node on its data folder's file system",
    labelNames: ['node'],
    registers: [registry],
    async collect() {
      await disk((f) => f.bavail * f.bsize, this);
    },
  });
  new Gauge<'node'>({
    name: 'shardpipe_store_disk_total_bytes',
    help: "Size of the node's data folder's file system, bytes",
    labelNames: ['node'],
    registers: [registry],
    async collect() {
      await disk((f) => f.blocks * f.bsize, this);
    },
  });
}

/**
 * Object GC of each node: `shardpipe_gc_pending_bytes` / `_pending_partitions` (folders of
 * partitions that left the node, kept until the grace passed), `shardpipe_gc_oldest_pending_seconds`,
 * `shardpipe_gc_grace_seconds` (the alert compares the two), and `shardpipe_gc_deleted_bytes_total` /
 * `_deleted_partitions_total` since the node started.
 */
function registerGcMetrics(registry: Registry, sources: Set<StoreNodeMetricsSource>): void {
  type Figures = ReturnType<NonNullable<StoreNodeMetricsSource['gc']>>;
  const metric = (kind: 'gauge' | 'counter', name: string, help: string, pick: (f: Figures) => number): void => {
    const collect = function (this: Gauge<'node'> | Counter<'node'>): void {
      this.reset();
      for (const s of sources) {
        const f = s.gc?.();
        if (f === undefined) continue;
        if (this instanceof Gauge) this.set({ node: s.node }, pick(f));
        else this.inc({ node: s.node }, pick(f));
      }
    };
    if (kind === 'gauge') new Gauge<'node'>({ name, help, labelNames: ['node'], registers: [registry], collect });
    else new Counter<'node'>({ name, help, labelNames: ['node'], registers: [registry], collect });
  };
  metric('gauge', 'shardpipe_gc_pending_bytes', 'Bytes on disk of partitions that left this node (moved, drained, fewer replicas, merged away) and wait for GC after --gc-grace', (f) => f.pendingBytes);
  metric('gauge', 'shardpipe_gc_pending_partitions', 'Partitions that left this node whose folders wait for GC', (f) => f.pendingPartitions);
  metric('gauge', 'shardpipe_gc_oldest_pending_seconds', 'Seconds since the oldest partition awaiting GC left this node (0 when none)', (f) => f.oldestPendingMs / 1000);
  metric('gauge', 'shardpipe_gc_grace_seconds', 'The node\'s --gc-grace: how long a partition that left stays on disk', (f) => f.graceMs / 1000);
  metric('counter', 'shardpipe_gc_deleted_bytes_total', 'Bytes of partition folders GC deleted since the node started', (f) => f.deletedBytes);
  metric('counter', 'shardpipe_gc_deleted_partitions_total', 'Partition folders GC deleted since the node started', (f) => f.deletedPartitions);
}
