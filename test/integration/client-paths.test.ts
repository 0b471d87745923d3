import { afterEach, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { PartitionMap, RangeDigest, StoreClient, type BulkRowInput } from '../../store/index.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { StoreCluster, sortedRows } from '../helpers/store-cluster.js';

const ALL = Buffer.alloc(0);
let cluster: StoreCluster | undefined;
let proxy: FaultProxy | undefined;
const clients: StoreClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await proxy?.close();
  proxy = undefined;
  await cluster?.close();
  cluster = undefined;
});

function clientOf(seeds: string[]): StoreClient {
  const client = new StoreClient({ seeds });
  clients.push(client);
  return client;
}

function digestOf(chunks: readonly (readonly BulkRowInput[])[]): RangeDigest {
  const digest = new RangeDigest();
  for (const chunk of chunks) for (const r of chunk) digest.add(r.key, r.value, 0);
  return digest;
}

/** onAck's calls, checked to grow strictly. */
function ackRecorder(): { onAck: (rows: number) => void; acks: number[] } {
  const acks: number[] = [];
  return {
    acks,
    onAck: (rows) => {
      expect(rows).toBeGreaterThan(acks.at(-1) ?? 0);
      acks.push(rows);
    },
  };
}

describe('the thick client’s recovery paths against real nodes', () => {
  it('a batch the node finds too large (STORE_BATCH_TOO_LARGE, a real --max-batch-bytes) is split until it fits; every row lands once', async () => {
    const maxBatchBytes = 20_000;
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2, extraArgs: ['--max-batch-bytes', String(maxBatchBytes)] });
    const client = clientOf(cluster.seeds);
    const rows = sortedRows(6000, 3, 1000);
    const total = 6000;
    const recorder = ackRecorder();
    // 1000 rows of 116 bytes per call: about 116 kB, far over the node's limit.
    const result = await client.bulkPutAll(rows, { batchMaxRows: 1000, onAck: recorder.onAck });

    expect(result.rows).toBe(total);
    expect(recorder.acks.at(-1)).toBe(total);
    // Each accepted call carries at most maxBatchBytes of rows, so at least this many calls were accepted,
    // on top of the refused ones; without splitting there would be about total / 1000 calls.
    const rowBytes = 16 + 100;
    const batches = Math.ceil(total / 1000) + 1; // + 1: a cut at the partition boundary
    const acceptedAtLeast = Math.ceil((total * rowBytes) / maxBatchBytes);
    expect(result.calls).toBeGreaterThan(acceptedAtLeast + batches);
    // The nodes' timing of the accepted calls adds up: every one wrote and synced.
    expect(result.serverTiming.writeMs).toBeGreaterThan(0);
    expect(result.serverTiming.fsyncMs).toBeGreaterThan(0);
    const stored = await client.checksum(ALL, ALL);
    expect(stored.count).toBe(total);
    expect(stored.toHex()).toBe(digestOf(rows).toHex());
  });

  it('a batch partly accepted (the map was re-cut under the client) is resent from the first row not accepted, to its new owner', async () => {
    // v1: one partition on node A. v2 (installed behind the client's back): [.., 0x8000) on A, [0x8000, ..) on B.
    cluster = await StoreCluster.start({ nodes: 2, partitions: 1 });
    const [a, b] = cluster.seeds as [string, string];
    const client = clientOf([a]);
    expect((await client.map()).partitions).toHaveLength(1);
    const v2 = PartitionMap.fromSplitKeys(2, [a, b], [Buffer.from([0x80, 0x00])]);
    const admin = clientOf(cluster.seeds);
    const installed = await admin.installMap(v2);
    expect(installed.map((i) => i.installed)).toEqual([true, true]);

    const rows = sortedRows(4000, 5, 4000);
    const below = rows[0]!.filter((r) => r.key[0]! < 0x80).length;
    expect(below).toBeGreaterThan(0);
    expect(below).toBeLessThan(4000);
    const recorder = ackRecorder();
    // One call of 4000 rows by the client's v1 map; the node answers stale map, the client takes v2,
    // A accepts the rows below 0x8000 and the rest must go to B.
    const result = await client.bulkPutAll(rows, { batchMaxRows: 4000, onAck: recorder.onAck });

    expect(result.rows).toBe(4000);
    expect(recorder.acks).toEqual([4000]);
    expect(result.partialAccepts).toBeGreaterThanOrEqual(1);
    expect((await client.map()).version).toBe(2);
    const stats = await admin.stats();
    const countOn = (node: string): number => {
      const s = stats.find((n) => n.node === node)!;
      return s.result.ok ? s.result.partitions.reduce((sum, p) => sum + p.approxCount, 0) : -1;
    };
    expect(countOn(a)).toBe(below);
    expect(countOn(b)).toBe(4000 - below);
    const stored = await client.checksum(ALL, ALL);
    expect(stored.toHex()).toBe(digestOf(rows).toHex());
  });

  it('a scan whose stream breaks mid-way (fault injection: the proxy resets the connection) resumes after the last entry handed out: each entry once, in order', async () => {
    const realPort = await findFreePort();
    const proxyPort = await findFreePort();
    proxy = await FaultProxy.start(proxyPort, { host: '127.0.0.1', port: realPort });
    const address = `127.0.0.1:${proxyPort}`;
    cluster = await StoreCluster.start({ nodes: 1, partitions: 3, addresses: [address], extraArgs: ['--listen', `127.0.0.1:${realPort}`] });
    const client = clientOf([address]);
    const rows = sortedRows(30_000, 9);
    await client.bulkPutAll(rows);
    const connectionsBefore = proxy.connectionsAccepted;

    const scanned = new RangeDigest();
    let previous: Buffer | undefined;
    let batches = 0;
    let afterBreak = 0;
    for await (const batch of client.scanAll(ALL, ALL, { batchSize: 100 })) {
      for (const e of batch) {
        if (previous) expect(Buffer.compare(previous, e.key), 'keys strictly ascending: nothing repeated').toBeLessThan(0);
        previous = e.key;
        scanned.add(e.key, e.value, e.expiresAtMs);
      }
      if (++batches === 3) {
        // Mid-way through the first partition's stream: cut every connection, then let new ones through.
        proxy.setMode({ kind: 'reset' });
        proxy.setMode({ kind: 'pass' });
      } else if (batches > 3) {
        afterBreak += batch.length;
      }
    }
    expect(proxy.connectionsAccepted, 'the client had to reconnect').toBeGreaterThan(connectionsBefore);
    expect(afterBreak).toBe(30_000 - 300);
    expect(scanned.count).toBe(30_000);
    expect(scanned.toHex()).toBe(digestOf(rows).toHex());
  });
});
