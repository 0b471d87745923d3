import { Gauge, Histogram, type Registry } from 'prom-client';
import type { PartitionPoller, PartitionView, PollResult, ReplicaView } from './partition-poller.js';

export interface ClusterMetricsOptions {
  /** Where the metrics are registered. Required. */
  registry: Registry;
  /** Whose figures are exported, read at scrape time. Required. */
  poller: PartitionPoller;
  /**
   * Most partitions exported with their own `partition` label. Partitions beyond it (in key
   * order) are summed per node into `partition="_other"`, so a cluster of any size costs at most
   * `maxPartitionSeries + nodes` series per per-partition metric. Default 200.
   */
  maxPartitionSeries?: number;
}

/** Name of the series that sums the partitions beyond the cap. */
export const OTHER_PARTITIONS = '_other';

const POLL_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The metrics server's Prometheus metrics: per-partition gauges (capped), per-node up/down,
 * cluster totals, and the poll latency histogram. Gauges are filled from the poller's last
 * figures when scraped, so partitions that left the map disappear with it.
 */
export class ClusterMetrics {
  readonly maxPartitionSeries: number;
  private readonly pollSeconds: Histogram<'outcome'>;

  constructor(options: ClusterMetricsOptions) {
    const { registry, poller } = options;
    const cap = options.maxPartitionSeries ?? 200;
    if (!Number.isInteger(cap) || cap < 0) throw new RangeError(`maxPartitionSeries must be a whole number ≥ 0, got ${cap}`);
    this.maxPartitionSeries = cap;
    const registers = [registry];
    const labelNames = ['partition', 'node'] as const;

    // One snapshot per scrape, shared by the gauges collected in that scrape.
    let snapshot: { at: number; partitions: PartitionView[] } | undefined;
    const partitions = (): PartitionView[] => {
      const now = performance.now();
      if (!snapshot || now - snapshot.at > 100) snapshot = { at: now, partitions: poller.partitions() };
      return snapshot.partitions;
    };
    const perPartition = (name: string, help: string, pick: (p: PartitionView) => number | null, fold: 'sum' | 'max'): void => {
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect(this: Gauge<'partition' | 'node'>) {
          this.reset();
          const folded = new Map<string, number>();
          partitions().forEach((p, i) => {
            const value = pick(p);
            if (value === null) return;
            if (i < cap) {
              this.set({ partition: String(p.id), node: p.node }, value);
              return;
            }
            const before = folded.get(p.node);
            folded.set(p.node, before === undefined ? value : fold === 'sum' ? before + value : Math.max(before, value));
          });
          for (const [node, value] of folded) this.set({ partition: OTHER_PARTITIONS, node }, value);
        },
      });
    };
    perPartition('shardpipe_partition_entries', 'Approximate entries per partition (last known figure; see shardpipe_partition_figures_age_seconds)', (p) => p.entries, 'sum');
    perPartition('shardpipe_partition_logical_bytes', 'Sum of key and record sizes per partition, bytes', (p) => p.logicalBytes, 'sum');
    perPartition('shardpipe_partition_disk_bytes', 'LevelDB on-disk size estimate per partition, bytes', (p) => p.diskBytes, 'sum');
    perPartition('shardpipe_partition_figures_age_seconds', 'Age of the partition figures (grows while the node is unreachable); _other: the oldest', (p) => (p.ageMs === null ? null : p.ageMs / 1000), 'max');

    // Chains: one series per replica of the first maxPartitionSeries partitions (no folding: a
    // state or a lag summed over partitions would say nothing).
    const perReplica = (name: string, help: string, pick: (r: ReplicaView) => number | null): void => {
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect(this: Gauge<'partition' | 'node'>) {
          this.reset();
          for (const p of partitions().slice(0, cap)) {
            for (const r of p.chain) {
              const value = pick(r);
              if (value !== null) this.set({ partition: String(p.id), node: r.node }, value);
            }
          }
        },
      });
    };
    new Gauge({
      name: 'shardpipe_cluster_replica_state',
      help: "1 for each replica of each partition's chain in its state (serving, syncing), as the partition map has it",
      labelNames: [...labelNames, 'state'],
      registers,
      collect(this: Gauge<'partition' | 'node' | 'state'>) {
        this.reset();
        for (const p of partitions().slice(0, cap)) for (const r of p.chain) this.set({ partition: String(p.id), node: r.node, state: r.state }, 1);
      },
    });
    new Gauge({
      name: 'shardpipe_cluster_chain_replicas',
      help: "Replicas in each partition's chain (fewer than the map's replicas: a node was dropped and no replacement has synced yet)",
      labelNames: ['partition'],
      registers,
      collect(this: Gauge<'partition'>) {
        this.reset();
        for (const p of partitions().slice(0, cap)) this.set({ partition: String(p.id) }, p.chain.length);
      },
    });
    perReplica('shardpipe_cluster_replica_lag_sequences', "Writes a replica is behind its chain's head: the head's last sequence number minus the replica's, from one poll of both (0 on the head)", (r) => r.lagSequences);
    perReplica('shardpipe_cluster_replica_unacked_writes', "Writes a replica forwarded down its chain that the tail has not acknowledged yet", (r) => r.unacked);
    perReplica('shardpipe_cluster_replica_sync_rows', 'Rows a syncing replica has copied so far in its current sync', (r) => r.sync?.rows ?? null);
    perReplica('shardpipe_cluster_replica_sync_bytes', 'Key + value bytes a syncing replica has copied so far in its current sync', (r) => r.sync?.bytes ?? null);
    perReplica('shardpipe_cluster_replica_sync_total_rows', 'Rows in the snapshot a syncing replica copies (0 until it has one)', (r) => r.sync?.totalRows ?? null);

    new Gauge({
      name: 'shardpipe_partition_series_folded',
      help: `Partitions beyond the label cap (maxPartitionSeries) summed into partition="${OTHER_PARTITIONS}"`,
      registers,
      collect(this: Gauge) {
        this.set(Math.max(0, partitions().length - cap));
      },
    });
    new Gauge({
      name: 'shardpipe_node_up',
      help: 'Whether the store node answered the last PartitionStats poll (1) or not (0)',
      labelNames: ['node'],
      registers,
      collect(this: Gauge<'node'>) {
        this.reset();
        for (const n of poller.nodeViews()) if (n.up !== null) this.set({ node: n.node }, n.up ? 1 : 0);
      },
    });
    const cluster = (name: string, help: string, pick: (c: ReturnType<PartitionPoller['cluster']>) => number | null): void => {
      new Gauge({
        name,
        help,
        registers,
        collect(this: Gauge) {
          this.reset();
          const value = pick(poller.cluster());
          if (value !== null) this.set(value);
        },
      });
    };
    cluster('shardpipe_cluster_map_version', 'Version of the partition map in use', (c) => c.mapVersion);
    cluster('shardpipe_cluster_partitions', 'Partitions in the map', (c) => c.partitions);
    cluster('shardpipe_cluster_nodes', 'Store nodes in the map', (c) => c.nodes);
    cluster('shardpipe_cluster_entries', 'Approximate entries in the cluster (last known figures)', (c) => c.entries);
    cluster('shardpipe_cluster_logical_bytes', 'Logical bytes in the cluster (last known figures)', (c) => c.logicalBytes);
    cluster('shardpipe_cluster_disk_bytes', 'On-disk bytes in the cluster (last known figures)', (c) => c.diskBytes);
    cluster('shardpipe_metrics_ready', 'Whether a poll has succeeded yet (1) or not (0)', (c) => (c.ready ? 1 : 0));

    this.pollSeconds = new Histogram({
      name: 'shardpipe_metrics_poll_duration_seconds',
      help: 'Duration of one poll (map refresh and PartitionStats of every node), by outcome: ok (a node answered) or failed',
      labelNames: ['outcome'],
      buckets: POLL_BUCKETS_SECONDS,
      registers,
    });
  }

  /** Records one poll (the poller's onPoll). */
  observePoll(result: PollResult): void {
    this.pollSeconds.observe({ outcome: result.ok ? 'ok' : 'failed' }, result.durationMs / 1000);
  }
}
