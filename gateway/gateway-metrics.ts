import { status } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { toGatewayError } from './gateway-errors.js';
import type { RequestLimiter } from './request-limiter.js';

/** Latency buckets of gateway calls, seconds (a point call ~1 ms, a BulkPut seconds). */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The gateway's Prometheus metrics: calls by method and final status code, their latency, and the
 * request limiter's calls in flight and waiting. One `track` per call, on both protocols; calls
 * refused for their token before they reach a method are not counted.
 */
export class GatewayMetrics {
  private readonly requests: Counter<'method' | 'code'>;
  private readonly seconds: Histogram<'method'>;

  constructor(registry: Registry, limiter: RequestLimiter) {
    this.requests = new Counter({ name: 'shardpipe_gateway_requests_total', help: 'Gateway calls finished, by method and gRPC status code name', labelNames: ['method', 'code'], registers: [registry] });
    this.seconds = new Histogram({ name: 'shardpipe_gateway_request_duration_seconds', help: 'Gateway call latency, from the call reaching its method to its final answer (streams: their whole life)', labelNames: ['method'], buckets: BUCKETS, registers: [registry] });
    new Gauge({ name: 'shardpipe_gateway_requests_in_flight', help: 'Gateway calls holding a slot of --max-in-flight', registers: [registry], collect() { this.set(limiter.inFlight); } });
    new Gauge({ name: 'shardpipe_gateway_requests_waiting', help: 'Gateway calls waiting for a slot (past --max-waiting they get RESOURCE_EXHAUSTED)', registers: [registry], collect() { this.set(limiter.waitingCount); } });
  }

  /** Counts and times one call of `method` (its name in the .proto, e.g. "Get"); passes its outcome on. */
  track<T>(method: string, call: Promise<T>): Promise<T> {
    const started = performance.now();
    return call.then(
      (value) => {
        this.done(method, 'OK', started);
        return value;
      },
      (err: unknown) => {
        this.done(method, status[toGatewayError(err).grpcStatus] ?? 'UNKNOWN', started);
        throw err;
      },
    );
  }

  private done(method: string, code: string, started: number): void {
    this.requests.inc({ method, code });
    this.seconds.observe({ method }, (performance.now() - started) / 1000);
  }
}
