import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateEtcd, initialMap } from '../../coordinator/index.js';
import { EtcdMapStore, EtcdMovementMarks, EtcdOperationStore, OperationAdmin, StoreError, connectEtcd, readGcReports } from '../../store/index.js';
import { runCli } from '../helpers/cli-waiting.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// A real private etcd, SIGKILLed after the first write: every call that reads or writes cluster
// state then fails with STORE_ETCD_UNAVAILABLE, naming the endpoint, what was being done and the
// call's deadline, instead of hanging or surfacing the etcd client's own error.
let dir: TempDir;
let etcd: PrivateEtcd;
let client: ReturnType<typeof connectEtcd>;
let url: string;

beforeAll(async () => {
  dir = await makeTempDir('shardpipe-etcd-down-');
  etcd = await PrivateEtcd.start({ dataDir: dir.sub('etcd') });
  url = etcd.url;
  client = connectEtcd({ url });
  const map = initialMap(['127.0.0.1:7001'], 1, { partitions: 2 });
  expect(await new EtcdMapStore(client, url).create(map)).toBe(true);
  await etcd.kill();
});

afterAll(async () => {
  client?.close();
  await etcd?.kill();
  await dir?.remove();
});

async function failure(call: Promise<unknown>): Promise<StoreError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreError);
  return err as StoreError;
}

describe('etcd that stops answering', () => {
  it('map, registration, operation, mark and GC calls each fail with STORE_ETCD_UNAVAILABLE naming the endpoint and what was being done', async () => {
    const maps = new EtcdMapStore(client, url);
    const operations = new EtcdOperationStore(client, url);
    const marks = new EtcdMovementMarks(client, url);
    const admin = new OperationAdmin(client, url);
    const map = initialMap(['127.0.0.1:7001'], 1, { partitions: 2 });
    const cases: Array<[() => Promise<unknown>, string]> = [
      [() => maps.read(), 'reading the partition map'],
      [() => maps.replace(map.version, map.withVersion(map.version + 1)), `writing partition map version ${map.version + 1}`],
      [() => maps.nodes(), 'reading node registrations'],
      [() => maps.syncReports(), 'reading sync reports'],
      [() => operations.get('op-1'), 'reading operation op-1'],
      [() => operations.list(), 'reading operations'],
      [() => marks.drainMarks(), 'reading drain marks'],
      [() => marks.markDraining({ node: '127.0.0.1:7001', operation: 'op-1', markedAtMs: Date.now() }), 'marking 127.0.0.1:7001 draining'],
      [() => marks.clearThrottle(1, '127.0.0.1:7001'), 'clearing the throttle of partition 1 on 127.0.0.1:7001'],
      [() => admin.draining(), 'reading draining marks'],
      [() => readGcReports(client, url), 'reading GC reports'],
    ];
    for (const [call, doing] of cases) {
      const err = await failure(call());
      expect(err.code).toBe('STORE_ETCD_UNAVAILABLE');
      expect(err.message).toContain(`etcd at ${url} did not answer while ${doing}`);
      expect(err.message).toContain('(each call has 5000 ms)');
    }
  }, 60_000);

  it('the CLI reading the cluster from it exits 1 with that error, the endpoint and what it was doing', async () => {
    const status = await runCli(['cluster', 'status', '--etcd', url], null);
    expect(status.code).toBe(1);
    expect(status.stderr).toContain('STORE_ETCD_UNAVAILABLE');
    expect(status.stderr).toContain(`etcd at ${new URL(url).href} did not answer while reading the partition map (each call has 5000 ms)`);
  }, 60_000);
});
