import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { Key, MAX_MULTI_OPS, PartitionMap, StoreClient, StoreError, type StoredRecord } from '../../store/index.js';
import { MultiResponse, type MultiResult } from '../../store/proto/gen/shardpipe/store/v1/store.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';
import { NodeProcess, StoreCluster } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// Multi: concurrent point operations merged by the thick client into one call per node, each
// answered in its own slot. Real node processes throughout.

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function cluster(nodes: number, partitions: number, extraArgs: string[] = ['--metrics-port', '0']): Promise<StoreCluster> {
  const c = await StoreCluster.start({ nodes, partitions, extraArgs });
  cleanups.push(() => c.close());
  return c;
}

// Multi calls, not MultiStream messages (test/integration/multi-stream.test.ts): the path of traced ops and of nodes before MultiStream.
function client(seeds: string[], pointCallsInFlight = 1): StoreClient {
  const c = new StoreClient({ seeds, pointCallsInFlight, operationTimeoutMs: 20_000, pointStreams: false });
  cleanups.push(() => c.close());
  return c;
}

function raw(address: string): RawStoreClient {
  const r = new RawStoreClient(address);
  cleanups.push(() => r.close());
  return r;
}

/** Multi calls a node has answered, by gRPC status (`shardpipe_store_rpc_total`). */
function multiCalls(node: NodeProcess): Promise<number> {
  return rpcCalls(node, 'Multi');
}

/** Calls of `method` a node has answered with OK (`shardpipe_store_rpc_total`). */
async function rpcCalls(node: NodeProcess, method: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${String(node.ready.metricsPort)}/metrics`)).text();
  return sampleValue(parsePrometheusText(text), 'shardpipe_store_rpc_total', { method, code: 'OK' }) ?? 0;
}

async function multi(address: string, ops: unknown[]): Promise<MultiResult[]> {
  const r = await raw(address).call('Multi', { ops } as never);
  if (!r.ok) throw new Error(`Multi failed: ${r.error.message}`);
  return MultiResponse.decode(r.bytes).results;
}

/** What a step of a key's chain answered, with etags replaced by the step that first produced them. */
type Step = string;

/**
 * A chain of point operations on one key that uses every outcome: put, get, CAS put with the
 * right and a wrong etag, CAS delete with a wrong etag, put with TTL, get, delete, get, create-only put.
 * Each answer is written with etags as references to the step that produced them, so a run with
 * other etags (other interleavings across keys) but the same per-key answers reads the same.
 */
async function chain(c: StoreClient, key: Key): Promise<Step[]> {
  const etags = new Map<number, number>();
  const ref = (etag: number): string => {
    if (!etags.has(etag)) etags.set(etag, etags.size);
    return `e${etags.get(etag)}`;
  };
  const mine = `${key.bytes.toString('latin1')}:`;
  // A value is this key's prefix and a step label: a value of another key would show whole.
  const rec = (r: StoredRecord | undefined): string => (r === undefined ? 'absent' : `${r.value.toString('latin1').replace(mine, '')}@${ref(r.etag)}${r.expiresAtMs > 0 ? '+ttl' : ''}`);
  const err = async (p: Promise<unknown>): Promise<string> => {
    try {
      return `ok ${String(await p)}`;
    } catch (e) {
      const s = e as StoreError;
      return `${s.code}${s.currentEtag === undefined ? '' : ` current ${s.currentEtag === 0 ? '0' : ref(s.currentEtag)}`}`;
    }
  };
  const out: Step[] = [];
  const v = (s: string): Buffer => Buffer.from(`${mine}${s}`, 'latin1');
  const first = await c.put(key, v('1'));
  out.push(`put ${rec(first)}`);
  out.push(`get ${rec(await c.get(key))}`);
  const second = await c.put(key, v('2'), { expectedEtag: first.etag });
  out.push(`cas ${rec(second)}`);
  out.push(`stale cas ${await err(c.put(key, v('x'), { expectedEtag: first.etag }))}`);
  out.push(`stale cas delete ${await err(c.delete(key, { expectedEtag: first.etag }))}`);
  out.push(`put ttl ${rec(await c.put(key, v('3'), { ttlMs: 3_600_000 }))}`);
  out.push(`get ${rec(await c.get(key))}`);
  out.push(`delete ${await err(c.delete(key))}`);
  out.push(`get ${rec(await c.get(key))}`);
  out.push(`delete again ${await err(c.delete(key))}`);
  out.push(`create ${rec(await c.put(key, v('4'), { expectedEtag: 0 }))}`);
  out.push(`create again ${await err(c.put(key, v('y'), { expectedEtag: 0 }))}`);
  return out;
}

const keyOf = (prefix: string, i: number): Key => Key.fromBytes(Buffer.from([(i * 37) % 256, i % 256, ...Buffer.from(`${prefix}-${i}`)]));

describe('Multi: coalesced point operations', () => {
  it('answers a mixed concurrent workload exactly as plain sequential calls do, merging it into Multi calls', async () => {
    const c = await cluster(2, 4);
    const keys = 48;
    const sequential = client(c.seeds);
    const before = await Promise.all(c.nodes.map(multiCalls));
    const plain: Step[][] = [];
    for (let i = 0; i < keys; i++) plain.push(await chain(sequential, keyOf('seq', i)));
    const afterSequential = await Promise.all(c.nodes.map(multiCalls));
    // One caller at a time: every op went as its plain call.
    expect(afterSequential).toEqual(before);

    const concurrent = client(c.seeds);
    const merged = await Promise.all(Array.from({ length: keys }, (_, i) => chain(concurrent, keyOf('con', i))));
    expect(merged).toEqual(plain);
    const afterConcurrent = await Promise.all(c.nodes.map(multiCalls));
    // Both nodes took Multi calls, and far fewer calls than ops (12 ops per key).
    for (let n = 0; n < c.nodes.length; n++) expect(afterConcurrent[n]! - afterSequential[n]!).toBeGreaterThan(0);
    expect(plain[0]).toContain('stale cas STORE_ETAG_MISMATCH current e1');
    // The concurrent run's data reads back as the sequential run's.
    for (let i = 0; i < keys; i++) {
      expect((await sequential.get(keyOf('con', i)))?.value.toString('latin1')).toBe(`${keyOf('con', i).bytes.toString('latin1')}:4`);
    }
  }, 60_000);

  it('with two calls in flight, 32 concurrent callers share Multi calls of even size rather than one plain call per op beside each Multi', async () => {
    const c = await cluster(1, 4);
    const writer = client(c.seeds);
    const keys = Array.from({ length: 64 }, (_, i) => keyOf('even', i));
    for (const key of keys) await writer.put(key, Buffer.from(`v-${key.bytes.toString('hex')}`));
    const node = c.nodes[0]!;
    const [getsBefore, multisBefore] = [await rpcCalls(node, 'Get'), await multiCalls(node)];
    const reader = client(c.seeds, 2);
    const rounds = 20;
    await Promise.all(
      Array.from({ length: 32 }, async (_, w) => {
        for (let r = 0; r < rounds; r++) {
          const key = keys[(w * 7 + r) % keys.length]!;
          expect((await reader.get(key))?.value.toString()).toBe(`v-${key.bytes.toString('hex')}`);
        }
      }),
    );
    const plainGets = (await rpcCalls(node, 'Get')) - getsBefore;
    const multis = (await multiCalls(node)) - multisBefore;
    // Before, the callers split into one that went alone and 31 that went together, round after
    // round: as many plain Gets as Multis. Even shares leave plain calls to the start and the end.
    expect(multis).toBeGreaterThan(0);
    expect(plainGets + multis).toBeLessThan((32 * rounds) / 8);
    expect(plainGets).toBeLessThan(multis / 3);
  }, 60_000);

  it('a failed CAS in a Multi fails only its own slot, with the current etag; the other writes are applied in the same batch', async () => {
    const c = await cluster(1, 1);
    const node = c.seeds[0]!;
    const reader = client(c.seeds);
    const mapVersion = BigInt((await reader.map()).version);
    const existing = await reader.put(Key.fromUtf8('k-existing'), Buffer.from('old'));
    const results = await multi(node, [
      { put: { mapVersion, key: Buffer.from('k-new'), value: Buffer.from('a'), expectedEtag: 0n } },
      { put: { mapVersion, key: Buffer.from('k-existing'), value: Buffer.from('b'), expectedEtag: BigInt(existing.etag + 1000) } },
      { put: { mapVersion, key: Buffer.from('k-plain'), value: Buffer.from('c') } },
      { delete: { mapVersion, key: Buffer.from('k-existing'), expectedEtag: 5n } },
      { get: { mapVersion, key: Buffer.from('k-existing') } },
    ]);
    expect(results.map((r) => r.code)).toEqual([status.OK, status.ABORTED, status.OK, status.ABORTED, status.OK]);
    expect(results[1]).toMatchObject({ errorCode: 'STORE_ETAG_MISMATCH', currentEtag: existing.etag });
    expect(results[1]!.message).toContain(`expected ${existing.etag + 1000}, current ${existing.etag}`);
    expect(results[3]).toMatchObject({ errorCode: 'STORE_ETAG_MISMATCH', currentEtag: existing.etag });
    expect(results[4]!.get?.entry?.value.toString()).toBe('old');
    // The two writes that passed share one batch: consecutive etags.
    const [a, b] = [results[0]!.put!.etag, results[2]!.put!.etag];
    expect(b).toBe(a + 1);
    expect((await reader.get(Key.fromUtf8('k-new')))?.value.toString()).toBe('a');
    expect((await reader.get(Key.fromUtf8('k-plain')))?.value.toString()).toBe('c');
    expect(await reader.get(Key.fromUtf8('k-existing'))).toMatchObject({ value: Buffer.from('old'), etag: existing.etag });
  }, 30_000);

  it('answers a key the node does not own, and a stale map version, in their own slots; the thick client re-routes only those after a map change', async () => {
    const tmp = await makeTempDir();
    cleanups.push(() => tmp.remove());
    const addresses = [`127.0.0.1:${await findFreePort()}`, `127.0.0.1:${await findFreePort()}`];
    // Partitions 0 and 2 on A, 1 and 3 on B.
    const v1 = PartitionMap.evenlySplit(1, addresses, 4);
    const mapFile = join(tmp.path, 'map.json');
    await writeFile(mapFile, JSON.stringify(v1.toJson()));
    const nodes = addresses.map((a, i) => new NodeProcess(a, join(tmp.path, `node-${i}`), mapFile, ['--metrics-port', '0']));
    for (const n of nodes) cleanups.push(() => n.kill());
    await Promise.all(nodes.map((n) => n.start()));
    const [a, b] = addresses as [string, string];
    const low = (i: number): Key => Key.fromBytes(Buffer.from([0x10, i]));
    const high = (i: number): Key => Key.fromBytes(Buffer.from([0xc0, i]));

    // Raw: a Multi to A holding a key of B's partition and one with an older map version.
    const results = await multi(a, [
      { put: { mapVersion: 1n, key: low(0).bytes, value: Buffer.from('mine') } },
      { put: { mapVersion: 1n, key: high(0).bytes, value: Buffer.from('not mine') } },
      { get: { mapVersion: 0n, key: low(0).bytes } },
    ]);
    expect(results.map((r) => r.errorCode)).toEqual(['', 'STORE_NOT_OWNER', 'STORE_STALE_MAP']);
    expect(results[1]).toMatchObject({ code: status.FAILED_PRECONDITION, mapVersion: 1 });
    expect(results[1]!.message).toContain(`on ${b}, not to ${a}`);
    expect(results[2]).toMatchObject({ code: status.FAILED_PRECONDITION, mapVersion: 1 });

    // The client learns v1, then v2 moves the (empty) last partition from B to A.
    const stale = client(addresses);
    await stale.map();
    const v2 = PartitionMap.create(2, v1.partitions.map((p) => (p.id === 3 ? { id: p.id, start: p.start, end: p.end, node: a } : p)));
    const admin = client(addresses);
    expect((await admin.installMap(v2)).every((r) => r.installed)).toBe(true);
    const multisBefore = await multiCalls(nodes[0]!);
    // Concurrent puts routed by v1: the low ones go to A in Multi calls (stale-map slots), the high ones to B.
    const written = await Promise.all(Array.from({ length: 40 }, (_, i) => stale.put(i % 2 === 0 ? low(i) : high(i), Buffer.from(`v${i}`))));
    expect(written).toHaveLength(40);
    expect(await multiCalls(nodes[0]!)).toBeGreaterThan(multisBefore);
    expect((await stale.map()).version).toBe(2);
    const onA = await admin.stats();
    const count = (node: string): number => {
      const s = onA.find((x) => x.node === node)!;
      if (!s.result.ok) throw s.result.error;
      return s.result.partitions.reduce((sum, p) => sum + p.approxCount, 0);
    };
    // Everything landed where v2 says: all 40 keys on A (low(0) the raw call wrote was overwritten).
    expect(count(a)).toBe(40);
    for (let i = 0; i < 40; i++) expect((await admin.get(i % 2 === 0 ? low(i) : high(i)))?.value.toString()).toBe(`v${i}`);
  }, 60_000);

  it('falls back to plain calls against a node without Multi (fault injection: SHARDPIPE_FAULT_INJECTION_NO_MULTI)', async () => {
    const tmp = await makeTempDir();
    cleanups.push(() => tmp.remove());
    const address = `127.0.0.1:${await findFreePort()}`;
    const mapFile = join(tmp.path, 'map.json');
    await writeFile(mapFile, JSON.stringify(PartitionMap.evenlySplit(1, [address], 2).toJson()));
    const node = new NodeProcess(address, join(tmp.path, 'node'), mapFile, ['--metrics-port', '0'], { SHARDPIPE_FAULT_INJECTION_NO_MULTI: '1' });
    cleanups.push(() => node.kill());
    await node.start();

    const direct = await raw(address).call('Multi', { ops: [{ get: { mapVersion: 1n, key: Buffer.from('k') } }] } as never);
    expect(direct.ok).toBe(false);
    if (!direct.ok) expect(direct.error.code).toBe(status.UNIMPLEMENTED);

    const c = client([address]);
    const keys = Array.from({ length: 16 }, (_, i) => keyOf('old', i));
    const answers = await Promise.all(keys.map((k) => chain(c, k)));
    const reference = await chain(client([address]), keyOf('old-seq', 0));
    for (const a of answers) expect(a).toEqual(reference);
    expect(await multiCalls(node)).toBe(0);
    expect(node.stderr).toContain('fault injection: serving the Store service without Multi');
  }, 60_000);

  it('sends the ops of a Multi over the node\'s receive limit as plain calls (a node with a tiny --max-batch-bytes)', async () => {
    // Receive limit: --max-batch-bytes + 1 MiB, just over 1 MiB; a Multi of 1 MiB of values plus framing is over it.
    const c = await cluster(1, 2, ['--max-batch-bytes', '1', '--metrics-port', '0']);
    const writer = client(c.seeds);
    // 4096 key + value bytes per op: 256 waiting ops fill MULTI_MAX_BYTES exactly, and the framing puts the Multi over the limit.
    const keys = Array.from({ length: 300 }, (_, i) => keyOf('big', i));
    const value = (i: number): Buffer => Buffer.alloc(4096 - keys[i]!.bytes.length, i % 256);
    const written = await Promise.all(keys.map((k, i) => writer.put(k, value(i))));
    expect(written).toHaveLength(300);
    for (let i = 0; i < keys.length; i++) expect((await writer.get(keys[i]!))?.value.equals(value(i))).toBe(true);
  }, 60_000);

  it('refuses a malformed Multi as a whole with INVALID_ARGUMENT naming the field, and an out-of-range op in its own slot', async () => {
    const c = await cluster(1, 1);
    const node = c.seeds[0]!;
    const r = raw(node);
    const get = { get: { mapVersion: 1n, key: Buffer.from('k') } };

    const tooMany = await r.call('Multi', { ops: Array.from({ length: MAX_MULTI_OPS + 1 }, () => get) } as never);
    expect(tooMany.ok).toBe(false);
    if (!tooMany.ok) {
      expect(tooMany.error.code).toBe(status.INVALID_ARGUMENT);
      expect(tooMany.code).toBe('STORE_INVALID_ARGUMENT');
      expect(tooMany.error.details).toBe(`MultiRequest.ops has ${MAX_MULTI_OPS + 1} items, out of range: allowed 1–${MAX_MULTI_OPS}`);
    }
    const none = await r.call('Multi', { ops: [] } as never);
    expect(!none.ok && none.error.details).toBe('MultiRequest.ops has 0 items, out of range: allowed 1–1000');
    const two = await r.call('Multi', { ops: [get, { get: get.get, delete: { mapVersion: 1n, key: Buffer.from('k') } }] } as never);
    expect(!two.ok && two.error.details).toBe('MultiRequest.ops[1] sets 2 of get, put, delete: exactly one is needed');
    const empty = await r.call('Multi', { ops: [{}] } as never);
    expect(!empty.ok && empty.error.details).toBe('MultiRequest.ops[0] sets 0 of get, put, delete: exactly one is needed');
    // A 64-bit value the generated code cannot decode: the field is named all the same.
    const huge = await r.call('Multi', { ops: [get, { get: { mapVersion: 2n ** 60n, key: Buffer.from('k') } }] } as never);
    expect(!huge.ok && huge.error.code).toBe(status.INVALID_ARGUMENT);
    expect(!huge.ok && huge.error.details).toContain('MultiRequest.ops[1].get.map_version is 1152921504606846976, out of range');

    const results = await multi(node, [
      { put: { mapVersion: 1n, key: Buffer.from('ok'), value: Buffer.from('v') } },
      { put: { mapVersion: 1n, key: Buffer.from('ttl'), value: Buffer.from('v'), ttlMs: 10n ** 13n } },
      { get: { mapVersion: 1n, key: Buffer.alloc(0) } },
      { put: { mapVersion: 1n, key: Buffer.from('big'), value: Buffer.alloc(4 * 1024 * 1024 + 1) } },
    ]);
    expect(results.map((x) => x.errorCode)).toEqual(['', 'STORE_INVALID_ARGUMENT', 'STORE_INVALID_KEY', 'STORE_VALUE_TOO_LARGE']);
    expect(results[1]!.message).toBe('MultiRequest.ops[1].put.ttl_ms is 10000000000000, out of range: allowed 0–3153600000000 ms (0 = no expiry; now + ttl must not pass 9999-12-31)');
    expect(results[2]!.message).toBe('MultiRequest.ops[2].get.key: key is empty: keys must be 1 or more bytes');
    expect(results[3]!.message).toContain('MultiRequest.ops[3].put.value: value is 4194305 bytes, over the limit of 4194304 bytes');
    expect(results.map((x) => x.code)).toEqual([status.OK, status.INVALID_ARGUMENT, status.INVALID_ARGUMENT, status.INVALID_ARGUMENT]);
    // Nothing of the refused ops was written; the good one was.
    const reader = client(c.seeds);
    expect((await reader.get(Key.fromUtf8('ok')))?.value.toString()).toBe('v');
    expect(await reader.get(Key.fromUtf8('ttl'))).toBeUndefined();
    expect(await reader.get(Key.fromUtf8('big'))).toBeUndefined();
  }, 30_000);

  it('lets a read token get through a Multi but refuses its puts and deletes slot by slot', async () => {
    const tmp = await makeTempDir();
    cleanups.push(() => tmp.remove());
    const tokens = { write: 'w'.repeat(32), read: 'r'.repeat(32) };
    const tokenFile = join(tmp.path, 'tokens');
    await writeFile(tokenFile, `write ${tokens.write}\nread ${tokens.read}\n`, { mode: 0o600 });
    const c = await cluster(1, 2, ['--auth-token-file', tokenFile]);
    const writer = new StoreClient({ seeds: c.seeds, credentials: { token: tokens.write }, pointCallsInFlight: 1 });
    const reader = new StoreClient({ seeds: c.seeds, credentials: { token: tokens.read }, pointCallsInFlight: 1 });
    cleanups.push(() => writer.close(), () => reader.close());
    await writer.put(Key.fromUtf8('r0'), Buffer.from('x'));
    // Concurrent gets and puts of the reader travel together in Multi calls.
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? reader.get(Key.fromUtf8('r0')) : reader.put(Key.fromUtf8(`r${i}`), Buffer.from('no')))),
    );
    outcomes.forEach((o, i) => {
      if (i % 2 === 0) expect(o.status === 'fulfilled' && o.value?.value.toString()).toBe('x');
      else {
        expect(o.status).toBe('rejected');
        const e = (o as PromiseRejectedResult).reason as StoreError;
        expect(e.code).toBe('STORE_PERMISSION_DENIED');
        expect(e.message).toContain('needs role write');
      }
    });
    for (let i = 1; i < 20; i += 2) expect(await writer.get(Key.fromUtf8(`r${i}`))).toBeUndefined();
    // A caller cannot grant itself a role through the metadata the gate sets.
    const forged = new StoreClient({ seeds: c.seeds, credentials: { token: tokens.read }, pointCallsInFlight: 1 });
    cleanups.push(() => forged.close());
    const router = forged as unknown as { router: { connection(a: string): { unary(m: string, r: unknown, l: unknown, h: Record<string, string>): Promise<{ results: MultiResult[] }> } } };
    const answer = await router.router.connection(c.seeds[0]!).unary(
      'multi',
      { ops: [{ put: { mapVersion: 1, key: Buffer.from('forged'), value: Buffer.from('v'), ttlMs: 0 } }] },
      { deadline: Date.now() + 5000 },
      { 'x-shardpipe-granted-role': 'admin' },
    );
    expect(answer.results[0]!.errorCode).toBe('STORE_PERMISSION_DENIED');
  }, 60_000);
});
