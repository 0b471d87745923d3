import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { AuthTokens } from './auth-tokens.js';
import { checkHttpRequest } from './http-auth.js';
import type { Logger } from './logger.js';
import { checkBind } from './protected-mode.js';
import { canServeTls, type TlsMaterial } from './tls-options.js';

export interface MetricsHttpServerOptions {
  /** The registry served at `/metrics`. Required. */
  registry: Registry;
  /** TCP port; 0 picks a free one. Required. */
  port: number;
  /** Bind address. Default '127.0.0.1' (pass '0.0.0.0' to be scraped from other machines). */
  host?: string;
  /** Tokens accepted for `/metrics` (role read or higher). Absent: protected mode, loopback scrapers only. */
  tokens?: AuthTokens;
  /** Serve HTTPS with `cert` + `key`; with `ca`, require client certificates signed by it. Absent: plain HTTP. */
  tls?: TlsMaterial;
  /** Without tokens, bind any address and accept any peer anyway. Default false. */
  insecure?: boolean;
  logger?: Logger;
}

/**
 * The `/metrics` endpoint of a store node or worker process: Prometheus text from one registry,
 * plus `/healthz`. Plain node:http, so every process can have one without a web framework.
 */
export class MetricsHttpServer {
  /** The bound port (useful with port 0). */
  readonly port: number;
  readonly host: string;
  private readonly server: Server;
  private readonly tls: boolean;
  private closing: Promise<void> | undefined;

  private constructor(server: Server, host: string, port: number, tls: boolean) {
    this.server = server;
    this.host = host;
    this.port = port;
    this.tls = tls;
  }

  static async start(options: MetricsHttpServerOptions): Promise<MetricsHttpServer> {
    const { registry, logger } = options;
    const host = options.host ?? '127.0.0.1';
    const auth = { tokens: options.tokens, insecure: options.insecure ?? false, what: 'this /metrics endpoint' };
    checkBind(host, { what: '/metrics endpoint', authenticated: auth.tokens !== undefined, insecure: auth.insecure, flag: '--metrics-host' });
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      const path = (req.url ?? '/').split('?')[0];
      const refusal = path === '/healthz' ? undefined : checkHttpRequest(req, 'read', auth);
      if (refusal !== undefined) {
        res.writeHead(refusal.status, { 'content-type': 'text/plain', ...refusal.headers }).end(`${refusal.message}\n`);
      } else if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
      } else if (path === '/metrics') {
        registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
          (err: unknown) => {
            logger?.error({ err }, 'collecting metrics failed');
            res.writeHead(500, { 'content-type': 'text/plain' }).end('collecting metrics failed\n');
          },
        );
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      }
    };
    const tls = options.tls;
    const server: Server = canServeTls(tls)
      ? (createTlsServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: tls.ca !== undefined, rejectUnauthorized: tls.ca !== undefined }, handler as RequestListener) as unknown as Server)
      : createServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new MetricsHttpServer(server, host, (server.address() as AddressInfo).port, canServeTls(tls));
  }

  /** `http(s)://host:port/metrics`. */
  get url(): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `${this.tls ? 'https' : 'http'}://${host}:${this.port}/metrics`;
  }

  /** Stops accepting connections and closes idle keep-alive ones. Idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve, reject) => {
      this.server.close((err) => (err ? reject(err) : resolve()));
      this.server.closeIdleConnections();
    });
    return this.closing;
  }
}
