import { StoreError, displayBytes, planShards, type PartitionSize, type ShardRange, type ShardTarget, type StoreClient } from '../store/index.js';
import { MetricsError } from './metrics-errors.js';
import type { PartitionPoller } from './partition-poller.js';

/** One shard of a plan, keys as hex ("" = open end) and for people. */
export interface ShardView {
  index: number;
  start: string;
  end: string;
  startDisplay: string;
  endDisplay: string;
  /** Ids of the partitions the shard overlaps. */
  partitions: number[];
  approxRows: number;
  approxBytes: number;
}

/** The answer of /api/shards. */
export interface ShardPlanView {
  target: ShardTarget;
  mapVersion: number;
  /** Age of the oldest partition figure the plan is based on. */
  oldestFigureAgeMs: number;
  /** Partitions planned from last known figures because their node did not answer the last poll. */
  stalePartitions: number[];
  shards: ShardView[];
}

/**
 * Shard plans from the poller's cached partition sizes (rows = approximate entries, bytes =
 * logical bytes): `planShards` from store/, which asks the owning node for split keys of a
 * partition larger than the target.
 */
export class ShardPlanner {
  private readonly poller: PartitionPoller;
  private readonly client: StoreClient;
  private readonly maxShards: number | undefined;

  /** `maxShards`: most shards in one plan (default: planShards' DEFAULT_MAX_PLAN_SHARDS). */
  constructor(options: { poller: PartitionPoller; client: StoreClient; maxShards?: number }) {
    this.poller = options.poller;
    this.client = options.client;
    this.maxShards = options.maxShards;
  }

  async plan(target: ShardTarget, options: { signal?: AbortSignal } = {}): Promise<ShardPlanView> {
    const map = this.poller.currentMap();
    if (!map) throw new MetricsError('METRICS_NOT_READY', 'no partition map yet: no store node has answered; try again after the first poll');
    const views = this.poller.partitions();
    const unknown = views.filter((p) => p.entries === null);
    if (unknown.length > 0) {
      const names = unknown.slice(0, 5).map((p) => `${p.id} on ${p.node}`).join(', ');
      throw new MetricsError('METRICS_NOT_READY', `no size known yet for partition(s) ${names}${unknown.length > 5 ? ', …' : ''}: their node has not answered since the metrics server started`, {
        context: { partitions: unknown.length },
      });
    }
    const sizes: PartitionSize[] = views.map((p) => {
      const partition = map.byId(p.id)!;
      return { id: p.id, start: partition.start, end: partition.end, node: p.node, rows: p.entries!, bytes: p.logicalBytes! };
    });
    let shards: ShardRange[];
    try {
      shards = await planShards(sizes, target, (p, parts) => this.client.splitKeys(p.start, p.end, parts, { signal: options.signal }), { signal: options.signal, maxShards: this.maxShards });
    } catch (err) {
      // The target, not the store, is at fault: the caller has to ask for larger shards.
      if (err instanceof StoreError && err.code === 'STORE_PLAN_TOO_LARGE') {
        const query = 'targetRows' in target ? 'targetRows' : 'targetBytes';
        throw new MetricsError('METRICS_PLAN_TOO_LARGE', `${err.message} (${query}=${String(err.context.smallestTarget)} or more)`, { cause: err, context: err.context });
      }
      throw err;
    }
    return {
      target,
      mapVersion: map.version,
      oldestFigureAgeMs: Math.max(0, ...views.map((p) => p.ageMs ?? 0)),
      stalePartitions: views.filter((p) => p.status !== 'ok').map((p) => p.id),
      shards: shards.map((s) => ({
        index: s.index,
        start: s.start.toString('hex'),
        end: s.end.toString('hex'),
        startDisplay: s.start.length > 0 ? displayBytes(s.start) : '',
        endDisplay: s.end.length > 0 ? displayBytes(s.end) : '',
        partitions: s.partitions,
        approxRows: s.approxRows,
        approxBytes: s.approxBytes,
      })),
    };
  }
}
