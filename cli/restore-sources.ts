import type { BackupTarget } from '../backup/index.js';
import { openLocalShard, readShardRows, type ShardChunk, type ShardSpec } from '../restore/index.js';
import type { StoreClient } from '../store/index.js';

/** Approximate entries the named partitions already hold (nodes that do not answer count as 0). */
export async function entriesInCluster(client: StoreClient, partitionIds: readonly number[]): Promise<number> {
  const wanted = new Set(partitionIds);
  let total = 0;
  for (const node of await client.stats()) if (node.result.ok) for (const p of node.result.partitions) if (wanted.has(p.id)) total += p.approxCount;
  return total;
}

/** A shard file's rows, read again for verification (staged copies removed afterwards). */
export async function* shardRowsAgain(target: BackupTarget, backupId: string, shard: ShardSpec, stagingDir: string, signal?: AbortSignal): AsyncGenerator<ShardChunk> {
  const local = await openLocalShard(target, backupId, shard, { stagingDir, signal });
  try {
    yield* readShardRows(local.file, shard, { signal });
  } finally {
    await local.release();
  }
}
