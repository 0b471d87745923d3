import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { PrivateEtcd } from '../../coordinator/index.js';
import { MovementPoller } from '../../metrics-server/index.js';
import { EtcdOperationStore, connectEtcd, newOperationId, operationKeys, type OperationRecord } from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// The metrics server's reader of operation records and GC reports against a real (private) etcd,
// with its clock stepped by the test: how long an operation has made no progress, and what it does
// when etcd goes away.
let dir: TempDir;
let etcd: PrivateEtcd;
let client: ReturnType<typeof connectEtcd>;

beforeAll(async () => {
  dir = await makeTempDir('shardpipe-movement-');
  etcd = await PrivateEtcd.start({ dataDir: dir.sub('etcd') });
  client = connectEtcd({ url: etcd.url });
});

afterAll(async () => {
  client?.close();
  await etcd?.kill();
  await dir?.remove();
});

function running(id: string, nowMs: number, bytesDone: number): OperationRecord {
  return {
    id,
    args: { kind: 'set-replicas', replicas: 3 },
    state: 'running',
    createdAtMs: nowMs - 1000,
    updatedAtMs: nowMs,
    limits: { maxMovements: 2, maxPauseMs: 2000 },
    steps: [{ description: 'add a replica of partition 0', partition: 0, state: 'running', phase: 'syncing', bytesTotal: 1000, bytesDone, startedAtMs: nowMs - 1000 }],
    pauses: [],
  };
}

describe('MovementPoller', () => {
  it('stalled seconds grow while a record\'s progress stands still (even if the record is rewritten) and restart when bytes move; a finished operation leaves "in progress"; bad GC reports are left out', async () => {
    let clock = Date.now();
    const poller = new MovementPoller({ etcd: { url: etcd.url }, intervalMs: 60_000, now: () => clock, logger: pino({ level: 'silent' }) });
    const ops = new EtcdOperationStore(client, etcd.url);
    try {
      const id = newOperationId(clock);
      expect(await ops.create(running(id, clock, 100))).toBe(true);
      const keys = operationKeys();
      await client.put(keys.gcOf('127.0.0.1:7001')).value(JSON.stringify([{ partition: 4, leftAtMs: clock, deleteAtMs: clock + 600_000, bytes: 12_400_000 }]));
      await client.put(keys.gcOf('127.0.0.1:7002')).value('{"not": "a report"}');

      await poller.poll();
      let view = poller.view([]);
      expect(view.etcd).toBe('ok');
      expect(view.operations.map((o) => [o.id, o.stalledSeconds, o.bytesDone])).toEqual([[id, 0, 100]]);
      expect(view.gc).toEqual([{ node: '127.0.0.1:7001', partition: 4, leftAtMs: clock, deleteAtMs: clock + 600_000, bytes: 12_400_000 }]);

      // 11 minutes on, the record rewritten with the same progress (a message changed): still stalled.
      clock += 660_000;
      await ops.update(id, (r) => ({ ...r, message: 'waiting for the copy' }));
      await poller.poll();
      view = poller.view([]);
      expect(view.operations[0]!.stalledSeconds).toBe(660);

      // Bytes move: the clock of no progress restarts.
      clock += 30_000;
      await ops.update(id, (r) => ({ ...r, steps: r.steps.map((s) => ({ ...s, bytesDone: 500 })) }));
      await poller.poll();
      expect(poller.view([]).operations[0]).toMatchObject({ stalledSeconds: 0, bytesDone: 500 });
      clock += 5_000;
      await poller.poll();
      expect(poller.view([]).operations[0]!.stalledSeconds).toBe(5);

      await ops.update(id, (r) => ({ ...r, state: 'completed', finishedAtMs: clock, steps: r.steps.map((s) => ({ ...s, state: 'done' as const })) }));
      await poller.poll();
      view = poller.view([]);
      expect(view.operations).toEqual([]);
      expect(view.finished.map((o) => [o.id, o.state, o.bytesDone])).toEqual([[id, 'completed', 1000]]);
    } finally {
      await poller.close();
    }
  });

  it('a running operation whose steps wait for a movement slot (others hold --max-movements) is not stalled; once a step runs and stands still, it is', async () => {
    let clock = Date.now();
    const poller = new MovementPoller({ etcd: { url: etcd.url }, intervalMs: 60_000, now: () => clock, logger: pino({ level: 'silent' }) });
    const ops = new EtcdOperationStore(client, etcd.url);
    try {
      const id = newOperationId(clock);
      const queued = running(id, clock, 0);
      queued.steps = [{ description: 'add a replica of partition 1', partition: 1, state: 'pending' }];
      expect(await ops.create(queued)).toBe(true);
      await poller.poll();
      clock += 900_000;
      await poller.poll();
      expect(poller.view([]).operations.find((o) => o.id === id)!.stalledSeconds).toBe(0);

      // The slot frees and its step starts: from then on it counts.
      await ops.update(id, (r) => ({ ...r, steps: r.steps.map((s) => ({ ...s, state: 'running' as const, phase: 'syncing', bytesTotal: 1000, bytesDone: 0, startedAtMs: clock })) }));
      await poller.poll();
      clock += 700_000;
      await poller.poll();
      expect(poller.view([]).operations.find((o) => o.id === id)!.stalledSeconds).toBe(700);
      await ops.update(id, (r) => ({ ...r, state: 'completed', finishedAtMs: clock, steps: r.steps.map((s) => ({ ...s, state: 'done' as const })) }));
    } finally {
      await poller.close();
    }
  });

  it('etcd gone: the view keeps the last figures, marked unreachable with the error, and recovers when etcd is back', async () => {
    const ownDir = await makeTempDir('shardpipe-movement-down-');
    let own = await PrivateEtcd.start({ dataDir: ownDir.sub('etcd') });
    const ownClient = connectEtcd({ url: own.url });
    const poller = new MovementPoller({ etcd: { url: own.url, callTimeoutMs: 1000 }, intervalMs: 60_000, logger: pino({ level: 'silent' }) });
    try {
      const id = newOperationId();
      expect(await new EtcdOperationStore(ownClient, own.url).create(running(id, Date.now(), 10))).toBe(true);
      await poller.poll();
      expect(poller.view([]).operations.map((o) => o.id)).toEqual([id]);
      await own.kill();
      await poller.poll();
      const down = poller.view([]);
      expect(down.etcd).toBe('unreachable');
      expect(down.error).toBeTruthy();
      expect(down.operations.map((o) => o.id)).toEqual([id]);

      // Back on the same ports and data: the next reads succeed again.
      own = await PrivateEtcd.start({ dataDir: ownDir.sub('etcd'), clientPort: own.clientPort, peerPort: own.peerPort });
      const deadline = Date.now() + 20_000;
      while (poller.view([]).etcd !== 'ok' && Date.now() < deadline) await poller.poll();
      expect(poller.view([])).toMatchObject({ etcd: 'ok', error: null });
      expect(poller.view([]).operations.map((o) => o.id)).toEqual([id]);
    } finally {
      await poller.close();
      ownClient.close();
      await own.kill();
      await ownDir.remove();
    }
  });
});
