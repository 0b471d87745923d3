import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateEtcd, initialMap, reconcile } from '../../coordinator/index.js';
import { EtcdMapStore, connectEtcd } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// The map's transactions against a real (private) etcd: the compare-and-swap that keeps two
// coordinators from both winning, and map + version written together.
const A = '127.0.0.1:7001';
const B = '127.0.0.1:7002';
const C = '127.0.0.1:7003';

let dir: TempDir;
let etcd: PrivateEtcd;
let client: ReturnType<typeof connectEtcd>;

beforeAll(async () => {
  dir = await makeTempDir('shardpipe-etcd-map-');
  etcd = await PrivateEtcd.start({ dataDir: dir.sub('etcd') });
  client = connectEtcd({ url: etcd.url });
});

afterAll(async () => {
  client?.close();
  await etcd?.kill();
  await dir?.remove();
});

describe('EtcdMapStore', () => {
  it('writes the first map once; of two writers replacing the same version exactly one wins, and map and version move together', async () => {
    const store = new EtcdMapStore(client, etcd.url, `/test-${Date.now()}`);
    expect(await store.read()).toBeUndefined();
    const first = initialMap([A, B, C], 2, { partitions: 3 });
    expect(await store.create(first)).toBe(true);
    expect(await store.create(initialMap([A], 1, { partitions: 1 }))).toBe(false);
    expect((await store.read())!.map.equals(first)).toBe(true);

    // Two coordinators that read version 1 and planned different changes (B gone / C gone).
    const withoutB = reconcile(first, new Set([A, C]))!.map;
    const withoutC = reconcile(first, new Set([A, B]))!.map;
    const outcomes = await Promise.all([store.replace(1, withoutB), store.replace(1, withoutC)]);
    expect(outcomes.filter(Boolean)).toHaveLength(1);
    const stored = (await store.read())!.map;
    expect(stored.equals(outcomes[0] ? withoutB : withoutC)).toBe(true);
    const version = (await client.get(store.keys.mapVersion).string())!;
    expect(version).toBe('2');

    // The loser plans again from what etcd holds and wins the next version.
    expect(await store.replace(1, withoutC)).toBe(false);
    const again = reconcile(stored, new Set([A]))!.map;
    expect(await store.replace(2, again)).toBe(true);
    expect((await store.read())!.map.version).toBe(3);
    await expect(store.replace(3, again)).rejects.toThrow(RangeError);
  });

  it('a watch from a read\'s revision sees every later map, in order', async () => {
    const store = new EtcdMapStore(client, etcd.url, `/test-watch-${Date.now()}`);
    const { revision } = await store.readAt();
    const seen: number[] = [];
    let done: () => void = () => undefined;
    const all = new Promise<void>((resolve) => (done = resolve));
    const watcher = await store.watch(revision, (m) => {
      seen.push(m.version);
      if (m.version === 3) done();
    });
    try {
      let map = initialMap([A, B], 2, { partitions: 2 });
      expect(await store.create(map)).toBe(true);
      for (const live of [new Set([A]), new Set([A, B])]) {
        const next = reconcile(map, live)!.map;
        expect(await store.replace(map.version, next)).toBe(true);
        map = next;
      }
      await all;
      expect(seen).toEqual([1, 2, 3]);
    } finally {
      await watcher.cancel();
    }
  });
});
