import { afterEach, describe, expect, it } from 'vitest';
import { NodeConnection } from '../../store/index.js';
import { StoreCluster } from '../helpers/store-cluster.js';

// A client's channel to a node that was away a while. With grpc-js's default reconnect back-off
// (1 s, ×1.6 per failed attempt, up to 120 s) the channel kept trying on its own, ever more
// rarely, and stayed away from the node for seconds after it was back: in the demo the worker's
// channel to the node SIGKILLed during the ingest held the restore after the wipe at 0 rows for
// 10 s (restore 18–19 s, against 8–10 s with the back-off capped at 1 s).
const DOWN_MS = 20_000;

let cluster: StoreCluster | undefined;
let conn: NodeConnection | undefined;

afterEach(async () => {
  conn?.close();
  conn = undefined;
  await cluster?.close();
  cluster = undefined;
});

const get = (c: NodeConnection): Promise<unknown> => c.unary('get', { mapVersion: 1, key: Buffer.from('k'), fields: [] }, { deadline: Date.now() + 500 });

describe('reconnecting to a node that comes back', () => {
  it(`a channel whose node was SIGKILLed and away ${DOWN_MS / 1000} s serves calls again within 3 s of the node being ready`, async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 1 });
    const node = cluster.nodes[0]!;
    conn = new NodeConnection(node.address);
    await get(conn);
    await node.kill();
    // One call finds it gone (as the worker's did before its map dropped the node), then none.
    expect(await get(conn).then(() => 'answered', () => 'failed')).toBe('failed');
    await new Promise((r) => setTimeout(r, DOWN_MS));
    await node.start();
    const ready = Date.now();
    while (!(await get(conn).then(() => true, () => false))) {
      expect(Date.now() - ready, 'the channel is still backing off').toBeLessThan(3000);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(Date.now() - ready).toBeLessThan(3000);
  }, 60_000);
});
