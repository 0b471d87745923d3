import { Server, ServerCredentials } from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { HealthImplementation } from 'grpc-health-check';
import type { Registry } from 'prom-client';
import { DEFAULT_MAX_INFLIGHT_BYTES, canServeTls, checkBind, hostOf, type AuthTokens, type Logger, type TlsMaterial } from '../common/index.js';
import { BULK_ROWS_COPIES_HELD, REQUEST_COPIES_HELD, createBudgetInterceptor } from './budget-interceptor.js';
import { DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES, FLOW_CONTROL_WINDOW_OPTION, checkFlowControlWindow, setServerConnectionWindow, setServerStreamWindow } from './http2-window.js';
import { InflightBudget } from './inflight-budget.js';
import { MAX_RESPONSE_MESSAGE_BYTES } from './message-limits.js';
import { PeerMapFetcher } from './peer-map-fetcher.js';
import { storeAuthInterceptor } from './store-auth.js';
import { STORE_SERVICE_DEFINITION, createStoreHandlers } from './store-service.js';
import { StoreNodeMetrics, StoreRpcMetrics } from './store-metrics.js';
import { StoreNode, type StoreNodeOptions } from './store-node.js';
import { ChainForwarder } from './chain-forwarder.js';
import type { ForwardTransport } from './chain-replica.js';
import { StoreError } from './store-errors.js';
import { OperationService } from './operation-service.js';
import { MultiStreams } from './multi-stream.js';
import type { OperationAdmin } from './operation-admin.js';

export interface StoreServerOptions extends StoreNodeOptions {
  /** Address to bind, HOST:PORT. Default: the node address. Port 0 picks a free port. */
  listen?: string;
  /** How long shutdown waits for in-flight calls before cancelling them. Default 10000 ms. */
  shutdownGraceMs?: number;
  /** Where RPC counts and latencies are recorded (see StoreRpcMetrics). Default: none. */
  metricsRegistry?: Registry;
  /**
   * Request bytes the node holds at once, over all calls; a call beyond it waits up to
   * `inflightWaitMs` for room, then gets RESOURCE_EXHAUSTED / STORE_OVERLOADED with a retry hint.
   * A request counts twice its size (the received message and its decoded copy are both held).
   * At least twice the largest request (2 × (`maxBatchBytes` + 1 MiB)). Default 256 MiB.
   */
  maxInflightBytes?: number;
  /** Longest a call waits for room in the in-flight budget (never past its deadline). Default 2000 ms. */
  inflightWaitMs?: number;
  /**
   * HTTP/2 flow-control window the node advertises, per stream and per connection: how many bytes
   * a client may send before the node's WINDOW_UPDATE comes back. 65,535 – 2^31 − 1. Default
   * 64 KiB (DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES says why).
   */
  flowControlWindowBytes?: number;
  /** Tokens and roles the node accepts (`--auth-token-file`). Absent: protected mode, loopback peers only. */
  tokens?: AuthTokens;
  /** TLS: `cert` + `key` serve TLS; `ca` also requires client certificates signed by it (mutual TLS). Absent: plaintext. */
  tls?: TlsMaterial;
  /** Without tokens, bind any address and accept any peer anyway. Default false. */
  insecure?: boolean;
  /**
   * Fault injection for tests only: serve the Store service without Multi, so calls to it get
   * UNIMPLEMENTED as from a node that predates it. Default false.
   */
  faultInjectionWithoutMulti?: boolean;
  /** Fault injection for tests only: while a file exists at this path, no chain forward is sent (each waits for a chain change). */
  faultInjectionHoldForwardsFile?: string;
  /** Serves the operation RPCs (SubmitOperation & co.) through this etcd connection; absent (a static map): they answer STORE_OPERATIONS_NEED_ETCD. */
  operations?: OperationAdmin;
  logger: Logger;
}

/** Slack over the largest batch for the rest of a BulkInsert message (field tags, lengths). */
const MESSAGE_OVERHEAD_BYTES = 1024 * 1024;
/** Room a call other than BulkInsert/Put takes while its request is read: they carry keys and ids only. */
const SMALL_REQUEST_BYTES = 64 * 1024;
export { DEFAULT_MAX_INFLIGHT_BYTES };
/**
 * Methods the budget admits by their message's announced length: their sizes range from bytes to
 * the receive limit (Put and Patch: a 100-byte value or a 4 MiB one; charged at the largest, a few
 * dozen small Puts from a plain client filled the whole budget).
 */
const SIZED_METHODS: ReadonlySet<string> = new Set(['BulkInsert', 'Multi', 'Put', 'Patch']);
export const STORE_SERVICE_NAME = 'shardpipe.store.v1.Store';

/**
 * The grpc.health.v1 service name of one partition: SERVING while it takes writes and this node
 * answers clients for it (head or tail of its chain, not fenced), NOT_SERVING while it recovers from
 * a write fault or the node only forwards, syncs or is fenced, UNKNOWN once the map moved it elsewhere.
 */
export function partitionHealthService(partitionId: number): string {
  return `${STORE_SERVICE_NAME}/partition-${partitionId}`;
}

/** A running store node: the StoreNode behind a gRPC server with grpc.health.v1. */
export class StoreServer {
  readonly node: StoreNode;
  /** The bound port (useful with port 0). */
  readonly port: number;
  private readonly server: Server;
  private readonly health: HealthImplementation;
  private readonly logger: Logger;
  private readonly shutdownGraceMs: number;
  private readonly nodeMetrics: StoreNodeMetrics | undefined;
  private stopping: Promise<void> | undefined;

  private constructor(
    node: StoreNode,
    server: Server,
    health: HealthImplementation,
    port: number,
    nodeMetrics: StoreNodeMetrics | undefined,
    options: StoreServerOptions,
    private readonly forwarder: ChainForwarder,
    private readonly streams: MultiStreams,
  ) {
    this.node = node;
    this.server = server;
    this.health = health;
    this.port = port;
    this.nodeMetrics = nodeMetrics;
    this.logger = options.logger;
    this.shutdownGraceMs = options.shutdownGraceMs ?? 10_000;
  }

  static async start(options: StoreServerOptions): Promise<StoreServer> {
    const logger = options.logger.child({ module: 'store', node: options.node });
    const listen = options.listen ?? options.node;
    checkBind(hostOf(listen), { what: 'store node', authenticated: options.tokens !== undefined, insecure: options.insecure ?? false, flag: '--listen (or --node)' });
    if (options.tls !== undefined && !canServeTls(options.tls)) throw new TypeError('StoreServer: tls needs cert and key');
    // Loaded here, not by every process that imports the store (clients never serve health).
    const { HealthImplementation: Health } = createRequire(import.meta.url)('grpc-health-check') as typeof import('grpc-health-check');
    const health = new Health({ '': 'SERVING', [STORE_SERVICE_NAME]: 'SERVING' });
    const known = new Set<number>();
    let node: StoreNode | undefined;
    const reportHealth = (): void => {
      if (node === undefined || node.isDraining) return;
      const partitions = node.partitionHealth();
      for (const id of known) if (!partitions.some((p) => p.partitionId === id)) health.setStatus(partitionHealthService(id), 'UNKNOWN');
      known.clear();
      for (const p of partitions) {
        known.add(p.partitionId);
        // A middle or syncing replica (and every replica of a fenced node) answers no client call.
        health.setStatus(partitionHealthService(p.partitionId), p.serving && p.servesClients ? 'SERVING' : 'NOT_SERVING');
      }
      // The node as a whole serves only while it is not fenced and every partition it holds takes writes.
      const overall = !node.isFenced && partitions.every((p) => p.serving) ? 'SERVING' : 'NOT_SERVING';
      health.setStatus('', overall);
      health.setStatus(STORE_SERVICE_NAME, overall);
    };
    // Chain forwards go out with the node's replica token, over the node's TLS settings.
    const forwarder = new ChainForwarder({ token: options.tokens?.replicaToken, tls: options.tls });
    try {
      const transport = options.transport ?? forwarder;
      const held = options.faultInjectionHoldForwardsFile;
      node = await StoreNode.open({ ...options, logger, onHealthChange: reportHealth, transport: held === undefined ? transport : holdingForwards(transport, held, logger) });
    } catch (err) {
      forwarder.close();
      throw err;
    }
    const opened = node;
    let nodeMetrics: StoreNodeMetrics | undefined;
    let server: Server;
    let streams: MultiStreams;
    try {
      const receiveLimit = opened.maxBatchBytes + MESSAGE_OVERHEAD_BYTES;
      const largestEntry = opened.maxKeyBytes + opened.maxValueBytes + MESSAGE_OVERHEAD_BYTES;
      if (Math.max(largestEntry, opened.scanBatchMaxBytes + MESSAGE_OVERHEAD_BYTES) > MAX_RESPONSE_MESSAGE_BYTES) {
        throw new RangeError(`maxKeyBytes + maxValueBytes and scanBatchMaxBytes must stay below ${MAX_RESPONSE_MESSAGE_BYTES - MESSAGE_OVERHEAD_BYTES} bytes: clients accept responses of up to ${MAX_RESPONSE_MESSAGE_BYTES} bytes`);
      }
      const maxInflightBytes = options.maxInflightBytes ?? DEFAULT_MAX_INFLIGHT_BYTES;
      if (!Number.isSafeInteger(maxInflightBytes) || maxInflightBytes < REQUEST_COPIES_HELD * receiveLimit) {
        throw new RangeError(`maxInflightBytes must be a whole number ≥ twice the largest request (2 × (maxBatchBytes + 1 MiB) = ${REQUEST_COPIES_HELD * receiveLimit}), got ${maxInflightBytes}`);
      }
      const windowBytes = checkFlowControlWindow(options.flowControlWindowBytes ?? DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES);
      // Waiters hold what their unread streams buffer; leaving the largest lease free of them means
      // the first waiter always fits once the admitted calls are done.
      const largestLease = Math.min(maxInflightBytes, BULK_ROWS_COPIES_HELD * receiveLimit);
      const budget = new InflightBudget({ limitBytes: maxInflightBytes, maxWaitMs: options.inflightWaitMs ?? 2000, waitRoomBytes: maxInflightBytes - largestLease });
      streams = new MultiStreams({ budget });
      nodeMetrics =
        options.metricsRegistry &&
        new StoreNodeMetrics(options.metricsRegistry, {
          node: opened.address,
          partitions: () => opened.partitionHealth(),
          inflightBytes: () => budget.usedBytes,
          waitingBytes: () => budget.waitingBytes,
          dataDir: options.dataDir,
          replicas: () => opened.replicaStates(),
          gc: () => opened.gcFigures(),
          syncCopied: () => opened.syncCopied,
        });
      const pauseMetrics = nodeMetrics;
      if (pauseMetrics) opened.writePause.onRelease((r) => pauseMetrics.writePause(r.ms / 1000));
      const reserveBytes = (method: string): number => {
        // A Multi may carry many puts: as large as any request the node takes.
        // A forward's bytes were admitted by its head's budget, and each replica holds at most
        // maxUnacked of them: queueing it here behind the node's own head writes (which wait for
        // forwards elsewhere) could make two nodes wait on each other until both time out.
        if (method === 'Forward') return 0;
        // A MultiStream lives as long as its client: each of its requests holds its own bytes of the budget (store/multi-stream.ts).
        if (method === 'MultiStream') return 0;
        if (method === 'BulkInsert' || method === 'Multi') return receiveLimit;
        if (method === 'Put' || method === 'Patch') return opened.maxKeyBytes + opened.maxValueBytes + SMALL_REQUEST_BYTES;
        return SMALL_REQUEST_BYTES;
      };
      // A lagging node fetches a newer map from a peer with the node's own credentials.
      const mapFetcher = new PeerMapFetcher(opened, { token: options.tokens?.peerToken, tls: options.tls }, logger);
      server = new Server({
        'grpc.max_receive_message_length': receiveLimit,
        'grpc.max_send_message_length': MAX_RESPONSE_MESSAGE_BYTES,
        [FLOW_CONTROL_WINDOW_OPTION]: windowBytes,
        // Authentication first: an unauthenticated call must not reserve room in the budget.
        interceptors: [
          storeAuthInterceptor({ tokens: options.tokens, insecure: options.insecure ?? false, mapFetcher, logger }),
          createBudgetInterceptor({ budget, servicePrefix: `/${STORE_SERVICE_NAME}/`, reserveBytes, sizedMethods: SIZED_METHODS, streamWindowBytes: windowBytes, logger, onRefused: (method) => nodeMetrics?.refused(method) }),
        ],
      });
      setServerStreamWindow(server, windowBytes, logger);
    } catch (err) {
      nodeMetrics?.close();
      await opened.close();
      forwarder.close();
      throw err;
    }
    const handlers = createStoreHandlers(opened, logger, options.metricsRegistry && new StoreRpcMetrics(options.metricsRegistry), new OperationService(options.operations, options.node), streams);
    if (options.faultInjectionWithoutMulti) {
      logger.warn('fault injection: serving the Store service without Multi');
      // A node older than Multi has no MultiStream either.
      const { multi: _definition, multiStream: _streamDefinition, ...withoutMulti } = STORE_SERVICE_DEFINITION;
      const { multi: _handler, multiStream: _streamHandler, ...handlersWithoutMulti } = handlers;
      server.addService(withoutMulti, handlersWithoutMulti);
    } else {
      server.addService(STORE_SERVICE_DEFINITION, handlers);
    }
    reportHealth();
    health.addToServer(server);
    let port: number;
    try {
      port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(listen, serverCredentials(options.tls), (err, p) => (err ? reject(err) : resolve(p))),
      );
    } catch (err) {
      nodeMetrics?.close();
      await opened.close();
      forwarder.close();
      throw err;
    }
    setServerConnectionWindow(server, options.flowControlWindowBytes ?? DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES, logger);
    logger.info({ port, tls: options.tls !== undefined, mutualTls: options.tls?.ca !== undefined, tokens: options.tokens !== undefined, mapVersion: opened.map.version, partitions: opened.ownedPartitions().map((p) => p.id), maxInflightBytes: options.maxInflightBytes ?? DEFAULT_MAX_INFLIGHT_BYTES }, 'store node serving');
    return new StoreServer(opened, server, health, port, nodeMetrics, options, forwarder, streams);
  }

  /**
   * Graceful stop: reports NOT_SERVING, answers new calls with UNAVAILABLE, lets in-flight calls
   * finish (up to the grace period), then closes the databases. Idempotent.
   */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info('store node draining');
      this.node.startDraining();
      // Clients keep their MultiStreams open: end them once answered, or the stop waits out its grace period.
      this.streams.endAll();
      this.health.setStatus('', 'NOT_SERVING');
      this.health.setStatus(STORE_SERVICE_NAME, 'NOT_SERVING');
      for (const p of this.node.partitionHealth()) this.health.setStatus(partitionHealthService(p.partitionId), 'NOT_SERVING');
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
      this.nodeMetrics?.close();
      await this.node.close();
      this.forwarder.close();
      this.logger.info('store node stopped');
    })();
    return this.stopping;
  }
}

function serverCredentials(tls: TlsMaterial | undefined): ServerCredentials {
  if (!canServeTls(tls)) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(tls.ca ?? null, [{ private_key: tls.key, cert_chain: tls.cert }], tls.ca !== undefined);
}

/**
 * Fault injection: a transport that, while `file` exists, sends nothing and waits for the chain to
 * change (the send's signal) — a head then holds applied writes it never forwarded.
 */
function holdingForwards(transport: ForwardTransport, file: string, logger: Logger): ForwardTransport {
  return {
    send: async (node, messages, options) => {
      if (!existsSync(file)) return transport.send(node, messages, options);
      logger.warn({ successor: node, partition: messages[0]?.partitionId, seq: messages[0]?.seq, writes: messages.length }, 'fault injection: holding a forward (SHARDPIPE_FAULT_INJECTION_HOLD_FORWARDS)');
      await new Promise<void>((resolve) => (options.signal.aborted ? resolve() : options.signal.addEventListener('abort', () => resolve(), { once: true })));
      throw new StoreError('STORE_UNAVAILABLE', `fault injection: forward to ${node} held`);
    },
  };
}
