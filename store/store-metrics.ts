import { status as GrpcStatus } from '@grpc/grpc-js';
import { Counter, Histogram, type Registry } from 'prom-client';

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
