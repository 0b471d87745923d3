import { create } from '@bufbuild/protobuf';
import { credentials, makeGenericClientConstructor, type Client, type ServiceError } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { grpcServiceDefinition, GATEWAY_SERVICE_DESC } from '../../gateway/index.js';
import { GetRequestSchema, PutRequestSchema, type GetResponse, type PutResponse } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';
import { Key, StoreClient } from '../../store/index.js';
import { GatewayProcess } from '../helpers/gateway-process.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';
import { NodeProcess, StoreCluster } from '../helpers/store-cluster.js';

// Gathering point calls (StoreClient gatherPointCalls, on in the gateway): requests that arrive in
// one event-loop I/O phase go to their node as one Multi, a lone request still as its plain call.
// Real node processes and a real gateway; call counts from the node's /metrics.

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function oneNode(): Promise<StoreCluster> {
  const c = await StoreCluster.start({ nodes: 1, partitions: 4, extraArgs: ['--metrics-port', '0'] });
  cleanups.push(() => c.close());
  return c;
}

// Calls, not MultiStream messages: these tests count how the ops were merged into calls.
function client(seeds: string[], gatherPointCalls: boolean): StoreClient {
  const c = new StoreClient({ seeds, gatherPointCalls, operationTimeoutMs: 20_000, pointStreams: false });
  cleanups.push(() => c.close());
  return c;
}

/** Get, Put and Multi calls and MultiStream requests the node has answered OK (`shardpipe_store_rpc_total`). */
async function pointCalls(node: NodeProcess): Promise<{ get: number; put: number; multi: number; streamed: number }> {
  const samples = parsePrometheusText(await (await fetch(`http://127.0.0.1:${String(node.ready.metricsPort)}/metrics`)).text());
  const count = (method: string): number => sampleValue(samples, 'shardpipe_store_rpc_total', { method, code: 'OK' }) ?? 0;
  return { get: count('Get'), put: count('Put'), multi: count('Multi'), streamed: count('MultiStream') };
}

async function callsDuring(node: NodeProcess, work: () => Promise<unknown>): Promise<{ get: number; put: number; multi: number; streamed?: number }> {
  const before = await pointCalls(node);
  await work();
  const after = await pointCalls(node);
  const streamed = after.streamed - before.streamed;
  // Only the gateway's client sends over MultiStream here; the others' counts stay exact without it.
  return { get: after.get - before.get, put: after.put - before.put, multi: after.multi - before.multi, ...(streamed > 0 ? { streamed } : {}) };
}

const keyOf = (i: number): Key => Key.fromBytes(Buffer.from(`gather-${String(i).padStart(4, '0')}`));
const valueOf = (i: number): Buffer => Buffer.from(`value-${i}`);

describe('gathered point calls', () => {
  it('a burst of concurrent Gets goes as one Multi (not two plain Gets and a Multi); a lone Get still goes as its plain call; answers as without gathering', async () => {
    const c = await oneNode();
    const node = c.nodes[0]!;
    const writer = client(c.seeds, false);
    const keys = 32;
    for (let i = 0; i < keys; i++) await writer.put(keyOf(i), valueOf(i));
    const gathering = client(c.seeds, true);
    // Warm the map (its first fetch), then one caller at a time: plain calls only.
    await gathering.get(keyOf(0));
    const lone = await callsDuring(node, async () => {
      for (let i = 0; i < 5; i++) expect((await gathering.get(keyOf(i)))?.value).toEqual(valueOf(i));
    });
    expect(lone).toEqual({ get: 5, put: 0, multi: 0 });

    const burst = (reader: StoreClient) => Promise.all(Array.from({ length: keys }, (_, i) => reader.get(keyOf(i))));
    let gathered: Awaited<ReturnType<typeof burst>> = [];
    const withGathering = await callsDuring(node, async () => (gathered = await burst(gathering)));
    expect(withGathering).toEqual({ get: 0, put: 0, multi: 1 });

    // Without gathering the first calls go at once (pointCallsInFlight 2) and the rest wait for them.
    const plainClient = client(c.seeds, false);
    await plainClient.get(keyOf(0));
    let ungathered: Awaited<ReturnType<typeof burst>> = [];
    const without = await callsDuring(node, async () => (ungathered = await burst(plainClient)));
    expect(without.get).toBe(2);
    expect(gathered).toEqual(ungathered);
    gathered.forEach((r, i) => expect(r?.value).toEqual(valueOf(i)));
  }, 60_000);

  it('a burst of Puts, a failed CAS among them, goes as one Multi with each slot answered as its plain Put', async () => {
    const c = await oneNode();
    const node = c.nodes[0]!;
    const gathering = client(c.seeds, true);
    const first = await gathering.put(keyOf(100), valueOf(0));
    const outcomes: string[] = [];
    const calls = await callsDuring(node, () =>
      Promise.all(
        Array.from({ length: 16 }, (_, i) =>
          (i === 0 ? gathering.put(keyOf(100), valueOf(1), { expectedEtag: first.etag + 1000 }) : gathering.put(keyOf(100 + i), valueOf(i))).then(
            () => outcomes.push(`${i} ok`),
            (err: { code?: string; currentEtag?: number }) => outcomes.push(`${i} ${err.code} ${err.currentEtag === first.etag ? 'current' : String(err.currentEtag)}`),
          ),
        ),
      ),
    );
    expect(calls).toEqual({ get: 0, put: 0, multi: 1 });
    expect(outcomes).toContain('0 STORE_ETAG_MISMATCH current');
    expect(outcomes.filter((o) => o.endsWith(' ok'))).toHaveLength(15);
    for (let i = 1; i < 16; i++) expect((await gathering.get(keyOf(100 + i)))?.value).toEqual(valueOf(i));
    expect((await gathering.get(keyOf(100)))?.etag).toBe(first.etag);
  }, 60_000);

  it('the gateway answers a burst of 64 concurrent gRPC Gets and Puts as the TypeScript client reads them, in fewer node calls than ops', async () => {
    const c = await oneNode();
    const node = c.nodes[0]!;
    const direct = client(c.seeds, false);
    for (let i = 0; i < 32; i++) await direct.put(keyOf(200 + i), valueOf(i));
    const gateway = await GatewayProcess.start(c.seeds);
    cleanups.push(() => gateway.stop());
    type Unary<Req, Res> = (req: Req, cb: (err: ServiceError | null, res?: Res) => void) => void;
    const GatewayClient = makeGenericClientConstructor(grpcServiceDefinition(GATEWAY_SERVICE_DESC), 'Gateway');
    const gw = new GatewayClient(gateway.address, credentials.createInsecure()) as unknown as Client & { Get: Unary<unknown, GetResponse>; Put: Unary<unknown, PutResponse> };
    cleanups.push(() => gw.close());
    const call = <Res>(fn: (cb: (err: ServiceError | null, res?: Res) => void) => void): Promise<Res> => new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res!))));
    // Warm the gateway's map and channel.
    await call<GetResponse>((cb) => gw.Get(create(GetRequestSchema, { key: keyOf(200).bytes }), cb));
    let gets: GetResponse[] = [];
    let puts: PutResponse[] = [];
    const calls = await callsDuring(node, async () => {
      [gets, puts] = await Promise.all([
        Promise.all(Array.from({ length: 32 }, (_, i) => call<GetResponse>((cb) => gw.Get(create(GetRequestSchema, { key: keyOf(200 + i).bytes }), cb)))),
        Promise.all(Array.from({ length: 32 }, (_, i) => call<PutResponse>((cb) => gw.Put(create(PutRequestSchema, { key: keyOf(300 + i).bytes, value: valueOf(i) }), cb)))),
      ]);
    });
    // The gateway's client sends its batches as MultiStream requests (or Multi calls against a node without it).
    const batches = calls.multi + (calls.streamed ?? 0);
    expect(batches).toBeGreaterThan(0);
    expect(calls.get + calls.put + batches).toBeLessThan(64);
    for (let i = 0; i < 32; i++) {
      const read = await direct.get(keyOf(200 + i));
      expect(Buffer.from(gets[i]!.value)).toEqual(read!.value);
      expect(Number(gets[i]!.etag)).toBe(read!.etag);
      const written = await direct.get(keyOf(300 + i));
      expect(written?.value).toEqual(valueOf(i));
      expect(Number(puts[i]!.etag)).toBe(written!.etag);
    }
  }, 60_000);
});
