import { once } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { Http2ServerRequest, Http2ServerResponse, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { ServerCredentials, type Server as GrpcServer } from '@grpc/grpc-js';
import type { Registry } from 'prom-client';
import { canServeTls, checkBind, type AuthTokens, type Logger, type TlsMaterial } from '../common/index.js';
import { StoreClient, type StoreCredentials } from '../store/index.js';
import { createConnectGatewayHandler } from './connect-gateway.js';
import { GatewayService, type GatewayServiceOptions } from './gateway-service.js';
import { createGrpcGatewayServer } from './grpc-gateway.js';
import { GatewayMetrics } from './gateway-metrics.js';
import { RequestLimiter, type RequestLimiterOptions } from './request-limiter.js';

/** Options of a gateway process. */
export interface GatewayServerOptions extends GatewayServiceOptions, RequestLimiterOptions {
  /** Store nodes to learn the partition map from (HOST:PORT). */
  seeds: readonly string[];
  /** Bind address. Default 127.0.0.1. */
  host?: string;
  /** Port; 0 = any free port. */
  port: number;
  /** Tokens callers must present (roles: read for Get/Scan*, write for Put/Delete/BulkPut). */
  tokens?: AuthTokens;
  /** Without tokens, accept non-loopback peers. */
  insecure: boolean;
  /** Serve TLS (both protocols) with this certificate and key; with `ca`, require client certificates. */
  tls?: TlsMaterial;
  /** The gateway's own token and TLS towards the store nodes. */
  storeCredentials?: StoreCredentials;
  /** Registry for the gateway's metrics (calls by method and code, latency, in flight, waiting); absent: none kept. */
  registry?: Registry;
  /** Largest request or response message, bytes. Default 8 MiB. */
  maxMessageBytes?: number;
  logger: Logger;
}

/** The first bytes of every HTTP/2 connection (RFC 9113 §3.4); no HTTP/1.1 method starts so. */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const SNIFF_BYTES = 4;

/**
 * A running gateway: one port that serves gRPC (HTTP/2, with reflection and grpc.health.v1 — by
 * grpc-js) and JSON over HTTP/1.1 (the Connect protocol — by connect-node), told apart by the HTTP/2
 * connection preface. Both sides run the same GatewayService over one thick client (one HTTP/2
 * channel per store node).
 */
export class GatewayServer {
  private closing: Promise<void> | undefined;

  private constructor(
    readonly port: number,
    readonly url: string,
    private readonly listener: NetServer,
    private readonly http: HttpServer,
    private readonly grpc: GrpcServer,
    private readonly client: StoreClient,
    private readonly sockets: Set<Socket>,
    private readonly logger: Logger,
  ) {}

  static async start(options: GatewayServerOptions): Promise<GatewayServer> {
    const host = options.host ?? '127.0.0.1';
    checkBind(host, { what: 'gateway', authenticated: options.tokens !== undefined, insecure: options.insecure, flag: '--listen' });
    const maxMessageBytes = options.maxMessageBytes ?? 8 * 1024 * 1024;
    const logger = options.logger.child({ module: 'gateway' });
    // The retry budget bounds the retries of each scan step (a stream itself runs as long as it is read).
    // Callers' requests reach the gateway spread over socket reads: gathered to the end of each I/O
    // phase, a concurrent burst goes to its node as one Multi instead of two plain calls and a Multi.
    const client = new StoreClient({ seeds: options.seeds, credentials: options.storeCredentials, logger, operationTimeoutMs: options.retryBudgetMs ?? 2000, gatherPointCalls: true });
    const service = new GatewayService(client, options);
    const limiter = new RequestLimiter(options);
    const auth = { tokens: options.tokens, insecure: options.insecure };
    const metrics = options.registry === undefined ? undefined : new GatewayMetrics(options.registry, limiter);
    const { server: grpc } = createGrpcGatewayServer(service, limiter, auth, maxMessageBytes, metrics);
    const injector = grpc.createConnectionInjector(ServerCredentials.createInsecure());
    const connectHandler = createConnectGatewayHandler(service, limiter, auth, maxMessageBytes, metrics);
    const http = createHttpServer(connectHandler);
    serveJsonOnHttp2(injectorServer(grpc), connectHandler);
    const sockets = new Set<Socket>();
    const route = (socket: Socket): void => {
      sockets.add(socket);
      // Without it Nagle holds a response's last segment until the previous one is acknowledged.
      socket.setNoDelay(true);
      socket.once('close', () => sockets.delete(socket));
      socket.on('error', (err) => logger.debug({ err, peer: socket.remoteAddress }, 'gateway connection failed'));
      sniff(socket, (h2) => {
        // An HTTP/2 session reads the bytes put back itself; the HTTP/1.1 parser needs the socket flowing again.
        if (h2) injector.injectConnection(socket);
        else {
          http.emit('connection', socket);
          socket.resume();
        }
      });
    };
    const tls = canServeTls(options.tls) ? options.tls : undefined;
    const listener: NetServer = tls
      ? createTlsServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: tls.ca !== undefined, rejectUnauthorized: tls.ca !== undefined, ALPNProtocols: ['h2', 'http/1.1'] }, route)
      : createNetServer(route);
    listener.listen(options.port, host);
    await Promise.race([once(listener, 'listening'), once(listener, 'error').then(([err]) => Promise.reject(err))]);
    const port = (listener.address() as AddressInfo).port;
    const url = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
    logger.info({ url, seeds: options.seeds, tls: tls !== undefined, authenticated: options.tokens !== undefined }, 'gateway listening');
    return new GatewayServer(port, url, listener, http, grpc, client, sockets, logger);
  }

  /** Stops taking connections, ends calls in flight (up to `graceMs`), closes the store channels. Idempotent. */
  close(graceMs = 2000): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
      this.http.closeIdleConnections();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.grpc.forceShutdown();
          resolve();
        }, graceMs);
        this.grpc.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.http.closeAllConnections();
      for (const socket of this.sockets) socket.destroy();
      await closed;
      this.client.close();
      this.logger.info('gateway closed');
    })();
    return this.closing;
  }
}

/**
 * The node HTTP/2 server behind a grpc-js connection injector: grpc-js (1.14) gives no handle to
 * it, but keeps it in its `http2Servers` map, the injector's the last one added. Fails at start,
 * not at the first call, if a grpc-js release changes that.
 */
function injectorServer(grpc: GrpcServer): Http2Server {
  const servers = (grpc as unknown as { http2Servers?: Map<Http2Server, unknown> }).http2Servers;
  const server = servers instanceof Map ? [...servers.keys()].pop() : undefined;
  if (server === undefined || typeof server.listeners !== 'function') throw new Error('this @grpc/grpc-js version keeps no http2Servers map: the gateway cannot serve JSON over HTTP/2 with it');
  return server;
}

/**
 * Makes an HTTP/2 connection carry JSON too: a stream whose content-type is gRPC goes to grpc-js's
 * own stream handlers (as before), any other to the connect-node handler through node's HTTP/2
 * compatibility request/response — what `http2.createServer(handler)` would build. So Connect JSON
 * works over h2c (prior knowledge) and TLS with ALPN h2 on the same port as gRPC.
 */
function serveJsonOnHttp2(server: Http2Server, handler: (req: Http2ServerRequest, res: Http2ServerResponse) => void): void {
  const grpcHandlers = server.listeners('stream') as Array<(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void>;
  server.removeAllListeners('stream');
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
    const type = headers['content-type'];
    if (typeof type === 'string' && type.startsWith('application/grpc') && !type.startsWith('application/grpc-web')) {
      for (const h of grpcHandlers) h.call(server, stream, headers, flags, rawHeaders);
      return;
    }
    handler(new Http2ServerRequest(stream, headers, {}, rawHeaders), new Http2ServerResponse(stream));
  });
}

/**
 * Reads the first bytes of a connection, puts them back, and says whether it opens with the HTTP/2
 * preface (gRPC) or not (HTTP/1.1: Connect JSON).
 */
function sniff(socket: Socket, decide: (h2: boolean) => void): void {
  let head: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    const n = Math.min(head.length, SNIFF_BYTES);
    if (n < SNIFF_BYTES && head.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return;
    socket.off('data', onData);
    socket.pause();
    socket.unshift(head);
    decide(head.subarray(0, SNIFF_BYTES).equals(H2_PREFACE.subarray(0, SNIFF_BYTES)));
  };
  socket.on('data', onData);
}
