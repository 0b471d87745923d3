import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Key, StoreClient, StoreError, type Partition } from '../../store/index.js';
import { rejectionOf } from '../helpers/rejection.js';
import { StoreCluster, runCli } from '../helpers/store-cluster.js';

// JSON documents on real node processes through the thick client: partial get by JSON Pointer,
// Merge Patch / JSON Patch applied on the node under the partition's write queue.

const failure = (promise: Promise<unknown>): Promise<StoreError> => rejectionOf(promise, StoreError);
const json = (b: Buffer | undefined): unknown => (b === undefined ? undefined : JSON.parse(b.toString('utf8')));
const doc = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

/** Key `name` inside partition `p` (evenly split maps cut at the first two bytes). */
const keyIn = (p: Partition, name: string): Key => Key.fromBytes(Buffer.concat([Buffer.from([(p.start[0] ?? 0) + 1]), Buffer.from(name)]));

describe('JSON documents on a cluster of one replica per partition', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  let key: (name: string) => Key;

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 2, partitions: 3, extraArgs: ['--no-sync', '--max-value-bytes', '2000'] });
    client = new StoreClient({ seeds: cluster.seeds });
    key = (name) => keyIn(cluster.map.partitions[1]!, name);
  }, 60_000);
  afterAll(async () => {
    client?.close();
    await cluster?.close();
  });

  const original = { name: 'Ada', address: { city: 'London', zip: 'N1' }, tags: ['a', 'b', 'c'], 'a/b': 1, 'm~n': 2, n: 7 };

  it('partial get returns only the asked paths (escapes, arrays, a missing path left out); no fields = the value as stored', async () => {
    const k = key('partial');
    const stored = Buffer.from(`  ${JSON.stringify(original)}\n`);
    const put = await client.put(k, stored);
    const part = await client.get(k, { fields: ['/name', '/address/zip', '/tags/2', '/tags/0', '/missing', '/address/none/deeper', '/a~1b', '/m~0n'] });
    expect(json(part!.value)).toEqual({ name: 'Ada', address: { zip: 'N1' }, tags: ['a', 'c'], 'a/b': 1, 'm~n': 2 });
    expect(part!.etag).toBe(put.etag);
    expect(json((await client.get(k, { fields: [''] }))!.value)).toEqual(original);
    expect(json((await client.get(k, { fields: ['/nothing'] }))!.value)).toEqual({});
    expect((await client.get(k))!.value).toEqual(stored);
    expect(await client.get(key('absent'), { fields: ['/a'] })).toBeUndefined();
  });

  it('partial gets coalesced into Multi calls each get their own paths', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => key(`multi-${i}`));
    await Promise.all(keys.map((k, i) => client.put(k, doc({ i, sq: i * i, other: 'x'.repeat(i) }))));
    const reads = await Promise.all(keys.map((k, i) => client.get(k, { fields: [i % 2 === 0 ? '/i' : '/sq'] })));
    reads.forEach((r, i) => expect(json(r!.value)).toEqual(i % 2 === 0 ? { i } : { sq: i * i }));
  });

  it('a bad pointer is INVALID_ARGUMENT naming the field; a non-JSON value with fields is STORE_NOT_JSON naming the key', async () => {
    const k = key('plain');
    await client.put(k, Buffer.from('not json at all'));
    const bad = await failure(client.get(k, { fields: ['/ok', 'name'] }));
    expect(bad.code).toBe('STORE_INVALID_ARGUMENT');
    expect(bad.message).toContain('GetRequest.fields[1] "name" is not a JSON Pointer');
    const escape = await failure(client.get(k, { fields: ['/a~2b'] }));
    expect(escape.code).toBe('STORE_INVALID_ARGUMENT');
    expect(escape.message).toContain('"~" not followed by 0 or 1');
    const notJson = await failure(client.get(k, { fields: ['/a'] }));
    expect(notJson.code).toBe('STORE_NOT_JSON');
    expect(notJson.message).toContain(`key "${k.bytes.toString('latin1')}"`);
    expect((await client.get(k))!.value.toString()).toBe('not json at all');
  });

  it('merge patch (the default): members set, nested merged, null removes; etag moves; returns the document when asked', async () => {
    const k = key('merge');
    const put = await client.put(k, doc(original));
    const patched = await client.patch(k, { name: 'Ada L.', address: { zip: null, country: 'UK' }, tags: ['z'], n: null }, { returnDocument: true });
    expect(patched.etag).toBeGreaterThan(put.etag);
    const expected = { name: 'Ada L.', address: { city: 'London', country: 'UK' }, tags: ['z'], 'a/b': 1, 'm~n': 2 };
    expect(json(patched.document)).toEqual(expected);
    const read = await client.get(k);
    expect(json(read!.value)).toEqual(expected);
    expect(read!.etag).toBe(patched.etag);
    expect(read!.updatedAtMs).toBe(patched.updatedAtMs);
    // Without returnDocument no document travels.
    expect((await client.patch(k, '{"x":1}')).document).toBeUndefined();
  });

  it('JSON Patch: add, replace, remove, move, copy, test; a failed test or a missing path writes nothing and names key and path', async () => {
    const k = key('jsonpatch');
    await client.put(k, doc(original));
    const ops = [
      { op: 'test', path: '/name', value: 'Ada' },
      { op: 'add', path: '/tags/-', value: 'd' },
      { op: 'replace', path: '/address/city', value: 'Paris' },
      { op: 'remove', path: '/a~1b' },
      { op: 'move', from: '/m~0n', path: '/moved' },
      { op: 'copy', from: '/name', path: '/alias' },
    ];
    const done = await client.patch(k, ops, { mode: 'json-patch', returnDocument: true });
    const expected = { name: 'Ada', alias: 'Ada', address: { city: 'Paris', zip: 'N1' }, tags: ['a', 'b', 'c', 'd'], moved: 2, n: 7 };
    expect(json(done.document)).toEqual(expected);

    const test = await failure(client.patch(k, [{ op: 'add', path: '/x', value: 1 }, { op: 'test', path: '/name', value: 'Bob' }], { mode: 'json-patch' }));
    expect(test.code).toBe('STORE_PATCH_TEST_FAILED');
    expect(test.message).toContain('operation 1 (test "/name")');
    expect(test.message).toContain(`key "${k.bytes.toString('latin1')}"`);
    const missing = await failure(client.patch(k, [{ op: 'remove', path: '/address/none' }], { mode: 'json-patch' }));
    expect(missing.code).toBe('STORE_INVALID_ARGUMENT');
    expect(missing.message).toContain('"/address/none" is not in the document');
    const pointer = await failure(client.patch(k, [{ op: 'add', path: 'nope', value: 1 }], { mode: 'json-patch' }));
    expect(pointer.code).toBe('STORE_INVALID_ARGUMENT');
    expect(pointer.message).toContain('operation 0 path "nope" is not a JSON Pointer');
    const notArray = await failure(client.patch(k, { op: 'add' }, { mode: 'json-patch' }));
    expect(notArray.message).toContain('must be an array of operations');
    const badOp = await failure(client.patch(k, [{ op: 'increment', path: '/n' }], { mode: 'json-patch' }));
    expect(badOp.message).toContain('has op "increment"');
    const notJsonPatch = await failure(client.patch(k, '{"a":', {}));
    expect(notJsonPatch.message).toContain('PatchRequest.patch');

    const after = await client.get(k);
    expect(json(after!.value)).toEqual(expected);
    expect(after!.etag).toBe(done.etag);
  });

  it('etag CAS: a stale etag is ABORTED with the current etag, the current one applies; an absent key is NOT_FOUND', async () => {
    const k = key('cas');
    const put = await client.put(k, doc({ v: 1 }));
    const first = await client.patch(k, { v: 2 }, { ifEtag: put.etag });
    const stale = await failure(client.patch(k, { v: 3 }, { ifEtag: put.etag }));
    expect(stale.code).toBe('STORE_ETAG_MISMATCH');
    expect(stale.currentEtag).toBe(first.etag);
    expect(json((await client.get(k))!.value)).toEqual({ v: 2 });
    const gone = await failure(client.patch(key('never-written'), { v: 1 }));
    expect(gone.code).toBe('STORE_NOT_FOUND');
    const absentCas = await failure(client.patch(key('never-written'), { v: 1 }, { ifEtag: 5 }));
    expect(absentCas.code).toBe('STORE_ETAG_MISMATCH');
    expect(absentCas.currentEtag).toBe(0);
  });

  it('a patch of a non-JSON value, or one whose result is over the value limit, is refused naming the key; nothing is written', async () => {
    const plain = key('plain-patch');
    const put = await client.put(plain, Buffer.from('<xml/>'));
    const notJson = await failure(client.patch(plain, { a: 1 }));
    expect(notJson.code).toBe('STORE_NOT_JSON');
    expect(notJson.message).toContain(`key "${plain.bytes.toString('latin1')}"`);
    expect((await client.get(plain))!.etag).toBe(put.etag);

    const big = key('big');
    const small = await client.put(big, doc({ a: 'x' }));
    const tooLarge = await failure(client.patch(big, { b: 'y'.repeat(1990) }));
    expect(tooLarge.code).toBe('STORE_VALUE_TOO_LARGE');
    expect(tooLarge.message).toContain('over the limit of 2000 bytes');
    expect((await client.get(big))!.etag).toBe(small.etag);

    const rounded = key('bigint');
    await client.put(rounded, Buffer.from('{"id":12345678901234567890,"n":1}'));
    const precision = await failure(client.patch(rounded, { n: 2 }));
    expect(precision.code).toBe('STORE_NOT_JSON');
    expect(precision.message).toContain('"/id"');
  });

  it('TTL: kept when not given, set from now when given, removed with 0', async () => {
    const k = key('ttl');
    const put = await client.put(k, doc({ a: 1 }), { ttlMs: 600_000 });
    expect(put.expiresAtMs).toBeGreaterThan(0);
    const kept = await client.patch(k, { b: 2 });
    expect(kept.expiresAtMs).toBe(put.expiresAtMs);
    expect((await client.get(k))!.expiresAtMs).toBe(put.expiresAtMs);
    const before = Date.now();
    const set = await client.patch(k, { c: 3 }, { ttlMs: 120_000 });
    expect(set.expiresAtMs).toBeGreaterThanOrEqual(before + 120_000);
    expect(set.expiresAtMs).toBeLessThan(put.expiresAtMs);
    const cleared = await client.patch(k, { d: 4 }, { ttlMs: 0 });
    expect(cleared.expiresAtMs).toBe(0);
    expect(json((await client.get(k))!.value)).toEqual({ a: 1, b: 2, c: 3, d: 4 });
  });

  it('patches racing puts on one key are serialized in the write queue: no appended entry is lost, none survives a later put', async () => {
    const k = key('race');
    await client.put(k, doc({ log: [] }));
    // Several clients (own channels), so calls really overlap on the node.
    const clients = Array.from({ length: 4 }, () => new StoreClient({ seeds: cluster.seeds }));
    try {
      const appends: Array<Promise<{ i: number; etag: number }>> = [];
      const puts: Array<Promise<number>> = [];
      for (let i = 0; i < 120; i++) {
        const c = clients[i % clients.length]!;
        if (i % 10 === 5) puts.push(c.put(k, doc({ log: [] })).then((r) => r.etag));
        else appends.push(c.patch(k, [{ op: 'add', path: '/log/-', value: i }], { mode: 'json-patch' }).then((r) => ({ i, etag: r.etag })));
      }
      const appended = await Promise.all(appends);
      const putEtags = await Promise.all(puts);
      const lastPut = Math.max(...putEtags);
      const etags = [...appended.map((a) => a.etag), ...putEtags];
      expect(new Set(etags).size).toBe(etags.length);
      // The log holds exactly the appends after the last put, in the order the queue applied them.
      const expected = appended.filter((a) => a.etag > lastPut).sort((a, b) => a.etag - b.etag).map((a) => a.i);
      const final = await client.get(k);
      expect(json(final!.value)).toEqual({ log: expected });
      expect(final!.etag).toBe(Math.max(...etags));
    } finally {
      for (const c of clients) c.close();
    }
  }, 60_000);
});

describe('kv get --fields and kv patch (the CLI against real nodes)', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  let seeds: string[];
  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2, extraArgs: ['--no-sync'] });
    client = new StoreClient({ seeds: cluster.seeds });
    seeds = ['--seeds', cluster.seeds.join(',')];
  }, 60_000);
  afterAll(async () => {
    client?.close();
    await cluster?.close();
  });

  it('kv get --fields: dotted names and pointers; --field for names with "." or ","; --json; exit codes', async () => {
    await client.put(Key.fromUtf8('user:1'), doc({ name: 'Ada', address: { city: 'London', zip: 'N1' }, tags: ['x', 'y'], 'a.b': 1, 'c,d': 2 }));
    const dotted = await runCli(['kv', 'get', 'user:1', '--fields', 'name,address.city', '--fields', 'tags.1', ...seeds]);
    expect(dotted.stderr).toBe('');
    expect(dotted.code).toBe(0);
    expect(JSON.parse(dotted.stdout)).toEqual({ name: 'Ada', address: { city: 'London' }, tags: ['y'] });
    const pointers = await runCli(['kv', 'get', 'user:1', '--fields', '/address/zip', '--field', '/a.b', '--field', '/c,d', '--json', ...seeds]);
    expect(pointers.code).toBe(0);
    const out = JSON.parse(pointers.stdout) as { key: string; value: string; etag: number };
    expect(out.key).toBe('user:1');
    expect(JSON.parse(out.value)).toEqual({ address: { zip: 'N1' }, 'a.b': 1, 'c,d': 2 });
    expect(out.etag).toBe((await client.get(Key.fromUtf8('user:1')))!.etag);

    const absent = await runCli(['kv', 'get', 'user:none', '--fields', 'a', ...seeds]);
    expect(absent.code).toBe(3);
    const badField = await runCli(['kv', 'get', 'user:1', '--fields', 'a..b', ...seeds]);
    expect(badField.code).toBe(64);
    expect(badField.stderr).toContain('empty name');
    const slash = await runCli(['kv', 'get', 'user:1', '--fields', 'a/b', ...seeds]);
    expect(slash.code).toBe(64);
    await client.put(Key.fromUtf8('plain'), Buffer.from('hello'));
    const notJson = await runCli(['kv', 'get', 'plain', '--fields', 'a', ...seeds]);
    expect(notJson.code).toBe(1);
    expect(notJson.stderr).toContain('[STORE_NOT_JSON]');
    expect(notJson.stderr).toContain('key "plain"');
  }, 60_000);

  it('kv patch: merge patch by default, --json-patch, --if-etag (exit 4 with the current etag), --ttl, --json; exit 3 absent, 64 on a patch that is not JSON', async () => {
    const k = Key.fromUtf8('doc:1');
    const put = await client.put(k, doc({ a: 1, b: { c: 2 } }));
    const merge = await runCli(['kv', 'patch', 'doc:1', '{"a":null,"b":{"d":3}}', ...seeds]);
    expect(merge.stderr).toBe('');
    expect(merge.code).toBe(0);
    const afterMerge = await client.get(k);
    expect(merge.stdout.trim()).toBe(`etag ${afterMerge!.etag}`);
    expect(json(afterMerge!.value)).toEqual({ b: { c: 2, d: 3 } });

    const stale = await runCli(['kv', 'patch', 'doc:1', '{"x":1}', '--if-etag', String(put.etag), ...seeds]);
    expect(stale.code).toBe(4);
    expect(stale.stderr).toContain(`current etag is ${afterMerge!.etag}`);

    const jp = await runCli(['kv', 'patch', 'doc:1', '[{"op":"add","path":"/list","value":[1]},{"op":"test","path":"/b/c","value":2}]', '--json-patch', '--if-etag', String(afterMerge!.etag), '--ttl', '1h', '--json', ...seeds]);
    expect(jp.stderr).toBe('');
    expect(jp.code).toBe(0);
    const report = JSON.parse(jp.stdout) as { key: string; etag: number; expiresAt: string | null; document: unknown };
    const read = await client.get(k);
    expect(report).toMatchObject({ key: 'doc:1', etag: read!.etag, document: { b: { c: 2, d: 3 }, list: [1] } });
    expect(report.expiresAt).toBe(new Date(read!.expiresAtMs).toISOString());
    expect(json(read!.value)).toEqual(report.document);

    const failedTest = await runCli(['kv', 'patch', 'doc:1', '[{"op":"test","path":"/b/c","value":9}]', '--json-patch', ...seeds]);
    expect(failedTest.code).toBe(4);
    expect(failedTest.stderr).toContain('operation 0 (test "/b/c") failed');
    const absent = await runCli(['kv', 'patch', 'doc:none', '{"a":1}', ...seeds]);
    expect(absent.code).toBe(3);
    const notJson = await runCli(['kv', 'patch', 'doc:1', '{a:1}', ...seeds]);
    expect(notJson.code).toBe(64);
    expect(notJson.stderr).toContain('<patch> is not JSON');
    const notArray = await runCli(['kv', 'patch', 'doc:1', '{"a":1}', '--json-patch', ...seeds]);
    expect(notArray.code).toBe(64);
    const missingPath = await runCli(['kv', 'patch', 'doc:1', '[{"op":"remove","path":"/zz"}]', '--json-patch', ...seeds]);
    expect(missingPath.code).toBe(1);
    expect(missingPath.stderr).toContain('"/zz" is not in the document');
    expect(missingPath.stderr).toContain('[STORE_INVALID_ARGUMENT]');
    expect((await client.get(k))!.etag).toBe(read!.etag);
  }, 60_000);
});

describe('JSON documents on RF=3 chains (real processes)', () => {
  it('patches run at the head and reach every replica as the resulting record: identical checksums (etags included) on every replica', async () => {
    const cluster = await StoreCluster.start({ nodes: 3, partitions: 3, replicas: 3, extraArgs: ['--no-sync'] });
    const client = new StoreClient({ seeds: cluster.seeds });
    try {
      const map = await client.map();
      for (const p of map.partitions) {
        for (let i = 0; i < 20; i++) {
          const k = keyIn(p, `doc-${i}`);
          await client.put(k, doc({ i, tags: [], nested: { keep: true } }), { ttlMs: i % 2 === 0 ? 3_600_000 : 0 });
          await client.patch(k, { nested: { added: i }, removed: null });
          const r = await client.patch(k, [{ op: 'add', path: '/tags/-', value: `t${i}` }, { op: 'replace', path: '/i', value: i * 10 }], { mode: 'json-patch', returnDocument: true, ttlMs: i % 3 === 0 ? 7_200_000 : undefined });
          expect(json(r.document)).toEqual({ i: i * 10, tags: [`t${i}`], nested: { keep: true, added: i } });
        }
      }
      // Reads are served at each chain's tail: the patched document is there.
      const read = await client.get(keyIn(map.partitions[2]!, 'doc-7'), { fields: ['/nested/added', '/tags/0'] });
      expect(json(read!.value)).toEqual({ nested: { added: 7 }, tags: ['t7'] });
      for (const p of map.partitions) {
        const sums = await Promise.all(p.chain.map((r) => client.replicaChecksum(r.node, p, p.start, p.end)));
        expect(sums.length).toBe(3);
        expect(sums[0]!.digest.count).toBe(20);
        for (const s of sums.slice(1)) expect(s.digest.toHex()).toBe(sums[0]!.digest.toHex());
      }
    } finally {
      client.close();
      await cluster.close();
    }
  }, 90_000);
});
