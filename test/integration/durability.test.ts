import { on } from 'node:events';
import { credentials, makeGenericClientConstructor, type ClientReadableStream } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient, StoreError, checkHealth } from '../../store/index.js';
import { NodeProcess, StoreCluster, sortedRows } from '../helpers/store-cluster.js';

describe('a node process: durability, restart, expiry, shutdown', () => {
  let cluster: StoreCluster | undefined;
  let client: StoreClient | undefined;

  afterEach(async () => {
    client?.close();
    await cluster?.close();
    cluster = undefined;
  });

  it('SIGKILL right after acknowledged writes: after restart every acknowledged write is there with its etag, and etags move on', async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 3 });
    const node = cluster.nodes[0]!;
    client = new StoreClient({ seeds: cluster.seeds, operationTimeoutMs: 2000 });
    const acked = new Map<string, { value: string; etag: number }>();
    let stop = false;
    const writers = Array.from({ length: 16 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        const key = `w${w}:${i % 50}`;
        const value = `${w}-${i}`;
        try {
          const r = await client!.put(Key.fromUtf8(key), Buffer.from(value));
          acked.set(key, { value, etag: r.etag });
        } catch {
          return; // the node is gone: unacknowledged writes may or may not have landed
        }
      }
    });
    await new Promise<void>((resolve) => {
      const wait = (): void => {
        if (acked.size >= 400) resolve();
        else setTimeout(wait, 5);
      };
      wait();
    });
    await node.kill();
    stop = true;
    await Promise.all(writers);
    expect(acked.size).toBeGreaterThanOrEqual(400);

    await node.start();
    client.close();
    client = new StoreClient({ seeds: cluster.seeds });
    let maxEtag = 0;
    for (const [key, { value, etag }] of acked) {
      const record = await client.get(Key.fromUtf8(key));
      // A write that raced the kill may have landed after our last ack for the key: never older.
      expect(record, key).toBeDefined();
      expect(record!.etag).toBeGreaterThanOrEqual(etag);
      if (record!.etag === etag) expect(record!.value.toString()).toBe(value);
      maxEtag = Math.max(maxEtag, record!.etag);
    }
    const fresh = await client.put(Key.fromUtf8('w0:0'), Buffer.from('after-restart'));
    expect(fresh.etag).toBeGreaterThan((await client.get(Key.fromUtf8('w0:1')))!.etag);
    expect(fresh.etag).toBeGreaterThan(acked.get('w0:0')!.etag);
  });

  it('a clean restart keeps data, counts and the map (started again without --map)', async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 4 });
    client = new StoreClient({ seeds: cluster.seeds });
    await client.bulkPutAll(sortedRows(5000));
    const before = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));
    const node = cluster.nodes[0]!;
    expect(await node.stop()).toBe(0);
    // No --map: the node must serve the map it persisted.
    const restarted = new NodeProcess(node.address, node.dataDir, undefined);
    cluster.nodes[0] = restarted;
    await restarted.start();
    client.close();
    client = new StoreClient({ seeds: cluster.seeds });
    const after = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));
    expect(after.toHex()).toBe(before.toHex());
    expect(after.count).toBe(5000);
    const stats = await client.stats();
    expect(stats[0]!.result.ok && stats[0]!.result.partitions.reduce((s, p) => s + p.approxCount, 0)).toBe(5000);
  });

  it('TTL: an entry reads as absent once expired, and the sweeper removes it from the count', async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2, extraArgs: ['--sweep-interval', '100ms'] });
    client = new StoreClient({ seeds: cluster.seeds });
    const key = Key.fromUtf8('ttl:key');
    const put = await client.put(key, Buffer.from('soon gone'), { ttlMs: 400 });
    expect(put.expiresAtMs).toBeGreaterThan(Date.now());
    await client.put(Key.fromUtf8('ttl:stays'), Buffer.from('stays'));
    expect((await client.get(key))?.value.toString()).toBe('soon gone');
    await waitFor(async () => (await client!.get(key)) === undefined, 3000);
    await waitFor(async () => totalCount(client!).then((n) => n === 1), 3000);
    const scanned = [];
    for await (const b of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) scanned.push(...b);
    expect(scanned.map((e) => e.key.toString())).toEqual(['ttl:stays']);
  });

  it('SIGTERM drains: the node reports NOT_SERVING while still up, refuses new calls with UNAVAILABLE, lets calls in flight finish, exits 0', async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
    const node = cluster.nodes[0]!;
    const alive = (): boolean => node.child !== undefined && node.child.exitCode === null && node.child.signalCode === null;
    client = new StoreClient({ seeds: cluster.seeds, operationTimeoutMs: 500 });
    // A health Watch opened before the signal is a call in flight: the drain lets it run, so it hears
    // the status change from the node itself, and keeps the node up (within --shutdown-grace) meanwhile.
    const watch = watchHealth(node.address);
    try {
      expect(await watch.next()).toBe('SERVING');
      let loadStarted!: () => void;
      const acked = new Promise<void>((resolve) => (loadStarted = resolve));
      const load = client.bulkPutAll(sortedRows(20_000), { onAck: () => loadStarted() });
      const outcome = load.then(
        (r) => r.rows,
        (err: unknown) => err,
      );
      await Promise.race([acked, outcome]);
      const exit = node.stop();

      expect(await watch.next()).toBe('NOT_SERVING');
      expect(alive()).toBe(true);
      const err = await client.get(Key.fromUtf8('x')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreError);
      expect((err as StoreError).code).toBe('STORE_UNAVAILABLE');
      expect(alive(), 'UNAVAILABLE came from the draining node, not a dead one').toBe(true);

      watch.close();
      expect(await exit).toBe(0);
      // Either the load finished before the drain, or it failed with a retryable code — never corruption.
      const result = await outcome;
      if (typeof result !== 'number') {
        expect(result).toBeInstanceOf(StoreError);
        expect((result as StoreError).code).toMatch(/STORE_UNAVAILABLE|STORE_DEADLINE_EXCEEDED/);
      } else {
        expect(result).toBe(20_000);
      }
      expect(await checkHealth(node.address, 500)).toBe('UNREACHABLE');
    } finally {
      watch.close();
    }
  });
});

/** A grpc.health.v1 Watch stream: `next()` resolves the next status the node sends. */
function watchHealth(address: string): { next: () => Promise<string>; close: () => void } {
  const Health = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health');
  const health = new Health(address, credentials.createInsecure());
  const call = (health as unknown as { watch: (request: { service: string }) => ClientReadableStream<{ status: string }> }).watch({ service: '' });
  const statuses = on(call, 'data');
  let closed = false;
  return {
    next: async () => {
      const { value, done } = await statuses.next();
      if (done) throw new Error('the health watch ended');
      return (value as [{ status: string }])[0].status;
    },
    close: () => {
      if (closed) return;
      closed = true;
      call.cancel();
      health.close();
    },
  };
}

async function totalCount(client: StoreClient): Promise<number> {
  const stats = await client.stats();
  return stats.reduce((s, n) => s + (n.result.ok ? n.result.partitions.reduce((a, p) => a + p.approxCount, 0) : 0), 0);
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
