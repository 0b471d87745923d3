import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { Code, ConnectError, type ServiceImpl } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { checkGatewayCall, type GatewayAuthOptions } from './gateway-auth.js';
import { toGatewayError, type GatewayError } from './gateway-errors.js';
import type { GatewayMetrics } from './gateway-metrics.js';
import type { GatewayService } from './gateway-service.js';
import type { RequestLimiter } from './request-limiter.js';
import { Gateway } from './proto/gen/shardpipe/gateway/v1/gateway_pb.js';

/** Connect's names of the status codes, as its JSON error bodies carry them. */
const CODE_NAMES: Record<number, string> = {
  [Code.Unauthenticated]: 'unauthenticated',
  [Code.PermissionDenied]: 'permission_denied',
};

/**
 * A node HTTP handler serving the Gateway service with connect-node: the Connect protocol (JSON or
 * binary, unary as a plain POST), gRPC-Web and gRPC. Calls are checked for a token (or a loopback
 * peer) before connect-node sees them.
 */
export function createConnectGatewayHandler(service: GatewayService, limiter: RequestLimiter, auth: GatewayAuthOptions, maxMessageBytes: number, metrics?: GatewayMetrics): (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void {
  const track = metrics === undefined ? <T>(_method: string, call: Promise<T>): Promise<T> => call : <T>(method: string, call: Promise<T>): Promise<T> => metrics.track(method, call);
  const run = <T>(method: string, fn: () => Promise<T>): Promise<T> => track(method, limiter.run(fn)).catch((err: unknown) => Promise.reject(toConnectError(err)));
  async function* stream<T>(method: string, source: () => AsyncGenerator<T>): AsyncGenerator<T> {
    // The stream's outcome, settled when it ends, for the metrics.
    let settle: { ok: () => void; fail: (err: unknown) => void } = { ok: () => undefined, fail: () => undefined };
    void track(method, new Promise<void>((ok, fail) => (settle = { ok, fail }))).catch(() => undefined);
    try {
      await limiter.acquire();
    } catch (err) {
      settle.fail(err);
      throw toConnectError(err);
    }
    try {
      yield* source();
      settle.ok();
    } catch (err) {
      settle.fail(err);
      throw toConnectError(err);
    } finally {
      settle.ok();
      limiter.release();
    }
  }
  const impl: ServiceImpl<typeof Gateway> = {
    get: (req, ctx) => run('Get', () => service.get(req, ctx.signal)),
    put: (req, ctx) => run('Put', () => service.put(req, ctx.signal)),
    delete: (req, ctx) => run('Delete', () => service.delete(req, ctx.signal)),
    patch: (req, ctx) => run('Patch', () => service.patch(req, ctx.signal)),
    scanPage: (req, ctx) => run('ScanPage', () => service.scanPage(req, ctx.signal)),
    scan: (req, ctx) => stream('Scan', () => service.scan(req, ctx.signal)),
    scanAll: (req, ctx) => stream('ScanAll', () => service.scanAll(req, ctx.signal)),
    bulkPut: (reqs, ctx) => run('BulkPut', () => service.bulkPut(reqs, ctx.signal)),
  };
  const handler = connectNodeAdapter({ routes: (router) => router.service(Gateway, impl), readMaxBytes: maxMessageBytes, writeMaxBytes: maxMessageBytes });
  return (req, res) => {
    const method = (req.url ?? '').split('?')[0]!.split('/').pop() ?? '';
    const header = req.headers.authorization;
    const refusal = checkGatewayCall(method, typeof header === 'string' ? header : undefined, req.socket.remoteAddress, auth);
    if (refusal === undefined) return handler(req, res);
    // The Connect protocol's error body, so Connect clients read it as a typed error.
    const http = (refusal.grpcStatus as number) === Code.Unauthenticated ? 401 : 403;
    res.writeHead(http, { 'content-type': 'application/json', ...refusal.metadata });
    res.end(JSON.stringify({ code: CODE_NAMES[refusal.grpcStatus as number], message: refusal.message }));
  };
}

function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const e: GatewayError = toGatewayError(err);
  // Connect's codes are gRPC's numbers.
  return new ConnectError(e.message.slice(0, 2000), e.grpcStatus as number as Code, e.metadata);
}
