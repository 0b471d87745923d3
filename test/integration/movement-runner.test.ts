import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/index.js';
import { MAX_SYNC_FAILURES, MovementRunner, PrivateEtcd, promote, removeReplica, type OperationContext } from '../../coordinator/index.js';
import { DEFAULT_MAX_PAUSE_MS, EtcdMapStore, EtcdMovementMarks, EtcdOperationStore, PartitionMap, connectEtcd, newOperationId, operationKeys, splitValues, type NodeRegistration, type OperationArgs, type OperationRecord, type PausedReport, type SyncReport } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// The runner against a real (private) etcd, driven pass by pass the way the leading coordinator
// drives it, with the crash windows (map written, record not) played out explicitly.
let dir: TempDir;
let etcd: PrivateEtcd;
let client: ReturnType<typeof connectEtcd>;

beforeAll(async () => {
  dir = await makeTempDir('shardpipe-movement-runner-');
  etcd = await PrivateEtcd.start({ dataDir: dir.sub('etcd') });
  client = connectEtcd({ url: etcd.url });
});

afterAll(async () => {
  client?.close();
  await etcd?.kill();
  await dir?.remove();
});

const A = '127.0.0.1:7001';
const B = '127.0.0.1:7002';
const C = '127.0.0.1:7003';
const D = '127.0.0.1:7004';
const logger = createLogger({ level: 'silent' });

function setup(): { maps: EtcdMapStore; ops: EtcdOperationStore; marks: EtcdMovementMarks; map: PartitionMap } {
  const prefix = `/test-${newOperationId()}`;
  const whole = PartitionMap.evenlySplit(1, [A], 2);
  const map = PartitionMap.create(
    1,
    [
      { id: 0, start: whole.partitions[0]!.start, end: whole.partitions[0]!.end, chain: [{ node: A, state: 'serving' }, { node: B, state: 'serving' }], epoch: 1 },
      { id: 1, start: whole.partitions[1]!.start, end: whole.partitions[1]!.end, chain: [{ node: B, state: 'serving' }, { node: C, state: 'serving' }], epoch: 1 },
    ],
    { replicas: 2 },
  );
  return { maps: new EtcdMapStore(client, etcd.url, prefix), ops: new EtcdOperationStore(client, etcd.url, prefix), marks: new EtcdMovementMarks(client, etcd.url, prefix), map };
}

const nodes = new Map<string, NodeRegistration>([A, B, C, D].map((n) => [n, { node: n, registeredAtMs: 0, leaseMs: 1000, pid: 1 }]));

async function submit(ops: EtcdOperationStore, args: OperationArgs, maxMovements = 2): Promise<string> {
  const id = newOperationId();
  await ops.create({ id, args, state: 'pending', createdAtMs: 0, updatedAtMs: 0, limits: { maxMovements, maxPauseMs: DEFAULT_MAX_PAUSE_MS }, steps: [], pauses: [] });
  return id;
}

describe('MovementRunner pass by pass (real etcd)', () => {
  it('a move re-run after a crash between writing the map and writing the record finds each sub-step done and never adds or removes twice', async () => {
    const { maps, ops, marks, map: first } = setup();
    expect(await maps.create(first)).toBe(true);
    const id = await submit(ops, { kind: 'move', partition: 0, from: A, to: D });
    const ctx = async (syncs: SyncReport[] = []): Promise<OperationContext> => ({ map: (await maps.read())!.map, nodes, syncs, maps, operations: ops, marks, etcd: client, logger, nowMs: Date.now() });
    /** One coordinator pass: the map by CAS, then the record (unless `crash`). */
    const pass = async (crash = false, syncs: SyncReport[] = []): Promise<{ map?: PartitionMap; record: OperationRecord } | undefined> => {
      const stored = (await ops.get(id))!;
      const c = await ctx(syncs);
      // A new runner every pass: what it knows comes from etcd, as for a newly elected leader.
      const step = await new MovementRunner().advance(stored.record, c);
      if (step === undefined) return undefined;
      if (step.map !== undefined) expect(await maps.replace(c.map.version, step.map)).toBe(true);
      if (!crash) expect(await ops.replace(stored, step.record)).toBe(true);
      return step;
    };
    expect((await pass())!.record).toMatchObject({ state: 'running', steps: [{ partition: 0, from: A, to: D, state: 'pending' }] });
    // Started: the destination is fixed in the record before any map change.
    const started = (await pass())!;
    expect(started.map).toBeUndefined();
    expect(started.record.steps[0]).toMatchObject({ state: 'running', phase: 'adding' });
    // Added — and the coordinator dies before writing the record.
    const added = (await pass(true))!;
    expect(added.map!.byId(0)!.chain.map((r) => `${r.node} ${r.state}`)).toEqual([`${A} serving`, `${B} serving`, `${D} syncing`]);
    expect((await ops.get(id))!.record.steps[0]!.phase).toBe('adding');
    // The next leader: D is in the chain already, so no second add; the step goes on to syncing.
    const again = (await pass())!;
    expect(again.map).toBeUndefined();
    expect(again.record.steps[0]!.phase).toBe('syncing');
    const version = (await maps.read())!.map.version;
    // Copying: progress from the sync report; nothing changes in the map.
    const report: SyncReport = { partition: 0, node: D, epoch: 2, state: 'copying', source: B, rows: 40, bytes: 4000, totalRows: 100, startedAtMs: 1, updatedAtMs: 2 };
    const copying = (await pass(false, [report]))!;
    expect(copying.map).toBeUndefined();
    expect(copying.record.steps[0]).toMatchObject({ rowsDone: 40, bytesDone: 4000, rowsTotal: 100 });
    expect(copying.record.message).toContain('40/100 rows');
    expect(await pass(false, [report])).toBeUndefined();
    // Promoted by the coordinator's promotion pass; A is the head, so the step asks it to hold writes first (the head hand-over).
    const current = (await maps.read())!.map;
    expect(current.version).toBe(version);
    expect(await maps.replace(current.version, promote(current, [{ partition: 0, node: D, epoch: current.byId(0)!.epoch }])!.map)).toBe(true);
    const asking = (await pass())!;
    expect(asking.map).toBeUndefined();
    expect(asking.record.steps[0]).toMatchObject({ state: 'running', phase: 'handing over' });
    const keys = operationKeys();
    const request = splitValues.pause((await client.get(keys.pauseOf(0)).buffer())!)!;
    expect(request).toMatchObject({ operation: id, reason: 'head hand-over', maxPauseMs: DEFAULT_MAX_PAUSE_MS });
    // No answer from the head yet: nothing to do, the map stays.
    expect(await pass()).toBeUndefined();
    const promoted = (await maps.read())!.map;
    // The first attempt: A could not settle within the pause and released (by its map-guarded transaction); recorded, keys removed, asked again after a back-off.
    const epoch = promoted.byId(0)!.epoch;
    await client.put(keys.pausedOf(0, A)).value(JSON.stringify({ operation: id, node: A, epoch, state: 'released', mapVersion: promoted.version, heldAtMs: 500, ms: 50, reason: 'the chain did not acknowledge every write within the pause' } satisfies PausedReport));
    const released = (await pass())!;
    expect(released.map).toBeUndefined();
    expect(released.record.pauses).toEqual([{ partition: 0, ms: 50, atMs: 500, reason: 'head hand-over released: the chain did not acknowledge every write within the pause' }]);
    expect(released.record.steps[0]!.description).toContain('attempt 1 released');
    expect(await client.get(keys.pausedOf(0, A)).string()).toBeNull();
    expect(await client.get(keys.pauseOf(0)).string()).toBeNull();
    const again2 = (await pass())!;
    expect(again2.record.steps[0]!.description).toContain('attempt 2');
    expect(await client.get(keys.pauseOf(0)).string()).not.toBeNull();
    // A answers `paused` (every forward acknowledged) at the current map; the removal is committed guarded by that answer — and the coordinator dies again.
    const paused: PausedReport = { operation: id, node: A, epoch: promoted.byId(0)!.epoch, state: 'paused', stream: 's', seq: 9, mapVersion: promoted.version, heldAtMs: 1000 };
    await client.put(keys.pausedOf(0, A)).value(JSON.stringify(paused));
    const removed = await pass(true);
    expect(removed!.map).toBeUndefined();
    const handed = (await maps.read())!.map;
    expect(handed.byId(0)!.chain.map((r) => r.node)).toEqual([B, D]);
    expect(handed.byId(0)!.node).toBe(B);
    // The old head still says `paused` (it has not installed the map): the step waits for its release.
    expect(await pass()).toBeUndefined();
    await client.put(keys.pausedOf(0, A)).value(JSON.stringify({ ...paused, state: 'released', ms: 12, heldWrites: 3, reason: 'the map changed' }));
    const after = (await pass())!;
    expect(after.map).toBeUndefined();
    expect(after.record.steps[0]!.state).toBe('done');
    expect(after.record.pauses).toEqual([...released.record.pauses, { partition: 0, ms: 12, atMs: 1000, reason: 'head hand-over (3 writes held)' }]);
    expect(await client.getAll().prefix(`${keys.paused}0/`).keys()).toEqual([]);
    expect(await client.get(keys.pauseOf(0)).string()).toBeNull();
    const finished = (await pass())!;
    expect(finished.record.state).toBe('completed');
    expect(finished.record.finishedAtMs).toBeGreaterThan(0);
    expect((await maps.read())!.map.byId(0)!.chain.map((r) => r.node)).toEqual([B, D]);
  });

  it('cancel: a destination still syncing is removed again (rolled-back); a step whose source is gone already counts as finished (done)', async () => {
    const { maps, ops, marks, map } = setup();
    await maps.create(map);
    const advance = async (id: string): Promise<OperationRecord> => {
      const stored = (await ops.get(id))!;
      const step = await new MovementRunner().advance(stored.record, { map: (await maps.read())!.map, nodes, syncs: [], maps, operations: ops, marks, etcd: client, logger, nowMs: Date.now() });
      if (step?.map !== undefined) expect(await maps.replace((await maps.read())!.map.version, step.map)).toBe(true);
      if (step !== undefined) expect(await ops.replace(stored, step.record)).toBe(true);
      return (await ops.get(id))!.record;
    };
    const cancel = (id: string) => ops.update(id, (r) => ({ ...r, state: 'cancelling' }));
    const syncingMove = await submit(ops, { kind: 'move', partition: 0, from: A, to: D });
    for (let i = 0; i < 3; i++) await advance(syncingMove);
    expect((await maps.read())!.map.byId(0)!.chain.map((r) => r.node)).toEqual([A, B, D]);
    await cancel(syncingMove);
    expect((await advance(syncingMove)).steps[0]!.state).toBe('rolled-back');
    expect((await maps.read())!.map.byId(0)!.chain.map((r) => r.node)).toEqual([A, B]);
    expect(await advance(syncingMove)).toMatchObject({ state: 'cancelled', steps: [{ state: 'rolled-back' }] });

    const lateMove = await submit(ops, { kind: 'move', partition: 1, from: C, to: D });
    for (let i = 0; i < 3; i++) await advance(lateMove);
    // D serves and C has left the chain (its node died, say) before the cancel is seen.
    const current = (await maps.read())!.map;
    const promoted = promote(current, [{ partition: 1, node: D, epoch: current.byId(1)!.epoch }])!.map;
    await maps.replace(current.version, promoted);
    await maps.replace(promoted.version, removeReplica(promoted, 1, C));
    await cancel(lateMove);
    expect(await advance(lateMove)).toMatchObject({ state: 'cancelled', steps: [{ state: 'done' }] });
    expect((await maps.read())!.map.byId(1)!.chain.map((r) => r.node)).toEqual([B, D]);
  });

  it('rebalance: plans from the sizes nodes report, moves a non-head replica off the most loaded node, and keeps its source when the chain lost another replica during the copy', async () => {
    const { maps, ops, marks, map } = setup();
    await maps.create(map);
    // Each replica's size, as nodes report it (B holds both partitions: 200 of 400 bytes on 4 nodes).
    for (const [partition, node] of [[0, A], [0, B], [1, B], [1, C]] as const) {
      await client.put(maps.keys.replicationOf(partition, node)).value(JSON.stringify({ partition, node, epoch: 1, lagSequences: 0, forwardRetries: 0, bytes: 100, rows: 10, updatedAtMs: 0 })).exec();
    }
    const id = await submit(ops, { kind: 'rebalance' });
    const advance = async (): Promise<OperationRecord> => {
      const stored = (await ops.get(id))!;
      const step = await new MovementRunner().advance(stored.record, { map: (await maps.read())!.map, nodes, syncs: [], maps, operations: ops, marks, etcd: client, logger, nowMs: Date.now() });
      if (step?.map !== undefined) expect(await maps.replace((await maps.read())!.map.version, step.map)).toBe(true);
      if (step !== undefined) expect(await ops.replace(stored, step.record)).toBe(true);
      return (await ops.get(id))!.record;
    };
    expect((await advance()).steps).toMatchObject([{ partition: 0, from: B, to: D, state: 'pending' }]);
    await advance();
    await advance();
    expect((await maps.read())!.map.byId(0)!.chain.map((r) => r.node)).toEqual([A, B, D]);
    // A dies during the copy (the coordinator drops it), then D is promoted.
    let current = (await maps.read())!.map;
    await maps.replace(current.version, removeReplica(current, 0, A));
    current = (await maps.read())!.map;
    await maps.replace(current.version, promote(current, [{ partition: 0, node: D, epoch: current.byId(0)!.epoch }])!.map);
    const kept = await advance();
    expect(kept.steps[0]).toMatchObject({ state: 'done' });
    expect(kept.steps[0]!.description).toContain(`kept ${B}`);
    expect((await maps.read())!.map.byId(0)!.chain.map((r) => `${r.node} ${r.state}`)).toEqual([`${B} serving`, `${D} serving`]);
    expect((await advance()).state).toBe('completed');
  });

  it('movements are limited cluster-wide: a second operation waits while the first holds the only one', async () => {
    const { maps, ops, marks, map } = setup();
    await maps.create(map);
    const one = await submit(ops, { kind: 'move', partition: 0, from: A, to: D }, 1);
    const two = await submit(ops, { kind: 'move', partition: 1, from: C, to: A }, 1);
    const advance = async (id: string): Promise<OperationRecord> => {
      const stored = (await ops.get(id))!;
      const step = await new MovementRunner().advance(stored.record, { map: (await maps.read())!.map, nodes, syncs: [], maps, operations: ops, marks, etcd: client, logger, nowMs: Date.now() });
      if (step?.map !== undefined) await maps.replace((await maps.read())!.map.version, step.map);
      if (step !== undefined) await ops.replace(stored, step.record);
      return (await ops.get(id))!.record;
    };
    await advance(one);
    await advance(two);
    expect((await advance(one)).steps[0]!.phase).toBe('adding');
    expect((await advance(two)).steps[0]!.state).toBe('pending');
    expect((await advance(one)).steps[0]!.phase).toBe('syncing');
    expect((await advance(two)).steps[0]!.state).toBe('pending');
  });

  it(`fault injection (failed sync reports): a destination whose sync fails ${MAX_SYNC_FAILURES} times fails the move, which removes it again and names partition and node`, async () => {
    const { maps, ops, marks, map } = setup();
    await maps.create(map);
    const id = await submit(ops, { kind: 'move', partition: 1, from: C, to: D });
    const advance = async (syncs: SyncReport[] = []): Promise<OperationRecord> => {
      const stored = (await ops.get(id))!;
      const step = await runner.advance(stored.record, { map: (await maps.read())!.map, nodes, syncs, maps, operations: ops, marks, etcd: client, logger, nowMs: Date.now() });
      if (step?.map !== undefined) expect(await maps.replace((await maps.read())!.map.version, step.map)).toBe(true);
      if (step !== undefined) await ops.replace(stored, step.record);
      return (await ops.get(id))!.record;
    };
    const runner = new MovementRunner();
    await advance();
    await advance();
    expect((await advance()).steps[0]!.phase).toBe('syncing');
    const failed = (attempt: number): SyncReport => ({ partition: 1, node: D, epoch: 2, state: 'failed', source: C, rows: 0, bytes: 0, totalRows: 10, startedAtMs: attempt, updatedAtMs: attempt, error: 'STORE_SYNC_MISMATCH: digests differ' });
    for (let i = 1; i < MAX_SYNC_FAILURES; i++) expect((await advance([failed(i)])).error).toBeUndefined();
    // The same attempt seen twice counts once.
    expect((await advance([failed(MAX_SYNC_FAILURES - 1)])).error).toBeUndefined();
    const rec = await advance([failed(MAX_SYNC_FAILURES)]);
    expect(rec.error).toBe(`STORE_MOVE_FAILED: partition 1: the sync on destination ${D} failed ${MAX_SYNC_FAILURES} times, last: STORE_SYNC_MISMATCH: digests differ`);
    // Rolled back: first the map without D, then the final record.
    expect((await advance()).steps[0]!.state).toBe('failed');
    expect((await maps.read())!.map.byId(1)!.chain.map((r) => r.node)).toEqual([B, C]);
    const rolled = await advance();
    expect(rolled.state).toBe('failed');
    expect(rolled.steps[0]!.state).toBe('failed');
    expect((await maps.read())!.map.byId(1)!.chain.map((r) => r.node)).toEqual([B, C]);
  });
});
