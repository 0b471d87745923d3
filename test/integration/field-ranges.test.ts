import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalTarget, newBackupId, readShardFile, shardFileName, writeShard } from '../../backup/index.js';
import { Key, MAX_ETAG, MAX_KEPT_ETAG, MAX_TIME_MS, MAX_TTL_MS, PartitionMap, StoreClient, StoreError, StoreRouter } from '../../store/index.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';
import { StoreCluster, runCli } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const failure = (p: Promise<unknown>): Promise<StoreError> =>
  p.then(
    () => {
      throw new Error('the call succeeded, but it should have been refused');
    },
    (e: unknown) => e as StoreError,
  );
const grpcCode = (err: StoreError): number => (err.cause as ServiceError).code;
const deadline = (): { deadline: number } => ({ deadline: Date.now() + 5000 });
/** The routing core of the running block's client: its channels, for raw calls. */
let router: StoreRouter;

/** For the running block: a one-node, two-partition cluster, a client over `router` (set here), and a temp dir; all closed after it. */
function useOneNode(): { cluster: StoreCluster; client: StoreClient; dir: TempDir } {
  const one = {} as { cluster: StoreCluster; client: StoreClient; dir: TempDir };
  beforeAll(async () => {
    one.cluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
    router = new StoreRouter({ seeds: one.cluster.seeds });
    one.client = new StoreClient(router);
    one.dir = await makeTempDir();
  });
  afterAll(async () => {
    one.client?.close();
    await one.cluster?.close();
    await one.dir?.remove();
  });
  return one;
}

describe('every number and string on the wire is checked at the boundary (one real node process)', () => {
  const one = useOneNode();
  let raw: RawStoreClient;

  beforeAll(() => {
    raw = new RawStoreClient(one.cluster.seeds[0]!);
  });

  afterAll(() => {
    raw?.close();
  });

  it('a BulkInsert row with etag 2^53−1 is refused naming the row, field, value and range; the partition keeps working', async () => {
    const conn = router.connection(one.cluster.seeds[0]!);
    const key = Buffer.from('poison-etag');
    const err = await failure(conn.unary('bulkInsert', { mapVersion: 1, rows: [{ key, value: Buffer.from('v'), etag: MAX_ETAG, updatedAtMs: 0, expiresAtMs: 0 }] }, deadline()));
    expect(err.code).toBe('STORE_INVALID_ARGUMENT');
    expect(grpcCode(err)).toBe(status.INVALID_ARGUMENT);
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(`BulkInsertRequest.rows[0].etag is ${MAX_ETAG}, out of range: allowed 0–${MAX_KEPT_ETAG}`);
    expect(await one.client.get(Key.fromBytes(key))).toBeUndefined();

    // The largest kept etag is accepted, and fresh etags still follow it.
    await conn.unary('bulkInsert', { mapVersion: 1, rows: [{ key, value: Buffer.from('kept'), etag: MAX_KEPT_ETAG, updatedAtMs: 0, expiresAtMs: 0 }] }, deadline());
    const next = await one.client.put(Key.fromUtf8('after-kept'), Buffer.from('x'));
    expect(next.etag).toBe(MAX_KEPT_ETAG + 1);
    const scanned = [];
    for await (const batch of one.client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) scanned.push(...batch);
    expect(scanned.find((e) => e.key.equals(key))?.etag).toBe(MAX_KEPT_ETAG);
  });

  it('a put whose TTL carries the expiry past 2^53 ms is refused and nothing is stored; the longest TTL works', async () => {
    const key = Key.fromUtf8('huge-ttl');
    const ttlMs = 2 ** 53 - Date.now() + 1000;
    const err = await failure(one.client.put(key, Buffer.from('v'), { ttlMs }));
    expect(err.code).toBe('STORE_INVALID_ARGUMENT');
    expect(grpcCode(err)).toBe(status.INVALID_ARGUMENT);
    expect(err.message).toContain(`PutRequest.ttl_ms is ${ttlMs}, out of range: allowed 0–${MAX_TTL_MS} ms`);
    expect(await one.client.get(key)).toBeUndefined();

    const longest = await one.client.put(key, Buffer.from('v'), { ttlMs: MAX_TTL_MS });
    expect(longest.expiresAtMs).toBe(longest.updatedAtMs + MAX_TTL_MS);
    expect((await one.client.get(key))?.expiresAtMs).toBe(longest.expiresAtMs);
  });

  it('64-bit fields beyond 2^53 − 1 (which the generated code cannot decode) are INVALID_ARGUMENT naming the field', async () => {
    const get = await raw.call('Get', { mapVersion: 2n ** 64n - 1n, key: Buffer.from('k') });
    expect(get.ok).toBe(false);
    if (get.ok) return;
    expect(get.error.code).toBe(status.INVALID_ARGUMENT);
    expect(get.code).toBe('STORE_INVALID_ARGUMENT');
    expect(get.error.details).toContain('GetRequest.map_version is 18446744073709551615, out of range');

    const bulk = await raw.call('BulkInsert', { mapVersion: 1n, rows: [{ key: Buffer.from('a'), value: Buffer.from('v') }, { key: Buffer.from('b'), value: Buffer.from('v'), expiresAtMs: 2n ** 63n }] });
    expect(bulk.ok).toBe(false);
    if (bulk.ok) return;
    expect(bulk.error.code).toBe(status.INVALID_ARGUMENT);
    expect(bulk.error.details).toContain(`BulkInsertRequest.rows[1].expires_at_ms is 9223372036854775808, out of range: allowed 0–${MAX_TIME_MS} ms`);
    expect(await one.client.get(Key.fromUtf8('a'))).toBeUndefined();
  });

  it('a 100 KB snapshot id is answered at once, with only its start in the message', async () => {
    const id = 'p0-' + 'x'.repeat(100_000);
    const calls: Array<[string, Record<string, unknown>, string]> = [
      ['ScanPage', { mapVersion: 1n, snapshotId: id }, 'ScanRequest.snapshot_id'],
      ['Scan', { mapVersion: 1n, snapshotId: id }, 'ScanRequest.snapshot_id'],
      ['Checksum', { mapVersion: 1n, snapshotId: id }, 'ChecksumRequest.snapshot_id'],
      ['RenewSnapshot', { snapshotIds: [id], leaseMs: 60_000n }, 'RenewSnapshotRequest.snapshot_ids[0]'],
      ['ReleaseSnapshot', { snapshotIds: ['ok', id] }, 'ReleaseSnapshotRequest.snapshot_ids[1]'],
    ];
    for (const [method, init, field] of calls) {
      const outcome = await raw.call(method, init, 3000);
      expect(outcome.ok, method).toBe(false);
      if (outcome.ok) continue;
      expect(outcome.error.code, `${method}: ${outcome.error.details}`).toBe(status.INVALID_ARGUMENT);
      expect(outcome.error.details).toContain(`${field} "p0-xxxxxxxxxxxxxxxxxxxxxxxxxxxxx…(100003 chars)" is 100003 bytes, over the limit of 128 bytes`);
      expect(outcome.error.details.length).toBeLessThan(300);
      expect(outcome.ms).toBeLessThan(2500);
    }
  });

  it('kv put --ttl 104000000d is refused before anything is sent, naming the allowed range', async () => {
    const seeds = one.cluster.seeds.join(',');
    const put = await runCli(['kv', 'put', 'cli-ttl', 'v', '--ttl', '104000000d', '--seeds', seeds]);
    expect(put.code).toBe(64);
    expect(put.stderr).toContain('--ttl "104000000d" is 8985600000000000 ms, out of range: allowed 0ms–36500d');
    const get = await runCli(['kv', 'get', 'cli-ttl', '--seeds', seeds]);
    expect(get.code).toBe(3);
  });
});

describe('the map version moves by a bounded step unless forced', () => {
  const one = useOneNode();

  const install = (version: number, force = false) => router.connection(one.cluster.seeds[0]!).unary('setPartitionMap', { map: one.cluster.map.withVersion(version).toProto(), force }, deadline());
  const writeMap = async (version: number): Promise<string> => {
    const file = one.dir.sub(`map-${version}.json`);
    await writeFile(file, JSON.stringify(one.cluster.map.withVersion(version).toJson()));
    return file;
  };

  it('SetPartitionMap with version 2^53−1 is refused; the node still takes the next version', async () => {
    const err = await failure(install(Number.MAX_SAFE_INTEGER));
    expect(err.code).toBe('STORE_MAP_VERSION_JUMP');
    expect(grpcCode(err)).toBe(status.FAILED_PRECONDITION);
    expect(err.retryable).toBe(false);
    expect(err.mapVersion).toBe(1);
    expect(err.message).toContain('at most 1000 versions per install');
    expect((await install(2)).installed).toBe(true);
  });

  it('a jump of more than 1000 is refused, 1000 is fine', async () => {
    const err = await failure(install(2 + 1001));
    expect(err.code).toBe('STORE_MAP_VERSION_JUMP');
    expect((await install(2 + 1000)).version).toBe(1002);
  });

  it('cluster install --force recovers a node whose map version is wrong (runbook)', async () => {
    const seeds = one.cluster.seeds.join(',');
    // Without --force the CLI reports the refusal and exits non-zero.
    const refused = await runCli(['cluster', 'install', '--map', await writeMap(Number.MAX_SAFE_INTEGER), '--seeds', seeds]);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout).toContain('at most 1000 versions per install');
    // Forced, the node takes 2^53−1; it is not bricked: a forced install brings it back down.
    const up = await runCli(['cluster', 'install', '--map', await writeMap(Number.MAX_SAFE_INTEGER), '--seeds', seeds, '--force']);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toContain('installed');
    const normal = await runCli(['cluster', 'install', '--map', await writeMap(5), '--seeds', seeds]);
    expect(normal.code).not.toBe(0);
    expect(normal.stdout).toContain('older than the installed version 9007199254740991');
    const down = await runCli(['cluster', 'install', '--map', await writeMap(5), '--seeds', seeds, '--force']);
    expect(down.code, down.stderr).toBe(0);
    const map = await runCli(['cluster', 'map', '--json', '--seeds', seeds]);
    expect(PartitionMap.fromJson(JSON.parse(map.stdout)).version).toBe(5);
    // A fresh client works against the recovered node, and the next normal install is accepted.
    const fresh = new StoreClient({ seeds: one.cluster.seeds });
    try {
      await fresh.put(Key.fromUtf8('after-recovery'), Buffer.from('ok'));
      expect((await fresh.get(Key.fromUtf8('after-recovery')))?.value.toString()).toBe('ok');
    } finally {
      fresh.close();
    }
    expect((await install(6)).installed).toBe(true);
    // The persisted map survives a restart at the recovered version.
    const persisted = JSON.parse(await readFile(join(one.cluster.nodes[0]!.dataDir, 'partition-map.json'), 'utf8')) as { version: number };
    expect(persisted.version).toBe(6);
  });
});

describe('a partition that holds an out-of-range record still reads, scans and backs up', () => {
  const one = useOneNode();

  it('fault injection: a record planted in LevelDB with etag and times at 2^64−1 gets, scans, checksums and backs up clamped; puts work', async () => {
    await one.client.put(Key.fromUtf8('neighbour'), Buffer.from('n'));
    const node = one.cluster.nodes[0]!;
    await node.stop();
    // The record layout of store/record.ts, with every 64-bit field at its largest.
    const record = Buffer.concat([Buffer.from([1, 1]), Buffer.alloc(24, 0xff), Buffer.from('planted-value')]);
    const db = new ClassicLevel<Buffer, Buffer>(join(node.dataDir, 'partition-0'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    await db.put(Buffer.concat([Buffer.from('d'), Buffer.from('planted')]), record);
    // And the partition's etag sequence (first u64 of its state) where an older version left it
    // after accepting such an etag: 2^53.
    const state = Buffer.from((await db.get(Buffer.from('ms')))!);
    state.writeUInt32BE(2 ** 21, 0);
    state.writeUInt32BE(0, 4);
    await db.put(Buffer.from('ms'), state);
    await db.close();
    await node.start();

    const got = await one.client.get(Key.fromUtf8('planted'));
    expect(got).toMatchObject({ etag: MAX_ETAG, updatedAtMs: MAX_TIME_MS, expiresAtMs: MAX_TIME_MS });
    expect(got?.value.toString()).toBe('planted-value');

    const scanned = [];
    for await (const batch of one.client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) scanned.push(...batch);
    expect(scanned.map((e) => e.key.toString())).toEqual(['neighbour', 'planted']);
    const page = await router.connection(node.address).unary('scanPage', { mapVersion: 1, start: Buffer.alloc(0), end: Buffer.alloc(0), limit: 0, batchSize: 10, snapshotId: '' }, deadline());
    expect(page.entries.map((e) => e.etag)).toContain(MAX_ETAG);
    expect((await one.client.checksum(Buffer.alloc(0), Buffer.alloc(0), { includeEtag: true })).count).toBe(2);

    // Backup shard writer over a snapshot scan, and the shard reads back.
    const target = new LocalTarget(one.dir.path);
    const backupId = newBackupId();
    const snapshots = await one.client.openSnapshots({ leaseMs: 60_000 });
    try {
      const shard = await writeShard(one.client, target, { backupId, index: 0, start: Buffer.alloc(0), end: Buffer.alloc(0), leases: snapshots.leases });
      expect(shard.rows).toBe(2);
    } finally {
      await one.client.releaseSnapshots(snapshots.leases);
    }
    const restored = [];
    for await (const batch of readShardFile(target, backupId, shardFileName(0))) restored.push(...batch);
    expect(restored.find((e) => e.key.toString() === 'planted')).toMatchObject({ etag: MAX_ETAG, updatedAtMs: MAX_TIME_MS, expiresAtMs: MAX_TIME_MS });

    // Writing the key again replaces the planted record with an in-range one; the sequence was rebased.
    const put = await one.client.put(Key.fromUtf8('planted'), Buffer.from('fresh'));
    expect(put.etag).toBe(2);
    expect((await one.client.get(Key.fromUtf8('planted')))?.etag).toBe(put.etag);
  });
});
