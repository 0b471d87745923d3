import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { Registry } from 'prom-client';
import { canServeTls, checkBind, hostOf, type AuthTokens, type Logger, type TlsMaterial } from '../common/index.js';
import { PeerMapFetcher } from './peer-map-fetcher.js';
import { storeAuthInterceptor } from './store-auth.js';
import { STORE_SERVICE_DEFINITION, createStoreHandlers } from './store-service.js';
import { StoreRpcMetrics } from './store-metrics.js';
import { StoreNode, type StoreNodeOptions } from './store-node.js';

export interface StoreServerOptions extends StoreNodeOptions {
  /** Address to bind, HOST:PORT. Default: the node address. Port 0 picks a free port. */
  listen?: string;
  /** How long shutdown waits for in-flight calls before cancelling them. Default 10000 ms. */
  shutdownGraceMs?: number;
  /** Where RPC counts and latencies are recorded (see StoreRpcMetrics). Default: none. */
  metricsRegistry?: Registry;
  /** Tokens and roles the node accepts (`--auth-token-file`). Absent: protected mode, loopback peers only. */
  tokens?: AuthTokens;
  /** TLS: `cert` + `key` serve TLS; `ca` also requires client certificates signed by it (mutual TLS). Absent: plaintext. */
  tls?: TlsMaterial;
  /** Without tokens, bind any address and accept any peer anyway. Default false. */
  insecure?: boolean;
  logger: Logger;
}

/** Slack over the largest batch for the rest of a BulkInsert message (field tags, lengths). */
const MESSAGE_OVERHEAD_BYTES = 1024 * 1024;
export const STORE_SERVICE_NAME = 'shardpipe.store.v1.Store';

/** A running store node: the StoreNode behind a gRPC server with grpc.health.v1. */
export class StoreServer {
  readonly node: StoreNode;
  /** The bound port (useful with port 0). */
  readonly port: number;
  private readonly server: Server;
  private readonly health: HealthImplementation;
  private readonly logger: Logger;
  private readonly shutdownGraceMs: number;
  private stopping: Promise<void> | undefined;

  private constructor(node: StoreNode, server: Server, health: HealthImplementation, port: number, options: StoreServerOptions) {
    this.node = node;
    this.server = server;
    this.health = health;
    this.port = port;
    this.logger = options.logger;
    this.shutdownGraceMs = options.shutdownGraceMs ?? 10_000;
  }

  static async start(options: StoreServerOptions): Promise<StoreServer> {
    const logger = options.logger.child({ module: 'store', node: options.node });
    const listen = options.listen ?? options.node;
    checkBind(hostOf(listen), { what: 'store node', authenticated: options.tokens !== undefined, insecure: options.insecure ?? false, flag: '--listen (or --node)' });
    if (options.tls !== undefined && !canServeTls(options.tls)) throw new TypeError('StoreServer: tls needs cert and key');
    const node = await StoreNode.open({ ...options, logger });
    // A lagging node fetches a newer map from a peer with the node's own credentials.
    const mapFetcher = new PeerMapFetcher(node, { token: options.tokens?.peerToken, tls: options.tls }, logger);
    const server = new Server({
      'grpc.max_receive_message_length': node.maxBatchBytes + MESSAGE_OVERHEAD_BYTES,
      'grpc.max_send_message_length': -1,
      interceptors: [storeAuthInterceptor({ tokens: options.tokens, insecure: options.insecure ?? false, mapFetcher, logger })],
    });
    server.addService(STORE_SERVICE_DEFINITION, createStoreHandlers(node, logger, options.metricsRegistry && new StoreRpcMetrics(options.metricsRegistry)));
    const health = new HealthImplementation({ '': 'SERVING', [STORE_SERVICE_NAME]: 'SERVING' });
    health.addToServer(server);
    let port: number;
    try {
      port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(listen, serverCredentials(options.tls), (err, p) => (err ? reject(err) : resolve(p))),
      );
    } catch (err) {
      await node.close();
      throw err;
    }
    logger.info({ port, tls: options.tls !== undefined, mutualTls: options.tls?.ca !== undefined, tokens: options.tokens !== undefined, mapVersion: node.map.version, partitions: node.ownedPartitions().map((p) => p.id) }, 'store node serving');
    return new StoreServer(node, server, health, port, options);
  }

  /**
   * Graceful stop: reports NOT_SERVING, answers new calls with UNAVAILABLE, lets in-flight calls
   * finish (up to the grace period), then closes the databases. Idempotent.
   */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info('store node draining');
      this.health.setStatus('', 'NOT_SERVING');
      this.health.setStatus(STORE_SERVICE_NAME, 'NOT_SERVING');
      this.node.startDraining();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.logger.warn({ graceMs: this.shutdownGraceMs }, 'in-flight calls outlived the grace period; cancelling them');
          this.server.forceShutdown();
          resolve();
        }, this.shutdownGraceMs);
        this.server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await this.node.close();
      this.logger.info('store node stopped');
    })();
    return this.stopping;
  }
}

function serverCredentials(tls: TlsMaterial | undefined): ServerCredentials {
  if (!canServeTls(tls)) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(tls.ca ?? null, [{ private_key: tls.key, cert_chain: tls.cert }], tls.ca !== undefined);
}
