import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { create } from '@bufbuild/protobuf';
import { credentials, makeGenericClientConstructor, status, type Client, type ClientWritableStream, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpcServiceDefinition, GATEWAY_SERVICE_DESC } from '../../gateway/index.js';
import { BulkPutRequestSchema, GetRequestSchema, ScanRequestSchema, type BulkPutRequest, type GetResponse, type ScanResponse } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';
import { Key, StoreClient } from '../../store/index.js';
import { StoreCluster } from '../helpers/store-cluster.js';
import { GatewayProcess } from '../helpers/gateway-process.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';

const run = promisify(execFile);
type Call = (...a: unknown[]) => unknown;
type GatewayClient = Client & { Get: Call; BulkPut: Call; ScanAll: Call };
const GatewayGrpcClient = makeGenericClientConstructor(grpcServiceDefinition(GATEWAY_SERVICE_DESC), 'Gateway');

function get(client: GatewayClient, key: string): Promise<GetResponse> {
  return new Promise((resolve, reject) => client.Get(create(GetRequestSchema, { key: Buffer.from(key) }), (err: ServiceError | null, value?: GetResponse) => (err ? reject(err) : resolve(value!))));
}

async function gauge(metricsPort: number, name: string): Promise<number | undefined> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  return sampleValue(parsePrometheusText(await res.text()), name);
}

let cluster: StoreCluster;
let direct: StoreClient;

beforeAll(async () => {
  cluster = await StoreCluster.start({ nodes: 2, partitions: 4 });
  direct = new StoreClient({ seeds: cluster.seeds });
}, 120_000);

afterAll(async () => {
  direct?.close();
  await cluster?.close();
});

describe('gateway limits and store restarts, through a real gateway process', () => {
  it('past --max-in-flight and --max-waiting a call gets RESOURCE_EXHAUSTED (gRPC) / 429 (JSON); the waiting call is served once a slot frees', async () => {
    const gateway = await GatewayProcess.start(cluster.seeds, ['--max-in-flight', '1', '--max-waiting', '1', '--metrics-port', '0']);
    const metricsPort = gateway.ready.metricsPort as number;
    const client = new GatewayGrpcClient(gateway.address, credentials.createInsecure()) as unknown as GatewayClient;
    try {
      await direct.put(Key.fromBytes(Buffer.from('limits:a')), Buffer.from('A'));
      // An open BulkPut holds the one slot for as long as its stream is open.
      let bulkDone!: Promise<void>;
      const bulk = await new Promise<ClientWritableStream<BulkPutRequest>>((resolveCall) => {
        bulkDone = new Promise<void>((resolve, reject) => {
          resolveCall(client.BulkPut((err: ServiceError | null) => (err ? reject(err) : resolve())) as ClientWritableStream<BulkPutRequest>);
        });
      });
      bulk.write(create(BulkPutRequestSchema, { rows: [{ key: Buffer.from('limits:bulk'), value: Buffer.from('B') }] }));
      await expect.poll(() => gauge(metricsPort, 'shardpipe_gateway_requests_in_flight'), { timeout: 20_000 }).toBe(1);
      const waiting = get(client, 'limits:a');
      await expect.poll(() => gauge(metricsPort, 'shardpipe_gateway_requests_waiting'), { timeout: 20_000 }).toBe(1);

      const refused = await get(client, 'limits:a').then(
        () => undefined,
        (err: ServiceError) => err,
      );
      expect(refused?.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(refused?.metadata.get('shardpipe-error-code')).toEqual(['GATEWAY_OVERLOADED']);
      expect(refused?.details).toContain('--max-in-flight 1');
      const { stdout } = await run('curl', ['-s', '-m', '30', '-w', '\n%{http_code}', '-H', 'Content-Type: application/json', '-d', JSON.stringify({ key: Buffer.from('limits:a').toString('base64') }), `http://${gateway.address}/shardpipe.gateway.v1.Gateway/Get`]);
      const [body, code] = stdout.split('\n');
      expect(code).toBe('429');
      expect(JSON.parse(body!)).toMatchObject({ code: 'resource_exhausted' });

      bulk.end();
      await bulkDone;
      expect(Buffer.from((await waiting).value).toString()).toBe('A');
      expect((await direct.get(Key.fromBytes(Buffer.from('limits:bulk'))))?.value.toString()).toBe('B');
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(sampleValue(parsePrometheusText(text), 'shardpipe_gateway_requests_total', { method: 'Get', code: 'RESOURCE_EXHAUSTED' })).toBe(2);
    } finally {
      client.close();
      await gateway.stop();
    }
  }, 60_000);

  it('a ScanAll that lasts longer than --retry-budget completes (the budget bounds each step, not the stream)', async () => {
    const rows = Array.from({ length: 40_000 }, (_, i) => ({ key: Buffer.from(`long-scan-${String(i).padStart(6, '0')}`), value: Buffer.alloc(100, i % 251) }));
    await direct.bulkPutAll([rows]);
    const gateway = await GatewayProcess.start(cluster.seeds, ['--retry-budget', '500ms']);
    const client = new GatewayGrpcClient(gateway.address, credentials.createInsecure()) as unknown as GatewayClient;
    try {
      // The gateway has its map and channels before the clock matters.
      await expect.poll(() => get(client, 'long-scan-000000').then(() => true, () => false), { timeout: 20_000 }).toBe(true);
      let n = 0;
      let slowed = false;
      const stream = client.ScanAll(create(ScanRequestSchema, { start: Buffer.from('long-scan-'), end: Buffer.from('long-scan.') })) as AsyncIterable<ScanResponse>;
      for await (const batch of stream) {
        n += batch.entries.length;
        if (!slowed) {
          // The scenario: a reader slower than the budget (here, twice the budget after the first batch).
          slowed = true;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
      expect(n).toBe(40_000);
    } finally {
      client.close();
      await gateway.stop();
    }
  }, 60_000);

  it('a store node SIGKILLed and restarted under a running gateway: gets keep succeeding (the outage is shorter than --retry-budget)', async () => {
    const map = await direct.map();
    const victim = cluster.nodes[0]!;
    // First characters 0-9 and a-z: keys in two partitions, on both nodes.
    const keys = Array.from({ length: 200 }, (_, i) => `${'0123456789abcdefghijklmnopqrstuvwxyz'[i % 36]}-restart-${i}`);
    for (const k of keys) await direct.put(Key.fromBytes(Buffer.from(k)), Buffer.from(`v-${k}`));
    const onVictim = (k: string): boolean => map.lookup(Buffer.from(k)).chain.some((r) => r.node === victim.address);
    expect(keys.filter(onVictim).length).toBeGreaterThan(0);
    expect(keys.filter((k) => !onVictim(k)).length).toBeGreaterThan(0);
    const gateway = await GatewayProcess.start(cluster.seeds, ['--retry-budget', '30s']);
    const client = new GatewayGrpcClient(gateway.address, credentials.createInsecure()) as unknown as GatewayClient;
    let phase: 'before' | 'down' | 'after' = 'before';
    let stop = false;
    let beforeKill = 0;
    let afterRestart = 0;
    const errors: string[] = [];
    const servedDuringOutage: string[] = [];
    try {
      const callers = Array.from({ length: 4 }, async (_, c) => {
        for (let i = c; !stop; i += 4) {
          const key = keys[i % keys.length]!;
          const startedIn = phase;
          try {
            const got = await get(client, key);
            expect(Buffer.from(got.value).toString()).toBe(`v-${key}`);
            // Begun before the node was back and answered after: held through the outage.
            if (startedIn !== 'after' && phase === 'after' && onVictim(key)) servedDuringOutage.push(key);
            if (startedIn === 'before') beforeKill++;
            if (startedIn === 'after') afterRestart++;
          } catch (err) {
            errors.push(`${key}: ${(err as Error).message}`);
          }
        }
      });
      await expect.poll(() => beforeKill, { timeout: 20_000 }).toBeGreaterThan(100);
      phase = 'down';
      await victim.kill();
      await victim.start();
      phase = 'after';
      await expect.poll(() => afterRestart, { timeout: 60_000 }).toBeGreaterThan(400);
      stop = true;
      await Promise.all(callers);
      expect(errors).toEqual([]);
      // Gets to the killed node's partitions that were in flight while it was down were held and served after its restart.
      expect(servedDuringOutage.length).toBeGreaterThan(0);
    } finally {
      stop = true;
      client.close();
      await gateway.stop();
    }
  }, 120_000);

  it("a Get held for a node that is down ends by the caller's deadline, shorter than --retry-budget, and frees its slot then", async () => {
    const map = await direct.map();
    const victim = cluster.nodes[0]!;
    const key = Array.from({ length: 36 }, (_, i) => `${'0123456789abcdefghijklmnopqrstuvwxyz'[i]}-deadline`).find((k) => map.lookup(Buffer.from(k)).chain.some((r) => r.node === victim.address))!;
    await direct.put(Key.fromBytes(Buffer.from(key)), Buffer.from('D'));
    const gateway = await GatewayProcess.start(cluster.seeds, ['--retry-budget', '30s', '--max-in-flight', '1', '--max-waiting', '0', '--metrics-port', '0']);
    const metricsPort = gateway.ready.metricsPort as number;
    const client = new GatewayGrpcClient(gateway.address, credentials.createInsecure()) as unknown as GatewayClient;
    try {
      expect(Buffer.from((await get(client, key)).value).toString()).toBe('D');
      await victim.kill();
      const started = Date.now();
      const err = await new Promise<ServiceError | undefined>((resolve) =>
        client.Get(create(GetRequestSchema, { key: Buffer.from(key) }), { deadline: Date.now() + 1000 }, (e: ServiceError | null) => resolve(e ?? undefined)),
      );
      expect(err?.code).toBe(status.DEADLINE_EXCEEDED);
      // The store call ends with the caller's deadline, not the 30 s budget: the one slot is free again.
      await expect.poll(() => gauge(metricsPort, 'shardpipe_gateway_requests_in_flight'), { timeout: 5000, interval: 50 }).toBe(0);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      client.close();
      await gateway.stop();
      await victim.start();
    }
  }, 60_000);
});
