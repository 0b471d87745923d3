import { afterEach, describe, expect, it } from 'vitest';
import { NodeConnection, StoreError } from '../../store/index.js';
import { StoreCluster } from '../helpers/store-cluster.js';

// A client in another language calls Put one request at a time, many at once: each must be
// charged for the request it sends, not for the largest one a Put may be (4 MiB values).
const CALLS = 64;

let cluster: StoreCluster | undefined;
const connections: NodeConnection[] = [];

afterEach(async () => {
  for (const c of connections.splice(0)) c.close();
  await cluster?.close();
  cluster = undefined;
});

describe('plain Put and Patch calls under the in-flight budget', () => {
  it(`${CALLS} concurrent small Puts, each on its own channel, into a node with the default budget are and as many Patches are all admitted (charged by their size, not the largest Put's)`, async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 1, extraArgs: ['--no-sync', '--inflight-wait', '50ms'] });
    const node = cluster.nodes[0]!;
    const conns = Array.from({ length: CALLS }, () => new NodeConnection(node.address));
    connections.push(...conns);
    // Channels connected first, so the calls below reach the node together.
    await Promise.all(conns.map((c) => c.unary('get', { mapVersion: 1, key: Buffer.from('warm'), fields: [] }, { deadline: Date.now() + 10_000 }).catch(() => undefined)));
    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(
        conns.map((c, i) =>
          c.unary('put', { mapVersion: 1, key: Buffer.from(`k-${round}-${i}`), value: Buffer.alloc(100, i), ttlMs: 0 }, { deadline: Date.now() + 10_000 }).then(
            () => 'ok',
            (err: unknown) => (err instanceof StoreError ? `${err.code}: ${err.message}` : String(err)),
          ),
        ),
      );
      expect(results.filter((r) => r !== 'ok')).toEqual([]);
    }
    // Patch is charged the same way: documents first, then one merge patch each, all at once.
    await Promise.all(conns.map((c, i) => c.unary('put', { mapVersion: 1, key: Buffer.from(`doc-${i}`), value: Buffer.from(JSON.stringify({ i, n: 0 })), ttlMs: 0 }, { deadline: Date.now() + 10_000 })));
    const patched = await Promise.all(
      conns.map((c, i) =>
        c.unary('patch', { mapVersion: 1, key: Buffer.from(`doc-${i}`), patch: Buffer.from('{"n":1}'), mode: 0, returnDocument: true }, { deadline: Date.now() + 10_000 }).then(
          (r) => JSON.parse(Buffer.from(r.document).toString('utf8')) as unknown,
          (err: unknown) => (err instanceof StoreError ? `${err.code}: ${err.message}` : String(err)),
        ),
      ),
    );
    expect(patched).toEqual(conns.map((_, i) => ({ i, n: 1 })));
    for (let i = 0; i < CALLS; i++) {
      const got = await conns[i]!.unary('get', { mapVersion: 1, key: Buffer.from(`k-2-${i}`), fields: [] }, { deadline: Date.now() + 10_000 });
      expect(got.found).toBe(true);
      expect(Buffer.from(got.entry!.value).equals(Buffer.alloc(100, i))).toBe(true);
    }
  }, 60_000);
});
