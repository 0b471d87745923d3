import { fromBinary, toJson, type DescMessage } from '@bufbuild/protobuf';
import { afterEach, describe, expect, it } from 'vitest';
import { Key, StoreClient, STORE_SERVICE_DESC } from '../../store/index.js';
import { GetResponse, MultiResponse, PutResponse } from '../../store/proto/gen/shardpipe/store/v1/store.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';
import { StoreCluster } from '../helpers/store-cluster.js';

// The node writes Get, Put and Multi answers with hand codecs (store/point-codec.ts) and the thick
// client reads them with the same. Old clients use the generated code, other clients their own
// protobuf library: against a real node, requests from an independent encoder are understood, and
// every answer is byte for byte what the generated encoder writes for it — what nodes sent before.

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function output(method: string): DescMessage {
  return STORE_SERVICE_DESC.methods.find((m) => m.name === method)!.output;
}

/** The answer's bytes, checked to be the generated encoder's for the message they decode to. */
function canonical<T>(bytes: Buffer, generated: { decode(b: Uint8Array): T; encode(m: T): { finish(): Uint8Array } }): T {
  const message = generated.decode(bytes);
  expect(bytes).toEqual(Buffer.from(generated.encode(message).finish()));
  return message;
}

describe('point codecs on the wire', () => {
  it('a node answers Get, Put and Multi from an independent encoder with the bytes the generated encoder writes; the thick client reads the same records', async () => {
    const c = await StoreCluster.start({ nodes: 1, partitions: 2 });
    cleanups.push(() => c.close());
    const address = c.seeds[0]!;
    const raw = new RawStoreClient(address);
    cleanups.push(() => raw.close());
    const client = new StoreClient({ seeds: c.seeds, operationTimeoutMs: 20_000 });
    cleanups.push(() => client.close());
    const mapVersion = BigInt((await client.map()).version);

    // Put with and without TTL, binary key and empty value included.
    const keys = [Buffer.from('alpha'), Buffer.from([0, 255, 1, 254]), Buffer.from('zeta-with-ttl')];
    const values = [Buffer.from('one'), Buffer.alloc(0), Buffer.from('x'.repeat(300))];
    const puts = [];
    for (let i = 0; i < keys.length; i++) {
      const r = await raw.call('Put', { mapVersion, key: keys[i]!, value: values[i]!, ttlMs: i === 2 ? 3_600_000n : 0n });
      if (!r.ok) throw new Error(`Put failed: ${r.error.message}`);
      const put = canonical(r.bytes, PutResponse);
      // An independent decoder reads the same answer.
      // The head's write time (a chain of one: no forward, no hops).
      expect(toJson(output('Put'), fromBinary(output('Put'), r.bytes))).toEqual({ etag: String(put.etag), updatedAtMs: String(put.updatedAtMs), ...(i === 2 ? { expiresAtMs: String(put.expiresAtMs) } : {}), timing: { writeMs: put.timing!.writeMs } });
      expect(put.etag).toBeGreaterThan(0);
      expect(put.expiresAtMs > 0).toBe(i === 2);
      puts.push(put);
    }

    for (let i = 0; i < keys.length; i++) {
      const r = await raw.call('Get', { mapVersion, key: keys[i]! });
      if (!r.ok) throw new Error(`Get failed: ${r.error.message}`);
      const got = canonical(r.bytes, GetResponse);
      expect(got.found).toBe(true);
      expect(got.entry).toEqual({ key: keys[i], value: values[i], etag: puts[i]!.etag, updatedAtMs: puts[i]!.updatedAtMs, expiresAtMs: puts[i]!.expiresAtMs });
      // The thick client (hand codecs both ways) reads the same record.
      const record = await client.get(Key.fromBytes(keys[i]!));
      expect(record).toMatchObject({ value: values[i], etag: puts[i]!.etag, updatedAtMs: puts[i]!.updatedAtMs, expiresAtMs: puts[i]!.expiresAtMs });
    }

    // A Multi of every kind, with a failed CAS, a miss and a malformed op in their own slots.
    const m = await raw.call('Multi', {
      ops: [
        { get: { mapVersion, key: keys[0]! } },
        { get: { mapVersion, key: Buffer.from('absent') } },
        { put: { mapVersion, key: keys[0]!, value: Buffer.from('two'), expectedEtag: BigInt(puts[0]!.etag) } },
        { put: { mapVersion, key: keys[1]!, value: Buffer.from('nope'), expectedEtag: 1n } },
        { delete: { mapVersion, key: keys[2]! } },
        { get: { mapVersion, key: Buffer.alloc(0) } },
      ],
    });
    if (!m.ok) throw new Error(`Multi failed: ${m.error.message}`);
    const results = canonical(m.bytes, MultiResponse).results;
    expect(results.map((r) => r.code)).toEqual([0, 0, 0, 10, 0, 3]);
    expect(results[0]!.get?.entry?.value).toEqual(values[0]);
    expect(results[1]!.get).toEqual({ found: false, entry: undefined });
    expect(results[2]!.put!.etag).toBeGreaterThan(puts[0]!.etag);
    expect(results[3]).toMatchObject({ errorCode: 'STORE_ETAG_MISMATCH', currentEtag: puts[1]!.etag });
    expect(results[4]!.delete).toEqual({ deleted: true, timing: { queueMs: 0, writeMs: expect.any(Number), fsyncMs: 0, forwardMs: 0, hops: [] } });
    expect(results[5]!.errorCode).toBe('STORE_INVALID_KEY');
    expect(results[5]!.message).toMatch(/key/);
    // An independent decoder reads the slots the same way.
    const json = toJson(output('Multi'), fromBinary(output('Multi'), m.bytes)) as { results: Array<{ code?: number; errorCode?: string }> };
    expect(json.results.map((r) => r.code ?? 0)).toEqual([0, 0, 0, 10, 0, 3]);
    expect(json.results[3]!.errorCode).toBe('STORE_ETAG_MISMATCH');

    // Concurrent thick-client gets (merged into Multi calls as they overlap), hand codecs both ways.
    const after = await Promise.all(keys.map((k) => client.get(Key.fromBytes(k))));
    expect(after.map((r) => r?.value.toString('latin1'))).toEqual(['two', '', undefined]);
  }, 60_000);

  it('a request the hand decoder leaves to the generated one (a repeated field) is answered as before', async () => {
    const c = await StoreCluster.start({ nodes: 1, partitions: 1 });
    cleanups.push(() => c.close());
    const raw = new RawStoreClient(c.seeds[0]!);
    cleanups.push(() => raw.close());
    const client = new StoreClient({ seeds: c.seeds, operationTimeoutMs: 20_000 });
    cleanups.push(() => client.close());
    await client.put(Key.fromUtf8('second'), Buffer.from('v'));
    const version = (await client.map()).version;
    // GetRequest with key set twice: protobuf's last value wins, so this reads `second`.
    const bytes = Buffer.concat([Buffer.from([8, version]), Buffer.from([18, 5]), Buffer.from('first'), Buffer.from([18, 6]), Buffer.from('second')]);
    const r = await raw.callBytes('Get', bytes);
    if (!r.ok) throw new Error(`Get failed: ${r.error.message}`);
    expect(GetResponse.decode(r.bytes).entry?.key.toString()).toBe('second');
  }, 60_000);
});
