import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient, type BulkRowInput } from '../../store/index.js';
import { StoreCluster, runCli } from '../helpers/store-cluster.js';

// Three real node processes on a static map (no etcd, no coordinator) of one chain of three,
// SIGKILLed and restarted on their data. A restarted head starts a new write stream; its middle
// still holds writes of the old stream that the tail has not acknowledged. Those must reach the
// tail before the new stream does, or the tail takes the new stream and refuses them for ever
// (STORE_FORWARD_GAP), and the middle and the tail stay apart.
let cluster: StoreCluster | undefined;
const clients: StoreClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await cluster?.close();
  cluster = undefined;
});

function rows(count: number, tag: string, valueBytes = 100): BulkRowInput[] {
  return Array.from({ length: count }, (_, i) => {
    const key = Buffer.alloc(7);
    key.write(tag.slice(0, 1));
    key.writeUInt16BE(Math.floor((i * 65536) / count), 1);
    key.writeUInt32BE(i, 3);
    return { key, value: Buffer.alloc(valueBytes, i % 251) };
  });
}

/** Waits (bounded, polling) until `test` holds. */
async function until(what: string, test: () => Promise<boolean> | boolean, log: () => string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; its log: ${log().slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a static-map chain whose head restarts while its middle holds unacknowledged writes', () => {
  it('SIGKILL of the tail, then the head mid-write, restart of both: the old stream\'s writes reach the tail before the new stream, nothing is left unacknowledged, cluster check consistent', async () => {
    const c = await StoreCluster.start({ nodes: 3, partitions: 1, replicas: 3, extraArgs: ['--forward-timeout', '1s'] });
    cluster = c;
    const [head, middle, tail] = c.map.partitions[0]!.chain.map((r) => c.nodes.find((n) => n.address === r.node)!);
    const client = new StoreClient({ seeds: c.seeds, operationTimeoutMs: 60_000 });
    clients.push(client);
    expect((await client.bulkPutAll([rows(2_000, 'a')])).rows).toBe(2_000);

    // The tail dies; a large write reaches the head and the middle, never the tail: no ack.
    await tail!.kill();
    const stuck = new StoreClient({ seeds: [head!.address], operationTimeoutMs: 60_000 });
    clients.push(stuck);
    const pending = stuck.bulkPutAll([rows(20_000, 'o')], { maxInFlight: 1 }).catch(() => undefined);
    const middleLog = (): string => middle!.stderr;
    await until('the middle holds the write and fails to forward it', () => middle!.stderr.includes('forward failed'), middleLog);
    await head!.kill();
    stuck.close();
    await pending;

    // The head comes back on its data: a new write stream. A write of it reaches the middle.
    await head!.start();
    const fresh = client.put(Key.fromUtf8('n-after-restart'), Buffer.from('new stream'));
    await until('the middle took the new stream', async () => {
      const stats = await client.stats();
      const replica = stats.find((s) => s.node === middle!.address)?.result;
      return replica?.ok === true && replica.replicas[0]!.lastSeq === 1;
    }, middleLog);

    // The tail comes back: both streams are due to it.
    await tail!.start();
    await fresh;
    await until('the middle has nothing left unacknowledged', async () => {
      const stats = await client.stats();
      const replica = stats.find((s) => s.node === middle!.address)?.result;
      return replica?.ok === true && replica.replicas[0]!.unacked === 0;
    }, middleLog);
    const check = await runCli(['cluster', 'check', '--seeds', c.seeds.join(','), '--json']);
    const json = JSON.parse(check.stdout) as { consistent: boolean; partitions: Array<{ replicas: Array<{ node: string; count: number }> }> };
    // The acknowledged rows, the new stream's put, and the old stream's never-acknowledged batch
    // (the first call of the stuck load, on the head and the middle before the kill) on every replica.
    const counts = json.partitions[0]!.replicas.map((r) => r.count);
    expect(counts[0]).toBeGreaterThan(2_001);
    expect(counts).toEqual([counts[0], counts[0], counts[0]]);
    expect((await client.get(Key.fromUtf8('n-after-restart')))?.value.toString()).toBe('new stream');
    expect(json.consistent).toBe(true);
    expect(check.code).toBe(0);
    expect(middle!.stderr).not.toContain('STORE_FORWARD_GAP');
  }, 120_000);
});
