import { Gauge, type Registry } from 'prom-client';
import { OPERATION_KINDS } from '../store/index.js';
import type { MovementPoller, MovementView } from './movement-poller.js';
import { nodeDataShares } from './movement-poller.js';
import type { PartitionPoller } from './partition-poller.js';

/**
 * Data-movement metrics of the metrics server, filled when scraped: the per-node share of data
 * (`shardpipe_node_data_bytes` / `shardpipe_node_data_share`, from the partition figures) and,
 * with etcd (`movement`), `shardpipe_operations_in_progress{kind}`, per running operation
 * `shardpipe_operation_bytes_moved` / `_bytes_total` / `_rows_moved` / `_stalled_seconds`
 * `{operation, kind}`, `shardpipe_cluster_gc_pending_bytes{node}` (data awaiting GC, as the
 * nodes report it) and `shardpipe_movement_etcd_up`. Without etcd those families are still
 * registered, with no series (dashboards and alerts find them and show "no data"), except
 * `shardpipe_movement_etcd_up`, which is left out.
 */
export function registerMovementMetrics(registry: Registry, poller: PartitionPoller, movement: MovementPoller | undefined): void {
  const registers = [registry];
  new Gauge({
    name: 'shardpipe_node_data_bytes',
    help: "Logical bytes of the replicas a node holds (each serving replica counts its partition's bytes; a syncing one what it copied so far)",
    labelNames: ['node'],
    registers,
    collect(this: Gauge<'node'>) {
      this.reset();
      for (const n of nodeDataShares(poller.partitions())) this.set({ node: n.node }, n.bytes);
    },
  });
  new Gauge({
    name: 'shardpipe_node_data_share',
    help: "A node's shardpipe_node_data_bytes ÷ their sum over all nodes (0–1): how evenly the data is spread",
    labelNames: ['node'],
    registers,
    collect(this: Gauge<'node'>) {
      this.reset();
      for (const n of nodeDataShares(poller.partitions())) this.set({ node: n.node }, n.share);
    },
  });
  const empty = { operations: [], gc: [] };
  const view = (): Pick<MovementView, 'operations' | 'gc'> => movement?.view([]) ?? empty;
  if (movement !== undefined) {
    new Gauge({
      name: 'shardpipe_movement_etcd_up',
      help: 'Whether the last read of operations and GC reports from etcd succeeded (1) or not (0); only with --etcd',
      registers,
      collect(this: Gauge) {
        this.set(movement.view([]).etcd === 'ok' ? 1 : 0);
      },
    });
  }
  new Gauge({
    name: 'shardpipe_operations_in_progress',
    help: 'Data-movement operations not finished yet (pending, running, cancelling), by kind; no series without --etcd',
    labelNames: ['kind'],
    registers,
    collect(this: Gauge<'kind'>) {
      this.reset();
      if (movement === undefined) return;
      const ops = view().operations;
      for (const kind of OPERATION_KINDS) this.set({ kind }, ops.filter((o) => o.kind === kind).length);
    },
  });
  const perOperation = (name: string, help: string, pick: (o: MovementView['operations'][number]) => number | null): void => {
    new Gauge({
      name,
      help,
      labelNames: ['operation', 'kind'],
      registers,
      collect(this: Gauge<'operation' | 'kind'>) {
        this.reset();
        for (const o of view().operations) {
          const value = pick(o);
          if (value !== null) this.set({ operation: o.id, kind: o.kind }, value);
        }
      },
    });
  };
  perOperation('shardpipe_operation_bytes_moved', "Bytes a running operation's steps have moved so far (finished steps whole)", (o) => o.bytesDone);
  perOperation('shardpipe_operation_bytes_total', "Bytes a running operation's steps move in all (steps that know their size)", (o) => o.bytesTotal);
  perOperation('shardpipe_operation_rows_moved', "Rows a running operation's steps have moved so far", (o) => o.rowsDone);
  perOperation('shardpipe_operation_stalled_seconds', "Seconds since a running operation's progress (bytes, rows, steps, phase) last changed; 0 while its steps wait for a movement slot", (o) => o.stalledSeconds);
  new Gauge({
    name: 'shardpipe_cluster_gc_pending_bytes',
    help: 'Bytes of partitions that left a node and wait for its GC, as the node reports them in etcd',
    labelNames: ['node'],
    registers,
    collect(this: Gauge<'node'>) {
      this.reset();
      const byNode = new Map<string, number>();
      for (const g of view().gc) byNode.set(g.node, (byNode.get(g.node) ?? 0) + g.bytes);
      for (const [node, bytes] of byNode) this.set({ node }, bytes);
    },
  });
}
