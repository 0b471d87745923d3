import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalTarget, newBackupId, writeShard } from '../../backup/index.js';
import { PartitionMap, StoreClient, StoreError } from '../../store/index.js';
import { StoreCluster, sortedRows } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

describe('backup shard writer over a real node', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  let dir: TempDir;

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
    client = new StoreClient({ seeds: cluster.seeds });
    dir = await makeTempDir();
  });
  afterAll(async () => {
    client?.close();
    await cluster?.close();
    await dir?.remove();
  });

  it('fault injection: an unreadable record planted in LevelDB fails the shard with STORE_INTERNAL naming the partition and key, not retryable', async () => {
    const rows = sortedRows(2000, 0, 500);
    await client.bulkPutAll(rows);
    const node = cluster.nodes[0]!;
    await node.stop();
    const db = new ClassicLevel<Buffer, Buffer>(join(node.dataDir, 'partition-0'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    const planted = Buffer.concat([rows[0]![10]!.key.subarray(0, 15), Buffer.from([0xff])]);
    await db.put(Buffer.concat([Buffer.from('d'), planted]), Buffer.from([99, 0, 1, 2, 3]));
    await db.close();
    await node.start();

    const target = new LocalTarget(dir.path);
    const snapshots = await client.openSnapshots({ leaseMs: 60_000 });
    let err: unknown;
    try {
      await writeShard(client, target, { backupId: newBackupId(), index: 0, start: Buffer.alloc(0), end: PartitionMap.evenlySplit(1, cluster.seeds, 2).partitions[1]!.start, leases: snapshots.leases });
    } catch (e) {
      err = e;
    } finally {
      await client.releaseSnapshots(snapshots.leases);
    }
    expect(err).toBeInstanceOf(StoreError);
    const e = err as StoreError;
    expect(e.code).toBe('STORE_INTERNAL');
    expect(e.retryable).toBe(false);
    expect(e.message).toContain('partition 0');
    expect(e.message).toContain(planted.toString('hex'));
  });
});
