import type { Logger } from '../common/index.js';
import type { CallLimits } from './node-connection.js';
import { PartitionMap } from './partition-map.js';
import type { PartitionMapProto } from './proto/gen/shardpipe/store/v1/store.js';
import { StoreError } from './store-errors.js';

/** What a map cache needs: where to start, and how to ask one node for its map. */
export interface MapCacheOptions {
  /** Addresses (HOST:PORT) asked first for the map. At least one. */
  seeds: readonly string[];
  /** Asks one node for its map; rejects with StoreError. */
  ask: (address: string, limits: CallLimits) => Promise<PartitionMapProto>;
  logger?: Logger;
}

/**
 * The partition map a client routes by: fetched from the seeds and the nodes of the known map,
 * never replaced by an older one, and remembered with a node that has it (named to lagging nodes).
 */
export class MapCache {
  private readonly seeds: readonly string[];
  private readonly ask: MapCacheOptions['ask'];
  private readonly logger: Logger | undefined;
  private currentMap: PartitionMap | undefined;
  private mapSource: string | undefined;
  private refreshing: Promise<PartitionMap> | undefined;

  constructor(options: MapCacheOptions) {
    this.seeds = [...options.seeds];
    this.ask = options.ask;
    this.logger = options.logger;
  }

  /** The map in use, if one was fetched or installed. */
  get current(): PartitionMap | undefined {
    return this.currentMap;
  }

  /** A node known to hold the current map (it answered with it, or installed it). */
  get source(): string | undefined {
    return this.mapSource;
  }

  /** The map in use, fetching it first if needed. */
  get(limits: CallLimits): Promise<PartitionMap> {
    return this.currentMap !== undefined ? Promise.resolve(this.currentMap) : this.refresh(limits);
  }

  /** Fetches the newest map any reachable node has; concurrent callers share one fetch. */
  refresh(limits: CallLimits): Promise<PartitionMap> {
    this.refreshing ??= this.fetch(limits).finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** Uses `map` from now on when it is newer (or `force`), `source` being a node that installed it. */
  adopt(map: PartitionMap, source: string | undefined, force = false): void {
    if (this.currentMap === undefined || this.currentMap.version < map.version || force) {
      this.currentMap = map;
      this.mapSource = source;
    }
  }

  private async fetch(limits: CallLimits): Promise<PartitionMap> {
    const candidates = [...new Set([...this.seeds, ...(this.currentMap?.replicaNodes() ?? [])])];
    const answers = await Promise.all(
      candidates.map(async (address) => {
        try {
          return PartitionMap.fromProto(await this.ask(address, limits));
        } catch (err) {
          return err as StoreError;
        }
      }),
    );
    const maps = answers.filter((a): a is PartitionMap => a instanceof PartitionMap);
    if (maps.length === 0) {
      const reasons = answers.map((a, i) => `${candidates[i]}: ${(a as Error).message}`).join('; ');
      // Refused credentials will not pass on a retry: say so with their code.
      const refused = (answers as StoreError[]).find((e) => e.code === 'STORE_UNAUTHENTICATED' || e.code === 'STORE_PERMISSION_DENIED');
      if (refused !== undefined) throw new StoreError(refused.code, `the store nodes refused to give the partition map (${reasons})`, { cause: refused });
      throw new StoreError('STORE_UNAVAILABLE', `no store node answered for the partition map (${reasons})`);
    }
    const newest = maps.reduce((a, b) => (b.version > a.version ? b : a));
    if (!this.currentMap || newest.version > this.currentMap.version) {
      if (this.currentMap) this.logger?.info({ from: this.currentMap.version, to: newest.version }, 'partition map refreshed');
      this.currentMap = newest;
      this.mapSource = candidates[answers.indexOf(newest)];
    }
    return this.currentMap;
  }
}
