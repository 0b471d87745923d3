import { setTimeout as sleep } from 'node:timers/promises';
import { StoreClient, type PartitionMap } from '../store/index.js';
import type { LocalCluster } from './local-cluster.js';

/** What the demo's node kill did, for its summary. */
export interface FailoverReport {
  /** The node SIGKILLed (HOST:PORT). */
  node: string;
  /** Its place in every chain it was part of. */
  chains: Array<{ partition: number; role: 'head' | 'middle' | 'tail' }>;
  /** Rows at the chains' tails when it was killed. */
  killedAtRows: number;
  /** From the SIGKILL to the coordinator's map change that dropped the node from its chains, ms. */
  failoverMs: number;
  /** The map version of that change. */
  mapVersion: number;
  /** Chains the change touched. */
  chainsChanged: number;
}

/** The role of `node` in each chain of `map` it belongs to. */
export function rolesOf(map: PartitionMap, node: string): FailoverReport['chains'] {
  return map.partitions.flatMap((p) => {
    const i = p.chain.findIndex((r) => r.node === node);
    if (i < 0) return [];
    return [{ partition: p.id, role: i === 0 ? 'head' : i === p.chain.length - 1 ? 'tail' : 'middle' }];
  });
}

/**
 * Watches the rows reaching the chains' tails during an ingest and SIGKILLs `victim` once
 * `atRows` are there, then waits for the coordinator to drop it. Resolves undefined if `done`
 * (the ingest) ends first. Polls PartitionStats every 100 ms: a demo's progress probe, not a protocol.
 */
export async function killDuringIngest(
  cluster: LocalCluster,
  victim: string,
  atRows: number,
  token: string,
  done: Promise<unknown>,
  timeoutMs: number,
): Promise<FailoverReport | undefined> {
  const chains = rolesOf(cluster.map, victim);
  const client = new StoreClient({ seeds: cluster.addresses, credentials: { token } });
  let finished = false;
  void done.finally(() => (finished = true)).catch(() => undefined);
  try {
    let rows = 0;
    while (!finished) {
      const stats = await client.stats({ timeoutMs: 2000 });
      rows = stats.reduce((sum, s) => sum + (s.result.ok ? s.result.partitions.reduce((n, p) => n + p.approxCount, 0) : 0), 0);
      if (rows >= atRows) break;
      await sleep(100);
    }
    if (finished) return undefined;
    const dropped = cluster.nextChange((c) => c.changes.some((x) => x.removed.includes(victim)), timeoutMs);
    const killedAtMs = await cluster.kill(victim);
    const change = await dropped;
    return { node: victim, chains, killedAtRows: rows, failoverMs: change.atMs - killedAtMs, mapVersion: change.version, chainsChanged: change.changes.length };
  } finally {
    client.close();
  }
}
