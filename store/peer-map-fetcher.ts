import type { Logger } from '../common/index.js';
import { NodeConnection, type StoreCredentials } from './node-connection.js';
import { PartitionMap } from './partition-map.js';
import type { StoreNode } from './store-node.js';

/** Budget of one fetch of the map from a peer, in ms. */
const FETCH_DEADLINE_MS = 5000;

/**
 * Brings a node that missed a map install up to date without the client holding `admin`: a
 * client whose map is newer names a peer (request metadata), and the node fetches the map from
 * that peer itself, with its own credentials. Only nodes of the node's current map are asked —
 * a caller cannot point it at a server of its choosing — and the map is installed through the
 * node's usual `setMap` checks (newer version, valid ranges). One fetch at a time.
 */
export class PeerMapFetcher {
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly node: StoreNode,
    private readonly credentials: StoreCredentials,
    private readonly logger: Logger,
  ) {}

  /** Fetches from `peer` when the caller's `version` is newer than ours. Never throws. */
  async catchUp(peer: string, version: number): Promise<void> {
    // In etcd mode the node learns maps from its etcd watch only.
    if (this.node.mapFromEtcd || !Number.isSafeInteger(version) || version <= this.node.map.version) return;
    if (this.inFlight) return this.inFlight;
    this.inFlight = this.fetch(peer).finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async fetch(peer: string): Promise<void> {
    const map = this.node.map;
    if (peer === this.node.address || !map.nodes().includes(peer)) {
      this.logger.warn({ peer, mapVersion: map.version }, 'not fetching the partition map: the named peer is not another node of this node\'s map');
      return;
    }
    const conn = new NodeConnection(peer, this.credentials);
    try {
      const fetched = PartitionMap.fromProto(await conn.unary('getPartitionMap', {}, { deadline: Date.now() + FETCH_DEADLINE_MS }));
      if (fetched.version <= this.node.map.version) return;
      if (await this.node.setMap(fetched)) this.logger.info({ peer, from: map.version, to: fetched.version }, 'partition map fetched from a peer and installed');
    } catch (err) {
      this.logger.warn({ err, peer }, 'could not fetch the partition map from a peer');
    } finally {
      conn.close();
    }
  }
}
