import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { GatewayService } from '../../gateway/index.js';
import { BulkPutRequestSchema } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';
import { Key, StoreClient } from '../../store/index.js';
import { StoreCluster } from '../helpers/store-cluster.js';

let cluster: StoreCluster;
let client: StoreClient;

beforeAll(async () => {
  cluster = await StoreCluster.start({ nodes: 2, partitions: 4 });
  client = new StoreClient({ seeds: cluster.seeds });
}, 120_000);

afterAll(async () => {
  client?.close();
  await cluster?.close();
});

async function* messages(rows: Array<{ key: Buffer; value: Buffer }>, perMessage: number) {
  for (let i = 0; i < rows.length; i += perMessage) yield create(BulkPutRequestSchema, { rows: rows.slice(i, i + perMessage) });
}

describe('GatewayService.bulkPut over real store nodes, in small runs', () => {
  it('sorted rows (runs written concurrently) all land, across every partition', async () => {
    const service = new GatewayService(client, { bulkPartitionRows: 100 });
    const rows = Array.from({ length: 5000 }, (_, i) => ({ key: Buffer.from([(i * 256) / 5000, ...Buffer.from(`s-${String(i).padStart(5, '0')}`)]), value: Buffer.from(`v${i}`) }));
    const response = await service.bulkPut(messages(rows, 250));
    expect(response.rows).toBe(5000n);
    let n = 0;
    for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) {
      for (const e of batch) {
        if (!e.key.subarray(1).toString().startsWith('s-')) continue;
        expect(e.value.toString()).toBe(`v${Number(e.key.subarray(3).toString())}`);
        n++;
      }
    }
    expect(n).toBe(5000);
  });

  it('a key sent again in a later, overlapping run keeps its last value (overlapping runs are written in order)', async () => {
    const service = new GatewayService(client, { bulkPartitionRows: 100 });
    // Four passes over 500 keys in a shuffled order; each pass's value names the pass.
    const order = Array.from({ length: 500 }, (_, i) => (i * 7919) % 500);
    const rows = [0, 1, 2, 3].flatMap((pass) => order.map((i) => ({ key: Buffer.from(`dup-${String(i).padStart(4, '0')}`), value: Buffer.from(`pass-${pass}`) })));
    const response = await service.bulkPut(messages(rows, 64));
    expect(response.rows).toBe(2000n);
    for (let i = 0; i < 500; i++) {
      const record = await client.get(Key.fromBytes(Buffer.from(`dup-${String(i).padStart(4, '0')}`)));
      expect(record?.value.toString()).toBe('pass-3');
    }
  });
});
