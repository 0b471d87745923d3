import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from './logger.js';

export interface MetricsHttpServerOptions {
  /** The registry served at `/metrics`. Required. */
  registry: Registry;
  /** TCP port; 0 picks a free one. Required. */
  port: number;
  /** Bind address. Default '127.0.0.1' (pass '0.0.0.0' to be scraped from other machines). */
  host?: string;
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
  private closing: Promise<void> | undefined;

  private constructor(server: Server, host: string, port: number) {
    this.server = server;
    this.host = host;
    this.port = port;
  }

  static async start(options: MetricsHttpServerOptions): Promise<MetricsHttpServer> {
    const { registry, logger } = options;
    const host = options.host ?? '127.0.0.1';
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
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
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new MetricsHttpServer(server, host, (server.address() as AddressInfo).port);
  }

  /** `http://host:port/metrics`. */
  get url(): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `http://${host}:${this.port}/metrics`;
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
