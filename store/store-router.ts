import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../common/index.js';
import { METADATA_CALLER_MAP_VERSION, METADATA_MAP_FROM } from './grpc-errors.js';
import { MapCache } from './map-cache.js';
import { NodeConnection, type CallLimits, type StoreCredentials } from './node-connection.js';
import { readNodeOf, type Partition, type PartitionMap } from './partition-map.js';
import { StoreError } from './store-errors.js';

/** Options of the routing core (and of the StoreClient over it). Times in milliseconds. */
export interface StoreRouterOptions {
  /** Addresses (HOST:PORT) of nodes to fetch the partition map from. At least one. */
  seeds: readonly string[];
  /** Deadline of one RPC attempt. Default 10000. */
  rpcDeadlineMs?: number;
  /** Budget of a whole operation including retries and map refreshes. Default 30000. */
  operationTimeoutMs?: number;
  /** First retry delay; doubles per attempt, with full jitter. Default 50. */
  retryBaseMs?: number;
  /** Cap of one retry delay. Default 2000. */
  retryMaxMs?: number;
  /** Token and TLS for every node (see StoreCredentials). Default: plaintext, no token. */
  credentials?: StoreCredentials;
  /**
   * Get/Put/Delete calls in flight per node before concurrent ones are merged into one Multi call
   * (1–64). A request that finds fewer in flight goes at once as its plain call. Default 2.
   */
  pointCallsInFlight?: number;
  /**
   * Hold each Get/Put/Delete until the end of the event loop's current I/O phase, so that requests
   * arriving in the same socket reads go in one Multi call: for a server fronting many callers (the
   * gateway). A lone request still goes as its plain call, one loop turn later. Default false.
   */
  gatherPointCalls?: boolean;
  /**
   * Send untraced Get/Put/Delete as messages of one long-lived MultiStream per node (reads and
   * writes each on their own) instead of a call per op or batch: a message costs client and node a
   * fraction of a unary call. A node that predates MultiStream gets calls. Default true.
   */
  pointStreams?: boolean;
  logger?: Logger;
}

/** Options every call takes. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Overrides the client's operation budget for this call. */
  timeoutMs?: number;
}

/** Where one failed attempt of an operation stood. */
export interface FailedAttempt {
  /** The map the attempt routed by (undefined: none could be had). */
  map: PartitionMap | undefined;
  /** The node asked ('seeds' while the map was being fetched). */
  node: string;
  /** Attempts before this one. */
  tries: number;
  /** The operation's absolute deadline (Date.now() based). */
  deadline: number;
}

/** Where to continue an operation after a failed attempt. */
type Recovery = 'retry-now' | 'retry-after-backoff' | 'fail';

/**
 * The routing core of the thick client: one channel per node, the partition map cache, and calls
 * routed to the owner of a key that refresh the map on FAILED_PRECONDITION, bring lagging nodes up
 * to date, and retry UNAVAILABLE (node down, partition recovering from a write fault) and
 * STORE_OVERLOADED (after the node's retry hint) with backoff and jitter within the operation's
 * deadline budget. StoreClient and the bulk writer compose it.
 */
export class StoreRouter {
  readonly rpcDeadlineMs: number;
  private readonly operationTimeoutMs: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  readonly logger: Logger | undefined;
  private readonly credentials: StoreCredentials;
  private readonly pointCallsInFlight: number | undefined;
  private readonly gatherPointCalls: boolean;
  private readonly pointStreams: boolean;
  private readonly connections = new Map<string, NodeConnection>();
  private readonly maps: MapCache;
  private closed = false;

  constructor(options: StoreRouterOptions) {
    if (options.seeds.length === 0) throw new TypeError('StoreClient needs at least one seed node (HOST:PORT)');
    this.rpcDeadlineMs = options.rpcDeadlineMs ?? 10_000;
    this.operationTimeoutMs = options.operationTimeoutMs ?? 30_000;
    this.retryBaseMs = options.retryBaseMs ?? 50;
    this.retryMaxMs = options.retryMaxMs ?? 2000;
    this.logger = options.logger;
    this.credentials = { ...options.credentials };
    const inFlight = options.pointCallsInFlight;
    if (inFlight !== undefined && (!Number.isSafeInteger(inFlight) || inFlight < 1 || inFlight > 64)) throw new RangeError(`pointCallsInFlight must be 1–64, got ${inFlight}`);
    this.pointCallsInFlight = inFlight;
    this.gatherPointCalls = options.gatherPointCalls ?? false;
    this.pointStreams = options.pointStreams ?? true;
    this.maps = new MapCache({ seeds: options.seeds, logger: options.logger, ask: (address, limits) => this.connection(address).unary('getPartitionMap', {}, limits) });
  }

  /** The map in use, fetching it first if needed. */
  map(options: CallOptions = {}): Promise<PartitionMap> {
    return this.maps.get(this.fetchLimits(options));
  }

  /** Fetches the newest map any reachable node has: seeds first, then nodes of the known map. */
  refreshMap(options: CallOptions = {}): Promise<PartitionMap> {
    return this.maps.refresh(this.fetchLimits(options));
  }

  /** Routes by `map` from now on when it is newer than the map in use (or `force`); `source` has it installed. */
  adoptMap(map: PartitionMap, source: string | undefined, force = false): void {
    this.maps.adopt(map, source, force);
  }

  /** The channel to `address`, created once and reused. */
  connection(address: string): NodeConnection {
    if (this.closed) throw new StoreError('STORE_CLOSED', 'the store client is closed');
    let conn = this.connections.get(address);
    if (!conn) {
      conn = new NodeConnection(address, this.credentials, { pointCallsInFlight: this.pointCallsInFlight, gatherPointCalls: this.gatherPointCalls, pointStreams: this.pointStreams });
      this.connections.set(address, conn);
    }
    return conn;
  }

  /** The absolute deadline of an operation starting now (its budget: `timeoutMs` or the router's). */
  deadline(options: CallOptions): number {
    return Date.now() + (options.timeoutMs ?? this.operationTimeoutMs);
  }

  /** Limits of one RPC attempt: the operation's deadline, cut to one RPC deadline. */
  limits(deadline: number, options: CallOptions): CallLimits {
    return { deadline: Math.min(deadline, Date.now() + this.rpcDeadlineMs), signal: options.signal };
  }

  /**
   * Runs `attempt` against the owner of `key` under the current map (its chain's head for a
   * write, its tail for a read), recovering from stale maps,
   * nodes behind on the map, and unavailable nodes until the operation's deadline.
   */
  async routed<T>(
    key: Buffer,
    options: CallOptions,
    attempt: (conn: NodeConnection, mapVersion: number, limits: CallLimits, partition: Partition) => Promise<T>,
    access: 'read' | 'write' = 'write',
  ): Promise<T> {
    const deadline = this.deadline(options);
    for (let tries = 0; ; tries++) {
      let map: PartitionMap | undefined;
      let node = 'seeds';
      try {
        // The cached map without a promise turn: this runs once per point operation.
        map = this.maps.current ?? (await this.map(options));
        const partition = map.lookup(key);
        // Writes go to the chain's head, reads to its tail: a read sees only what every replica has.
        node = access === 'write' ? partition.node : readNodeOf(partition);
        return await attempt(this.connection(node), map.version, this.limits(deadline, options), partition);
      } catch (err) {
        await this.afterFailure(toStoreError(err), { map, node, tries, deadline }, options);
      }
    }
  }

  /**
   * Decides after a failed attempt of an operation that routes by itself (a resumable scan):
   * rethrows when final or out of budget, otherwise recovers and waits as needed.
   */
  async afterFailure(error: StoreError, attempt: FailedAttempt, options: CallOptions): Promise<void> {
    const { map, node, tries, deadline } = attempt;
    const recovery = await this.recover(error, map, node, options);
    if (recovery === 'fail' || options.signal?.aborted) throw error;
    if (Date.now() >= deadline) throw givingUp(error, node, tries + 1);
    if (recovery === 'retry-after-backoff') {
      const backoff = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.min(tries, 16)) * Math.random();
      // An overloaded node says when it expects room; spread the callers around that time.
      const delay = error.retryAfterMs === undefined ? backoff : Math.max(backoff, error.retryAfterMs * (0.5 + Math.random()));
      this.logger?.debug({ node, code: error.code, delayMs: Math.round(delay) }, 'retrying store call');
      await sleep(Math.min(delay, Math.max(0, deadline - Date.now())), undefined, { signal: options.signal });
    }
  }

  /** Closes every channel. Idempotent. */
  close(): void {
    this.closed = true;
    for (const conn of this.connections.values()) conn.close();
    this.connections.clear();
  }

  /** Limits of one round of map fetches: one RPC deadline at most. */
  private fetchLimits(options: CallOptions): CallLimits {
    return { deadline: Math.min(this.deadline(options), Date.now() + this.rpcDeadlineMs), signal: options.signal };
  }

  private async recover(error: StoreError, map: PartitionMap | undefined, node: string, options: CallOptions): Promise<Recovery> {
    switch (error.code) {
      case 'STORE_STALE_MAP':
      case 'STORE_NOT_OWNER':
      // A fenced node serves again once it has etcd's map, which may have moved the key elsewhere.
      case 'STORE_FENCED': {
        // The node knows a newer map (or the key moved): take the newest map around.
        await this.refreshMap(options).catch(() => undefined);
        const current = this.maps.current;
        return current && map && current.version > map.version ? 'retry-now' : 'retry-after-backoff';
      }
      case 'STORE_NODE_MAP_BEHIND':
        return map === undefined ? 'retry-after-backoff' : this.healLaggingNode(node, map, options);
      case 'STORE_UNAVAILABLE':
      case 'STORE_DEADLINE_EXCEEDED': {
        // In a chain a dead node is replaced by a new map (its successor heads, its predecessor
        // tails): look for one from the other replicas before waiting.
        if (map === undefined || map.replicas < 2) return 'retry-after-backoff';
        await this.refreshMap(options).catch(() => undefined);
        const current = this.maps.current;
        return current && current.version > map.version ? 'retry-now' : 'retry-after-backoff';
      }
      case 'STORE_PARTITION_UNAVAILABLE':
      case 'STORE_OVERLOADED':
        return 'retry-after-backoff';
      default:
        return 'fail';
    }
  }

  /**
   * A node missed a map install: name a node of the map that has our map, and the node fetches it
   * from there itself, so a data client needs no admin role to heal it.
   */
  private async healLaggingNode(node: string, map: PartitionMap, options: CallOptions): Promise<Recovery> {
    const others = map.nodes().filter((n) => n !== node);
    const known = this.maps.source;
    const source = known !== undefined && others.includes(known) ? known : others[0];
    if (source === undefined) return 'retry-after-backoff';
    const headers = { [METADATA_MAP_FROM]: source, [METADATA_CALLER_MAP_VERSION]: String(map.version) };
    const theirs = await this.connection(node)
      .unary('getPartitionMap', {}, this.limits(Date.now() + this.rpcDeadlineMs, options), headers)
      .catch((err: unknown) => this.logger?.warn({ err, node, source }, 'could not bring a node up to the current map'));
    return theirs !== undefined && theirs.version >= map.version ? 'retry-now' : 'retry-after-backoff';
  }
}

/**
 * The error for an operation whose retry budget ran out. A last attempt cut short by the budget
 * says DEADLINE_EXCEEDED even when the node was simply down; both say which node and how often.
 */
function givingUp(error: StoreError, node: string, attempts: number): StoreError {
  if (!error.retryable) return error;
  const code = error.code === 'STORE_DEADLINE_EXCEEDED' ? 'STORE_UNAVAILABLE' : error.code;
  return new StoreError(code, `store node ${node} did not complete the call after ${attempts} attempt(s): ${error.message}`, {
    cause: error,
    context: { node, attempts },
    mapVersion: error.mapVersion,
  });
}

/** Any failure as a StoreError (non-StoreErrors as STORE_UNKNOWN). */
export function toStoreError(err: unknown): StoreError {
  return err instanceof StoreError ? err : new StoreError('STORE_UNKNOWN', String(err), { cause: err });
}
