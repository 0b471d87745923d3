import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient } from '../../store/index.js';
import { DeleteResponse } from '../../store/proto/gen/shardpipe/store/v1/store.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';
import { StoreCluster } from '../helpers/store-cluster.js';

// Three real node processes on a static map of one chain of three (head, middle, tail): every
// write's reply carries the head's write time, its wait for the chain and each replica below it.
let cluster: StoreCluster | undefined;
const closers: Array<() => void> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  await cluster?.close();
  cluster = undefined;
});

type Timing = { writeMs: number; forwardMs: number; hops: Array<{ node: string; writeMs: number; forwardMs: number }> };

/** A reply's timing from a chain of three: the head's write and wait, then the middle and the tail, each with durations. */
function expectThreeReplicas(timing: Timing | undefined, chain: readonly string[]): void {
  expect(timing).toBeDefined();
  expect(timing!.writeMs).toBeGreaterThan(0);
  expect(timing!.forwardMs).toBeGreaterThan(0);
  expect(timing!.hops.map((h) => h.node)).toEqual(chain.slice(1));
  for (const hop of timing!.hops) expect(hop.writeMs).toBeGreaterThan(0);
  // The middle waited for the tail; the tail has no one to wait for.
  expect(timing!.hops[0]!.forwardMs).toBeGreaterThan(0);
  // The head's wait holds the middle's write and its own wait.
  expect(timing!.forwardMs).toBeGreaterThanOrEqual(timing!.hops[0]!.writeMs);
}

describe('write replies carry per-hop timing (RF=3, real node processes)', () => {
  it('Put, Patch, Delete and the writes of a Multi answer with the head\'s write, its forward time and both hops below it', async () => {
    const c = await StoreCluster.start({ nodes: 3, partitions: 1, replicas: 3 });
    cluster = c;
    const chain = c.map.partitions[0]!.chain.map((r) => r.node);
    // One point call in flight: the first put goes as a plain Put, concurrent ones as Multi calls.
    const client = new StoreClient({ seeds: c.seeds, pointCallsInFlight: 1 });
    closers.push(() => client.close());

    const put = await client.put(Key.fromUtf8('doc'), Buffer.from('{"a":1}'));
    expectThreeReplicas(put.timing, chain);

    const patched = await client.patch(Key.fromUtf8('doc'), { b: 2 });
    expectThreeReplicas(patched.timing, chain);

    // Concurrent puts travel together in Multi calls: each slot has its own timing.
    const many = await Promise.all(Array.from({ length: 40 }, (_, i) => client.put(Key.fromUtf8(`m${i}`), Buffer.from(`v${i}`))));
    for (const r of many) expectThreeReplicas(r.timing, chain);

    // Delete: the thick client answers only whether it deleted; the reply on the wire has the timing.
    const raw = new RawStoreClient(chain[0]!);
    closers.push(() => raw.close());
    const deleted = await raw.call('Delete', { mapVersion: BigInt(c.map.version), key: Buffer.from('m0') });
    expect(deleted.ok).toBe(true);
    const reply = DeleteResponse.decode(deleted.ok ? deleted.bytes : Buffer.alloc(0));
    expect(reply.deleted).toBe(true);
    expectThreeReplicas(reply.timing, chain);
  }, 60_000);

  it('a chain of one answers with the head\'s write time and no hops', async () => {
    const c = await StoreCluster.start({ nodes: 1, partitions: 1 });
    cluster = c;
    const client = new StoreClient({ seeds: c.seeds });
    closers.push(() => client.close());
    const put = await client.put(Key.fromUtf8('solo'), Buffer.from('x'));
    expect(put.timing!.writeMs).toBeGreaterThan(0);
    expect(put.timing!.forwardMs).toBe(0);
    expect(put.timing!.hops).toEqual([]);
  }, 30_000);
});
