import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateEtcd } from '../../coordinator/index.js';
import { DEFAULT_MAX_MOVEMENTS, DEFAULT_MAX_PAUSE_MS, EtcdOperationStore, connectEtcd, newOperationId, type OperationRecord } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// Operation records against a real (private) etcd: created once, changed only by compare-and-swap,
// so a `cluster cancel` and the coordinator advancing the same operation never overwrite each other.
let dir: TempDir;
let etcd: PrivateEtcd;
let client: ReturnType<typeof connectEtcd>;

beforeAll(async () => {
  dir = await makeTempDir('shardpipe-etcd-ops-');
  etcd = await PrivateEtcd.start({ dataDir: dir.sub('etcd') });
  client = connectEtcd({ url: etcd.url });
});

afterAll(async () => {
  client?.close();
  await etcd?.kill();
  await dir?.remove();
});

function record(id: string): OperationRecord {
  const now = Date.now();
  return {
    id,
    args: { kind: 'move', partition: 3, from: '127.0.0.1:7001', to: '127.0.0.1:7004' },
    state: 'pending',
    createdAtMs: now,
    updatedAtMs: now,
    limits: { maxMovements: DEFAULT_MAX_MOVEMENTS, maxPauseMs: DEFAULT_MAX_PAUSE_MS },
    steps: [],
    pauses: [],
  };
}

describe('EtcdOperationStore', () => {
  it('creates a record once, lists oldest first, and of two replaces of one revision exactly one wins', async () => {
    const ops = new EtcdOperationStore(client, etcd.url, `/test-${Date.now()}`);
    const first = newOperationId(Date.parse('2026-12-01T10:00:00Z'));
    const second = newOperationId(Date.parse('2026-12-01T11:00:00Z'));
    expect(first).toMatch(/^op-20261201-100000-[0-9a-f]{6}$/);
    expect(await ops.create(record(second))).toBe(true);
    expect(await ops.create(record(first))).toBe(true);
    expect(await ops.create(record(first))).toBe(false);
    expect((await ops.list()).operations.map((o) => o.record.id)).toEqual([first, second]);

    const stored = (await ops.get(first))!;
    const results = await Promise.all([ops.replace(stored, { ...stored.record, state: 'running' }), ops.replace(stored, { ...stored.record, state: 'cancelling' })]);
    expect(results.filter(Boolean)).toHaveLength(1);
    const after = (await ops.get(first))!.record.state;
    expect(after).toBe(results[0] ? 'running' : 'cancelling');

    // update() re-reads and re-applies its change until it wins.
    const updated = await ops.update(first, (r) => ({ ...r, message: 'step 1 of 2' }));
    expect(updated?.message).toBe('step 1 of 2');
    expect((await ops.get(first))!.record.state).toBe(after);
    expect(await ops.update('op-none', (r) => r)).toBeUndefined();
  });

  it('refuses a record with invalid arguments, naming the field', async () => {
    const ops = new EtcdOperationStore(client, etcd.url, `/test-bad-${Date.now()}`);
    const bad = { ...record(newOperationId()), args: { kind: 'move', partition: -1, from: 'nohost', to: '127.0.0.1:7004' } } as unknown as OperationRecord;
    await expect(ops.create(bad)).rejects.toThrow(/partition|node must be HOST:PORT/);
    expect((await ops.list()).operations).toHaveLength(0);
  });
});
