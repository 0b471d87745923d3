import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Client, Metadata, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { Key, PartitionMap, StoreClient, StoreError } from '../../store/index.js';
import { METADATA_ERROR_CODE } from '../../store/grpc-errors.js';
import { MultiRequest, MultiResponse } from '../../store/proto/gen/shardpipe/store/v1/store.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';
import { NodeProcess, StoreCluster } from '../helpers/store-cluster.js';
import { makeTempDir } from '../helpers/temp-dir.js';

// MultiStream: the thick client's point operations as messages of one long-lived stream per node
// (store/multi-stream.ts, store/multi-stream-channel.ts). Real node processes throughout; counts
// from the node's /metrics.

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function oneNode(extraArgs: string[] = []): Promise<StoreCluster> {
  const c = await StoreCluster.start({ nodes: 1, partitions: 4, extraArgs: ['--metrics-port', '0', ...extraArgs] });
  cleanups.push(() => c.close());
  return c;
}

function client(seeds: string[], options: Partial<ConstructorParameters<typeof StoreClient>[0]> = {}): StoreClient {
  const c = new StoreClient({ seeds, operationTimeoutMs: 20_000, ...options });
  cleanups.push(() => c.close());
  return c;
}

const keyOf = (i: number): Key => Key.fromBytes(Buffer.from(`stream-${String(i).padStart(4, '0')}`));
const valueOf = (i: number): Buffer => Buffer.from(`value-${i}`);

async function metrics(node: NodeProcess): Promise<ReturnType<typeof parsePrometheusText>> {
  return parsePrometheusText(await (await fetch(`http://127.0.0.1:${String(node.ready.metricsPort)}/metrics`)).text());
}

/** Calls (or MultiStream requests) of each point method the node answered OK. */
async function pointCounts(node: NodeProcess): Promise<Record<'Get' | 'Put' | 'Delete' | 'Multi' | 'MultiStream', number>> {
  const samples = await metrics(node);
  const count = (method: string): number => sampleValue(samples, 'shardpipe_store_rpc_total', { method, code: 'OK' }) ?? 0;
  return { Get: count('Get'), Put: count('Put'), Delete: count('Delete'), Multi: count('Multi'), MultiStream: count('MultiStream') };
}

function delta<T extends Record<string, number>>(after: T, before: T): T {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k]!])) as T;
}

describe('MultiStream: point operations pipelined on one stream per node', () => {
  it('sends lone and concurrent gets, puts, CAS and deletes as MultiStream requests, each answered as its plain call is', async () => {
    const c = await oneNode();
    const node = c.nodes[0]!;
    const streamed = client(c.seeds);
    const plain = client(c.seeds, { pointStreams: false });
    await plain.map();
    await streamed.map();
    const before = await pointCounts(node);
    // A lone put and get, then 32 of each at once, a failed CAS and a delete among them.
    const lone = await streamed.put(keyOf(0), valueOf(0));
    expect((await streamed.get(keyOf(0)))?.etag).toBe(lone.etag);
    const puts = await Promise.all(Array.from({ length: 32 }, (_, i) => streamed.put(keyOf(100 + i), valueOf(i))));
    const [gets, cas, deleted] = await Promise.all([
      Promise.all(Array.from({ length: 32 }, (_, i) => streamed.get(keyOf(100 + i)))),
      streamed.put(keyOf(100), valueOf(999), { expectedEtag: puts[0]!.etag + 1000 }).then(
        () => undefined,
        (err: unknown) => err,
      ),
      streamed.delete(keyOf(101)),
    ]);
    const after = await pointCounts(node);
    const calls = delta(after, before);
    // No op went as a call of its own or as a Multi: all as requests of the stream, fewer than the ops.
    expect({ Get: calls.Get, Put: calls.Put, Delete: calls.Delete, Multi: calls.Multi }).toEqual({ Get: 0, Put: 0, Delete: 0, Multi: 0 });
    expect(calls.MultiStream).toBeGreaterThan(2);
    expect(calls.MultiStream).toBeLessThan(2 + 32 + 34);

    // Each answer is what the plain calls read back.
    for (let i = 0; i < 32; i++) {
      const read = await plain.get(keyOf(100 + i));
      // Key 101 was deleted beside the gets (reads and writes travel on streams of their own).
      if (i === 1) {
        expect(read).toBeUndefined();
        continue;
      }
      expect(gets[i]!.value).toEqual(valueOf(i));
      expect(gets[i]!.etag).toBe(puts[i]!.etag);
      expect(read?.etag).toBe(puts[i]!.etag);
    }
    expect(deleted).toBe(true);
    expect(cas).toBeInstanceOf(StoreError);
    expect((cas as StoreError).code).toBe('STORE_ETAG_MISMATCH');
    expect((cas as StoreError).currentEtag).toBe(puts[0]!.etag);
    expect((await plain.get(keyOf(100)))?.value).toEqual(valueOf(0));
    // Every request's bytes were given back to the node's budget once answered, with the stream still open.
    expect(sampleValue(await metrics(node), 'shardpipe_store_inflight_bytes', {})).toBe(0);
  }, 60_000);

  it('a raw MultiStream: requests answered in the order sent, slot by slot; a request of the wrong shape ends the stream with INVALID_ARGUMENT and our code', async () => {
    const c = await oneNode();
    const map = await client(c.seeds).map();
    const raw = new Client(c.seeds[0]!, credentials.createInsecure());
    cleanups.push(() => raw.close());
    const id = (b: Buffer): Buffer => b;
    const stream = raw.makeBidiStreamRequest('/shardpipe.store.v1.Store/MultiStream', id, id, new Metadata(), {});
    const answers: MultiResponse[] = [];
    stream.on('data', (b: Buffer) => answers.push(MultiResponse.decode(b)));
    const ended = new Promise<ServiceError | undefined>((resolve) => {
      stream.on('error', (err: ServiceError) => resolve(err));
      stream.on('end', () => resolve(undefined));
    });
    const send = (m: MultiRequest): boolean => stream.write(Buffer.from(MultiRequest.encode(m).finish()));
    const mapVersion = map.version;
    send({ ops: [{ put: { mapVersion, key: keyOf(7).bytes, value: valueOf(7), expectedEtag: undefined, ttlMs: 0 } }] });
    // Answered in order, but run as they come: the get below must not overtake the put it reads.
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    send({ ops: [{ get: { mapVersion, key: keyOf(7).bytes, fields: [] } }, { put: { mapVersion, key: keyOf(8).bytes, value: valueOf(8), expectedEtag: undefined, ttlMs: 2 ** 52 } }] });
    send({ ops: [{ get: { mapVersion, key: keyOf(7).bytes, fields: [] }, delete: { mapVersion, key: keyOf(7).bytes, expectedEtag: undefined } }] });
    const error = await ended;
    // The first two answered in order (the out-of-range TTL in its own slot), the third ended the stream.
    expect(answers).toHaveLength(2);
    expect(answers[0]!.results[0]!.code).toBe(status.OK);
    const etag = answers[0]!.results[0]!.put!.etag;
    expect(answers[1]!.results[0]!.get!.entry!.etag).toBe(etag);
    expect(answers[1]!.results[1]!.code).toBe(status.INVALID_ARGUMENT);
    expect(answers[1]!.results[1]!.message).toContain('PutRequest.ttl_ms');
    expect(error?.code).toBe(status.INVALID_ARGUMENT);
    expect(error?.metadata.get(METADATA_ERROR_CODE)[0]).toBe('STORE_INVALID_ARGUMENT');
    expect(error?.details).toContain('MultiRequest.ops[0] sets 2 of get, put, delete');
  }, 60_000);

  it('falls back to calls against a node without MultiStream (fault injection: SHARDPIPE_FAULT_INJECTION_NO_MULTI)', async () => {
    const tmp = await makeTempDir();
    cleanups.push(() => tmp.remove());
    const address = `127.0.0.1:${await findFreePort()}`;
    const mapFile = join(tmp.path, 'map.json');
    await writeFile(mapFile, JSON.stringify(PartitionMap.evenlySplit(1, [address], 2).toJson()));
    const node = new NodeProcess(address, join(tmp.path, 'node'), mapFile, ['--metrics-port', '0'], { SHARDPIPE_FAULT_INJECTION_NO_MULTI: '1' });
    cleanups.push(() => node.kill());
    await node.start();
    const c = client([address]);
    const puts = await Promise.all(Array.from({ length: 16 }, (_, i) => c.put(keyOf(i), valueOf(i))));
    const gets = await Promise.all(Array.from({ length: 16 }, (_, i) => c.get(keyOf(i))));
    for (let i = 0; i < 16; i++) expect(gets[i]?.etag).toBe(puts[i]!.etag);
    const counts = await pointCounts(node);
    expect(counts.Put).toBe(16);
    expect(counts.Get).toBe(16);
  }, 60_000);

  it('a node that stops answering (fault injection: SIGSTOP) fails the stream\'s requests at their deadline; once it answers again the next ops open a new stream', async () => {
    const c = await oneNode();
    const node = c.nodes[0]!;
    const streamed = client(c.seeds, { rpcDeadlineMs: 300, operationTimeoutMs: 1000 });
    await streamed.put(keyOf(1), valueOf(1));
    node.child!.kill('SIGSTOP');
    let resumed = false;
    cleanups.push(() => {
      if (!resumed) node.child?.kill('SIGCONT');
    });
    const started = performance.now();
    const failed = await streamed.get(keyOf(1)).then(
      () => undefined,
      (err: unknown) => err,
    );
    const ms = performance.now() - started;
    expect(failed).toBeInstanceOf(StoreError);
    expect(['STORE_UNAVAILABLE', 'STORE_DEADLINE_EXCEEDED']).toContain((failed as StoreError).code);
    // Within the operation's budget (1 s) and the last attempt's deadline, not hanging on the stream.
    expect(ms).toBeLessThan(3000);
    node.child!.kill('SIGCONT');
    resumed = true;
    expect((await streamed.get(keyOf(1)))?.value).toEqual(valueOf(1));
  }, 60_000);

  it('a node stopping with clients\' streams open ends them and exits well within its shutdown grace period', async () => {
    const c = await oneNode(['--shutdown-grace', '20s']);
    const node = c.nodes[0]!;
    const streamed = client(c.seeds, { operationTimeoutMs: 500 });
    await streamed.put(keyOf(2), valueOf(2));
    // Keep both streams busy while the node stops.
    let stop = false;
    const load = (async () => {
      while (!stop) await Promise.all([streamed.get(keyOf(2)), streamed.put(keyOf(3), valueOf(3))]).catch(() => undefined);
    })();
    await streamed.get(keyOf(2));
    const started = performance.now();
    const code = await node.stop();
    const ms = performance.now() - started;
    stop = true;
    await load;
    expect(code).toBe(0);
    // Without ending the streams, the stop waits out the 20 s grace period.
    expect(ms).toBeLessThan(10_000);
  }, 60_000);
});
