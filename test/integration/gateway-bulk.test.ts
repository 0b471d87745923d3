import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { GatewayError, GatewayService, packBulkRows } from '../../gateway/index.js';
import { BulkPutRequestSchema, type BulkPutRequest } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';
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

  it('packed messages, mixed with per-row ones in one stream of unsorted rows, all land with their values', async () => {
    const service = new GatewayService(client, { bulkPartitionRows: 300 });
    const order = Array.from({ length: 6000 }, (_, i) => (i * 4987) % 6000);
    const rows = order.map((i) => ({ key: Buffer.from([(i * 256) / 6000, ...Buffer.from(`p-${String(i).padStart(5, '0')}`)]), value: Buffer.from(`pv${i}`.repeat(1 + (i % 5))) }));
    async function* mixed(): AsyncGenerator<BulkPutRequest> {
      for (let m = 0; m * 500 < rows.length; m++) {
        const part = rows.slice(m * 500, (m + 1) * 500);
        yield create(BulkPutRequestSchema, m % 3 === 2 ? { rows: part } : { packed: packBulkRows(part) });
      }
    }
    const response = await service.bulkPut(mixed());
    expect(response.rows).toBe(6000n);
    let n = 0;
    for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) {
      for (const e of batch) {
        if (!e.key.subarray(1).toString().startsWith('p-')) continue;
        const i = Number(e.key.subarray(3).toString());
        expect(e.value.toString()).toBe(`pv${i}`.repeat(1 + (i % 5)));
        n++;
      }
    }
    expect(n).toBe(6000);
  });

  it('a packed message whose lengths do not add up fails the BulkPut with INVALID_ARGUMENT naming the message and field; rows before it were written', async () => {
    const service = new GatewayService(client, { bulkPartitionRows: 100 });
    const rowsOf = (from: number) => Array.from({ length: 100 }, (_, i) => ({ key: Buffer.from(`bad-packed-${String(from + i).padStart(4, '0')}`), value: Buffer.from('v') }));
    async function* stream(): AsyncGenerator<BulkPutRequest> {
      yield create(BulkPutRequestSchema, { packed: packBulkRows(rowsOf(0)) });
      const broken = packBulkRows(rowsOf(100));
      broken.data = broken.data.subarray(0, broken.data.length - 1);
      yield create(BulkPutRequestSchema, { packed: broken });
      yield create(BulkPutRequestSchema, { packed: packBulkRows(rowsOf(200)) });
    }
    const err = await service.bulkPut(stream()).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect(err).toMatchObject({ code: 'GATEWAY_INVALID_ARGUMENT', message: expect.stringMatching(/^BulkPutRequest message 1 \(counting from 0 over the stream; rows 100 on\): BulkPutRequest\.packed\.data is \d+ bytes, but the lengths of its 100 rows add up to \d+; 100 rows before it were written/) });
    // The first message's rows (a full run) were written before the broken one arrived.
    expect((await client.get(Key.fromBytes(Buffer.from('bad-packed-0099'))))?.value.toString()).toBe('v');
    expect(await client.get(Key.fromBytes(Buffer.from('bad-packed-0200')))).toBeUndefined();
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
