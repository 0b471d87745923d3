import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { EtcdOperationStore, NodeConnection, OperationAdmin, StoreError, newOperationId, operationKeys, type OperationRecord } from '../../store/index.js';
import { generateRoleTokens, writeTokenFile, type RoleTokens } from '../../cli/token-file.js';
import { CliProcess, EtcdTestCluster } from '../helpers/etcd-cluster.js';
import { CLI, NodeProcess } from '../helpers/store-cluster.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';
import { Waiting, runCli, type Run } from '../helpers/cli-waiting.js';

// The data-movement commands a user types, against a real private etcd and real `store start --etcd`
// node processes with tokens. No coordinator runner exists on this branch: where a test needs an
// operation to move on, the test itself writes the record in place of the coordinator (and says so).
let cluster: EtcdTestCluster;
let tokens: RoleTokens;
let ops: EtcdOperationStore;
let admin: OperationAdmin;
let nodes: string[];
/** Registered after `cluster init`: in no chain. */
let spare: string;

/** Runs a CLI command to completion with `token` (default: the admin token; null: none). */
const run = (args: string[], token: string | null = tokens.admin): Promise<Run> => runCli(args, token);

/** In place of the coordinator: changes the record by compare-and-swap, as a runner's step would. */
async function advance(id: string, change: (r: OperationRecord) => OperationRecord): Promise<void> {
  expect(await ops.update(id, change)).toBeDefined();
}

async function recordCount(): Promise<number> {
  return (await ops.list()).operations.length;
}

beforeAll(async () => {
  cluster = await EtcdTestCluster.start({ lease: '2s' });
  tokens = generateRoleTokens();
  const tokenFile = cluster.dir.sub('tokens');
  await writeTokenFile(tokenFile, tokens);
  const splitFile = cluster.dir.sub('split-keys');
  await writeFile(splitFile, 'g\np\n');
  const procs: CliProcess[] = [];
  for (let i = 0; i < 3; i++) procs.push(await cluster.startNode(undefined, ['--auth-token-file', tokenFile]));
  const init = await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--split-keys', splitFile, '--replicas', '2']);
  expect(init.code, init.stderr).toBe(0);
  await Promise.all(procs.map((p) => p.event('ready')));
  const extra = await cluster.startNode(undefined, ['--auth-token-file', tokenFile]);
  await extra.event('ready');
  nodes = [...cluster.nodes.keys()].slice(0, 3).sort();
  spare = [...cluster.nodes.keys()][3]!;
  ops = new EtcdOperationStore(cluster.etcdClient, cluster.etcd.url);
  admin = new OperationAdmin(cluster.etcdClient, cluster.etcd.url);
}, 60_000);

afterAll(async () => {
  await cluster?.close();
});

const etcdArgs = (): string[] => ['--etcd', cluster.etcd.url];
const seedArgs = (): string[] => ['--seeds', nodes[0]!];

describe('cluster operation commands (real etcd, real node processes)', () => {
  it('refuses arguments that do not fit the map or the registrations, naming what is wrong, and records nothing (--etcd and --seeds)', async () => {
    const map = (await cluster.store.read())!.map;
    const p1 = map.byId(1)!;
    const inChain = p1.chain.map((r) => r.node);
    const outside = nodes.find((n) => !inChain.includes(n))!;
    const before = await recordCount();
    const cases: Array<[string[], RegExp]> = [
      [['cluster', 'move', '9', '--from', nodes[0]!, '--to', spare, ...etcdArgs()], /partition 9 does not exist: map version 1 has partitions 0, 1, 2 \[STORE_OPERATION_INVALID\]/],
      [['cluster', 'move', '1', '--from', outside, '--to', spare, ...etcdArgs()], new RegExp(`--from ${outside} holds no replica of partition 1`)],
      [['cluster', 'move', '1', '--from', inChain[0]!, '--to', inChain[1]!, ...etcdArgs()], new RegExp(`--to ${inChain[1]} holds a replica of partition 1 already`)],
      [['cluster', 'move', '1', '--from', inChain[0]!, '--to', '127.0.0.1:1', ...etcdArgs()], /--to 127\.0\.0\.1:1 is not a registered node/],
      [['cluster', 'move', '1', '--from', 'nohost', '--to', spare, ...etcdArgs()], /from: node must be HOST:PORT/],
      [['cluster', 'split', '1', '--at', 'p', ...etcdArgs()], /split key p is not strictly inside partition 1's range \[g, p\)/],
      [['cluster', 'split', '1', '--at-hex', '61', ...seedArgs()], /split key a is not strictly inside partition 1's range \[g, p\): both halves must be non-empty ranges \[STORE_OPERATION_INVALID\]/],
      [['cluster', 'merge', '0', '2', ...seedArgs()], /partitions 0 and 2 are not neighbours/],
      [['cluster', 'set-replicas', '5', ...etcdArgs()], /R 5 needs 5 live nodes for distinct replicas, but 4 are registered and not draining/],
      [['cluster', 'set-replicas', '2', '--partitions', '1,3', ...seedArgs()], /partition 3 does not exist/],
      [['cluster', 'drain-node', '127.0.0.1:1', ...etcdArgs()], /127\.0\.0\.1:1 is neither registered nor in any chain/],
      [['cluster', 'move', '1', '--from', inChain[0]!, '--to', spare, '--max-movements', '0', ...seedArgs()], /maxMovements must be 1–64, got 0/],
      // Caught by the CLI before anything is asked.
      [['cluster', 'set-replicas', '17', ...etcdArgs()], /R must be a whole number 1–16, got "17"/],
      [['cluster', 'split', '1', ...etcdArgs()], /needs exactly one of --at KEY, --at-hex HEX, --auto/],
      [['cluster', 'move', 'x', '--from', inChain[0]!, '--to', spare, ...etcdArgs()], /partition must be a partition id/],
      [['cluster', 'move', '1', '--from', inChain[0]!, '--to', spare, '--max-bytes-per-second', 'fast', ...etcdArgs()], /--max-bytes-per-second must be a rate/],
    ];
    // --no-wait: a case wrongly accepted exits at once (and fails below) instead of waiting. Four at a time.
    const outs: Run[] = [];
    for (let i = 0; i < cases.length; i += 4) outs.push(...(await Promise.all(cases.slice(i, i + 4).map(([args]) => run([...args, '--no-wait'])))));
    cases.forEach(([args, message], i) => {
      expect(outs[i]!.code, `${args.join(' ')}: ${outs[i]!.stderr}`).toBe(64);
      expect(outs[i]!.stderr, args.join(' ')).toMatch(message);
    });
    expect(await recordCount()).toBe(before);
  }, 120_000);

  it('submits with --no-wait through etcd (--etcd) and through a node (--seeds): both create the record with the limits and who asked', async () => {
    const map = (await cluster.store.read())!.map;
    const p0 = map.byId(0)!;
    const viaEtcd = await run(['cluster', 'move', '0', '--from', p0.chain[0]!.node, '--to', spare, '--no-wait', '--max-bytes-per-second', '50MB', '--max-movements', '3', '--max-pause', '500ms', ...etcdArgs()]);
    expect(viaEtcd.code, viaEtcd.stderr).toBe(0);
    const id = viaEtcd.stdout.trim();
    expect(id).toMatch(/^op-\d{8}-\d{6}-[0-9a-f]{6}$/);
    const stored = (await ops.get(id))!.record;
    expect(stored).toMatchObject({
      args: { kind: 'move', partition: 0, from: p0.chain[0]!.node, to: spare },
      state: 'pending',
      limits: { maxBytesPerSecond: 50_000_000, maxMovements: 3, maxPauseMs: 500 },
      steps: [],
      pauses: [],
    });
    expect(stored.requestedBy).toMatch(/^cli .+:\d+$/);

    const viaSeeds = await run(['cluster', 'split', '2', '--at', 'user:5000', '--no-wait', '--json', ...seedArgs()]);
    expect(viaSeeds.code, viaSeeds.stderr).toBe(0);
    const printed = JSON.parse(viaSeeds.stdout) as OperationRecord & { progress: Record<string, unknown> };
    expect(printed.args).toEqual({ kind: 'split', partition: 2, at: Buffer.from('user:5000').toString('hex') });
    expect(printed.progress).toMatchObject({ steps: 0, stepsDone: 0, bytesDone: 0 });
    const viaNode = (await ops.get(printed.id))!.record;
    expect(viaNode).toMatchObject({ id: printed.id, state: 'pending', limits: { maxMovements: 2, maxPauseMs: 2000 } });
    expect(viaNode.limits.maxBytesPerSecond).toBeUndefined();
    expect(viaNode.requestedBy).toMatch(new RegExp(`^cli .+:\\d+ via ${nodes[0]!.replace(/\./g, '\\.')}$`));
    await admin.cancel(id, 'test cleanup');
    await admin.cancel(printed.id, 'test cleanup');
  }, 60_000);

  it('lists operations as JSON (records with progress), shows one in detail, and exits 3 for an unknown id', async () => {
    const submitted = await run(['cluster', 'set-replicas', '3', '--partitions', '0,1', '--no-wait', ...etcdArgs()]);
    expect(submitted.code, submitted.stderr).toBe(0);
    const id = submitted.stdout.trim();
    // In place of the coordinator: a planned step copying.
    await advance(id, (r) => ({
      ...r,
      state: 'running',
      steps: [{ description: `add a replica of partition 0 on ${spare}`, partition: 0, to: spare, state: 'running', phase: 'syncing', bytesDone: 1000, bytesTotal: 4000, rowsDone: 10, rowsTotal: 40, startedAtMs: Date.now() - 1000 }],
      pauses: [{ partition: 0, ms: 15, atMs: Date.now(), reason: 'head hand-over' }],
    }));
    for (const reach of [etcdArgs(), seedArgs()]) {
      const listed = await run(['cluster', 'operations', '--json', ...reach]);
      expect(listed.code, listed.stderr).toBe(0);
      const body = JSON.parse(listed.stdout) as { operations: Array<OperationRecord & { progress: Record<string, unknown> }> };
      const mine = body.operations.find((o) => o.id === id)!;
      expect(mine).toMatchObject({ args: { kind: 'set-replicas', replicas: 3, partitions: [0, 1] }, state: 'running', limits: { maxMovements: 2, maxPauseMs: 2000 } });
      expect(mine.progress).toMatchObject({ stepsDone: 0, steps: 1, current: { index: 1, phase: 'syncing' }, bytesDone: 1000, bytesTotal: 4000, rowsDone: 10, rowsTotal: 40, pauses: 1, maxPauseMs: 15 });
      expect(mine.progress.bytesPerSecond as number).toBeGreaterThan(0);
      expect(mine.progress.etaSeconds as number).toBeGreaterThan(0);
    }
    const table = await run(['cluster', 'operations', ...seedArgs()]);
    expect(table.stdout).toMatch(new RegExp(`${id}\\s+running\\s+set replicas to 3 on partitions 0,1\\s+step 1/1 syncing  1 kB/4 kB  10/40 rows`));
    const detail = await run(['cluster', 'operations', id, ...etcdArgs()]);
    expect(detail.code, detail.stderr).toBe(0);
    expect(detail.stdout).toContain(`${id}: set replicas to 3 on partitions 0,1`);
    expect(detail.stdout).toMatch(/limits: unthrottled, at most 2 movements at once, pauses at most 2000 ms/);
    expect(detail.stdout).toMatch(/pauses \(1, longest 15 ms\):\n  partition 0: 15 ms at .* \(head hand-over\)/);
    const unknown = await run(['cluster', 'operations', 'op-20200101-000000-000000', ...seedArgs()]);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/no operation op-20200101-000000-000000 in etcd .*\[STORE_OPERATION_NOT_FOUND\]/);
    const malformed = await run(['cluster', 'operations', '../map', ...etcdArgs()]);
    expect(malformed.code).toBe(64);
    expect(malformed.stderr).toMatch(/"\.\.\/map" is not an operation id/);
    await admin.cancel(id, 'test cleanup');
  }, 60_000);

  it('cancel sets cancelling by compare-and-swap (a stale coordinator write loses), and is refused for a finished operation', async () => {
    const map = (await cluster.store.read())!.map;
    const submitted = await run(['cluster', 'drain-node', map.byId(1)!.chain[0]!.node, '--no-wait', ...seedArgs()]);
    expect(submitted.code, submitted.stderr).toBe(0);
    const id = submitted.stdout.trim();
    // A coordinator read the record before the cancel …
    const readByCoordinator = (await ops.get(id))!;
    const cancelled = await run(['cluster', 'cancel', id, '--no-wait', ...seedArgs()]);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    expect(cancelled.stdout.trim()).toBe(`${id} cancelling`);
    // … so its write of a step from that read loses the compare-and-swap: the cancel stays.
    expect(await ops.replace(readByCoordinator, { ...readByCoordinator.record, state: 'running' })).toBe(false);
    const after = (await ops.get(id))!.record;
    expect(after.state).toBe('cancelling');
    expect(after.message).toMatch(/^cancel asked by cli .+ via /);
    // A second cancel leaves it as it is.
    expect((await run(['cluster', 'cancel', id, '--no-wait', '--json', ...etcdArgs()])).code).toBe(0);
    // In place of the coordinator: the roll-back done.
    await advance(id, (r) => ({ ...r, state: 'cancelled', finishedAtMs: Date.now() }));
    for (const reach of [etcdArgs(), seedArgs()]) {
      const refused = await run(['cluster', 'cancel', id, ...reach]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`operation ${id} is cancelled already: there is nothing to cancel [STORE_OPERATION_FINISHED]`);
    }
    const unknown = await run(['cluster', 'cancel', 'op-20200101-000000-000000', ...etcdArgs()]);
    expect(unknown.code).toBe(3);
  }, 60_000);

  it('a waiting cancel ends when the record is cancelled (the test acts in place of the coordinator)', async () => {
    const map = (await cluster.store.read())!.map;
    const id = (await run(['cluster', 'move', '2', '--from', map.byId(2)!.chain[0]!.node, '--to', spare, '--no-wait', ...etcdArgs()])).stdout.trim();
    const waiting = new Waiting(tokens.admin, ['cluster', 'cancel', id, '--poll-interval', '100ms', ...seedArgs()]);
    await waiting.progress((e) => e.state === 'cancelling');
    await advance(id, (r) => ({ ...r, state: 'cancelled', finishedAtMs: Date.now(), message: 'rolled back: nothing had moved' }));
    expect(await waiting.exited, waiting.stderr).toBe(0);
    expect(waiting.stdout.trim()).toBe(`${id} cancelled: rolled back: nothing had moved`);
  }, 60_000);

  it('operation RPCs need the admin token, and a static-map node refuses them with STORE_OPERATIONS_NEED_ETCD', async () => {
    const map = (await cluster.store.read())!.map;
    const from = map.byId(1)!.chain[0]!.node;
    const before = await recordCount();
    const write = await run(['cluster', 'move', '1', '--from', from, '--to', spare, '--no-wait', ...seedArgs()], tokens.write);
    expect(write.code).toBe(1);
    expect(write.stderr).toMatch(/SubmitOperation needs role admin; the token has role write \[STORE_PERMISSION_DENIED\]/);
    const read = await run(['cluster', 'operations', ...seedArgs()], tokens.read);
    expect(read.code).toBe(1);
    expect(read.stderr).toMatch(/ListOperations needs role admin; the token has role read \[STORE_PERMISSION_DENIED\]/);
    const none = await run(['cluster', 'cancel', 'op-20200101-000000-000000', ...seedArgs()], null);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/CancelOperation needs a token/);
    const raw = new RawStoreClient(nodes[0]!);
    try {
      const out = await raw.call('SubmitOperation', { argsJson: JSON.stringify({ kind: 'rebalance' }) });
      expect(out.ok).toBe(false);
      expect(out.ok ? undefined : out.code).toBe('STORE_UNAUTHENTICATED');
    } finally {
      raw.close();
    }
    expect(await recordCount()).toBe(before);

    // A node on a static map file.
    const address = `127.0.0.1:${await findFreePort()}`;
    const mapFile = cluster.dir.sub('static-map.json');
    expect((await run(['cluster', 'init', '--nodes', address, '--partitions', '2', '--out', mapFile])).code).toBe(0);
    const node = new NodeProcess(address, cluster.dir.sub('static-node'), mapFile);
    await node.start();
    try {
      const out = await run(['cluster', 'rebalance', '--seeds', address]);
      expect(out.code).toBe(1);
      expect(out.stderr).toMatch(new RegExp(`SubmitOperation: node ${address.replace(/\./g, '\\.')} serves a static partition map; operations .* exist only in clusters on etcd .*\\[STORE_OPERATIONS_NEED_ETCD\\]`));
      const rawStatic = new RawStoreClient(address);
      try {
        for (const method of ['SubmitOperation', 'ListOperations', 'GetOperation', 'CancelOperation']) {
          const r = await rawStatic.call(method, method === 'SubmitOperation' ? { argsJson: '{"kind":"rebalance"}' } : method === 'ListOperations' ? {} : { id: 'op-20200101-000000-000000' });
          expect(r.ok ? 'OK' : `${r.error.code} ${r.code}`, method).toBe('9 STORE_OPERATIONS_NEED_ETCD');
        }
      } finally {
        rawStatic.close();
      }
      // cluster status --seeds on a static map still works and shows no operations.
      const status = await run(['cluster', 'status', '--seeds', address]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).not.toMatch(/operations:/);
    } finally {
      await node.stop();
    }
  }, 60_000);

  it('a node checks every value of a submission that crosses the RPC boundary', async () => {
    const conn = new NodeConnection(nodes[1]!, { token: tokens.admin });
    const before = await recordCount();
    const refusal = async (req: Record<string, unknown>): Promise<StoreError> => {
      try {
        await conn.unary('submitOperation', { argsJson: '', maxBytesPerSecond: 0, maxMovements: 0, maxPauseMs: 0, requestedBy: '', id: '', ...req }, { deadline: Date.now() + 5000 });
      } catch (err) {
        return err as StoreError;
      }
      throw new Error(`${JSON.stringify(req)} was accepted`);
    };
    try {
      expect((await refusal({ argsJson: 'nope' })).message).toMatch(/^SubmitOperationRequest\.args_json is not JSON/);
      expect((await refusal({ argsJson: '{"kind":"move","partition":-1,"from":"a:1","to":"b:2"}' })).code).toBe('STORE_OPERATION_INVALID');
      expect((await refusal({ argsJson: '{"kind":"merge","partitions":[0]}' })).message).toMatch(/partitions/);
      const tooMany = await refusal({ argsJson: '{"kind":"rebalance"}', maxMovements: 65 });
      expect(tooMany.code).toBe('STORE_INVALID_ARGUMENT');
      expect(tooMany.message).toMatch(/SubmitOperationRequest\.max_movements is 65, out of range: allowed 0–64/);
      expect((await refusal({ argsJson: '{"kind":"rebalance"}', requestedBy: 'x'.repeat(201) })).message).toMatch(/SubmitOperationRequest\.requested_by/);
      expect((await refusal({ argsJson: '{"kind":"rebalance"}', requestedBy: 'bell\u0007' })).message).toMatch(/requestedBy must be at most 200 printable ASCII characters/);
      const badId = await conn.unary('getOperation', { id: '../../map' }, { deadline: Date.now() + 5000 }).catch((err: StoreError) => err);
      expect((badId as StoreError).code).toBe('STORE_OPERATION_INVALID');
    } finally {
      conn.close();
    }
    expect(await recordCount()).toBe(before);
  }, 30_000);

  it('a submission retried with its id after a lost answer (on another node) returns the first record: nothing is submitted twice', async () => {
    const map = (await cluster.store.read())!.map;
    const from = map.byId(0)!.chain[0]!.node;
    const first = new NodeConnection(nodes[0]!, { token: tokens.admin });
    const second = new NodeConnection(nodes[2]!, { token: tokens.admin });
    const id = newOperationId();
    const request = { argsJson: JSON.stringify({ kind: 'move', partition: 0, from, to: spare }), maxBytesPerSecond: 0, maxMovements: 0, maxPauseMs: 0, requestedBy: 'test', id };
    const deadline = (): { deadline: number } => ({ deadline: Date.now() + 5000 });
    try {
      const before = await recordCount();
      const made = JSON.parse((await first.unary('submitOperation', request, deadline())).recordJson) as OperationRecord;
      expect(made.id).toBe(id);
      // In place of the coordinator: the operation runs, and the cluster changed so that a fresh
      // submission of these arguments would be refused (--to is being drained).
      await advance(id, (r) => ({ ...r, state: 'running', message: 'syncing' }));
      const mark = operationKeys().drainingOf(spare);
      await cluster.etcdClient.put(mark).value('{}');
      try {
        const fresh = await second.unary('submitOperation', { ...request, id: newOperationId() }, deadline()).catch((err: StoreError) => err);
        expect((fresh as StoreError).message).toMatch(/is being drained/);
        const again = JSON.parse((await second.unary('submitOperation', request, deadline())).recordJson) as OperationRecord;
        expect(again).toMatchObject({ id, state: 'running', message: 'syncing' });
      } finally {
        await cluster.etcdClient.delete().key(mark);
      }
      expect(await recordCount()).toBe(before + 1);
      const other = await second.unary('submitOperation', { ...request, argsJson: JSON.stringify({ kind: 'rebalance' }) }, deadline()).catch((err: StoreError) => err);
      expect((other as StoreError).code).toBe('STORE_OPERATION_INVALID');
      expect((other as StoreError).message).toMatch(new RegExp(`operation id ${id} belongs to another operation`));
      expect(await recordCount()).toBe(before + 1);
    } finally {
      first.close();
      second.close();
      await admin.cancel(id, 'test cleanup');
    }
  }, 30_000);

  it('waits with JSON progress lines and exits 0 once the record completes (the test advances it in place of the coordinator)', async () => {
    const map = (await cluster.store.read())!.map;
    const from = map.byId(1)!.chain[1]!.node;
    const waiting = new Waiting(tokens.admin, ['cluster', 'move', '1', '--from', from, '--to', spare, ...etcdArgs()]);
    const first = await waiting.progress((e) => e.state === 'pending');
    const id = first.operation as string;
    expect(first).toMatchObject({ kind: 'move', step: 0, steps: 0, bytesDone: 0 });
    const startedAtMs = Date.now();
    await advance(id, (r) => ({ ...r, state: 'running', steps: [{ description: `move partition 1 from ${from} to ${spare}`, partition: 1, from, to: spare, state: 'running', phase: 'syncing', bytesDone: 500, bytesTotal: 2000, rowsDone: 5, rowsTotal: 20, startedAtMs }] }));
    const copying = await waiting.progress((e) => e.phase === 'syncing');
    expect(copying).toMatchObject({ operation: id, state: 'running', step: 1, steps: 1, description: `move partition 1 from ${from} to ${spare}`, bytesDone: 500, bytesTotal: 2000, rowsDone: 5, rowsTotal: 20 });
    expect(copying.bytesPerSecond as number).toBeGreaterThan(0);
    expect(typeof copying.etaSeconds).toBe('number');
    expect(waiting.child.exitCode).toBeNull();
    await advance(id, (r) => ({ ...r, state: 'completed', finishedAtMs: Date.now(), steps: r.steps.map((s) => ({ ...s, state: 'done' as const, phase: undefined, bytesDone: 2000, rowsDone: 20, finishedAtMs: Date.now() })) }));
    expect(await waiting.exited, waiting.stderr).toBe(0);
    expect(waiting.stdout).toMatch(new RegExp(`^${id} completed: move partition 1 from .* to .* \\(\\d+\\.\\d s\\)\\n$`));
  }, 60_000);

  it('on a terminal (a real pty through script(1)) the wait is one live line, not JSON lines (the test advances the record in place of the coordinator)', async () => {
    const command = [process.execPath, CLI, 'cluster', 'set-replicas', '1', '--partitions', '2', '--etcd', cluster.etcd.url, '--log-format', 'json', '--log-level', 'warn'].map((a) => `'${a}'`).join(' ');
    const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, COLUMNS: '200' } });
    let screen = '';
    let seen: () => void = () => undefined;
    child.stdout!.on('data', (d: Buffer) => {
      screen += d.toString();
      seen();
    });
    const exited = once(child, 'exit').then(([code]) => code as number | null);
    const until = (test: () => boolean): Promise<void> =>
      new Promise((resolve, reject) => {
        if (test()) return resolve();
        seen = () => test() && resolve();
        exited.then((code) => reject(new Error(`script exited (${code}) first: ${screen.slice(-2000)}`)));
      });
    await until(() => /op-\d{8}-\d{6}-[0-9a-f]{6} pending/.test(screen));
    const id = /(op-\d{8}-\d{6}-[0-9a-f]{6}) pending/.exec(screen)![1]!;
    expect((await ops.get(id))!.record.args).toEqual({ kind: 'set-replicas', replicas: 1, partitions: [2] });
    await advance(id, (r) => ({ ...r, state: 'running', steps: [{ description: 'remove a replica of partition 2', partition: 2, state: 'running', phase: 'removing', bytesDone: 0, bytesTotal: 1000, startedAtMs: Date.now() }] }));
    await until(() => screen.includes(`${id} running  step 1/1 removing  0 B/1 kB`));
    await advance(id, (r) => ({ ...r, state: 'completed', finishedAtMs: Date.now(), steps: r.steps.map((st) => ({ ...st, state: 'done' as const })) }));
    expect(await exited, screen).toBe(0);
    expect(screen).toMatch(new RegExp(`${id} completed: set replicas to 1 on partitions 2`));
    expect(screen).not.toContain('operation-progress');
  }, 60_000);

  it('through --seeds a wait for a failed operation exits 1 with its error (the test fails it in place of the coordinator)', async () => {
    const waiting = new Waiting(tokens.admin, ['cluster', 'rebalance', '--poll-interval', '100ms', '--json', ...seedArgs()]);
    const first = await waiting.progress((e) => e.state === 'pending');
    const id = first.operation as string;
    await advance(id, (r) => ({ ...r, state: 'failed', finishedAtMs: Date.now(), error: 'the destination ran out of disk' }));
    expect(await waiting.exited).toBe(1);
    expect(waiting.stderr).toContain(`operation ${id} (rebalance) failed: the destination ran out of disk [STORE_OPERATION_FAILED]`);
    expect(waiting.stdout).toBe('');
  }, 60_000);

  it('Ctrl-C while waiting stops the waiting only: the operation stays, and the command says how to watch or cancel it', async () => {
    const waiting = new Waiting(tokens.admin, ['cluster', 'rebalance', ...etcdArgs()]);
    const first = await waiting.progress((e) => e.state === 'pending');
    const id = first.operation as string;
    waiting.child.kill('SIGINT');
    expect(await waiting.exited).toBe(64);
    expect(waiting.stderr).toContain(`stopped waiting; operation ${id} goes on (pending when last seen). Watch it: shardpipe cluster operations ${id}; cancel it: shardpipe cluster cancel ${id}`);
    expect((await ops.get(id))!.record.state).toBe('pending');
    await admin.cancel(id, 'test cleanup');
  }, 60_000);

  it('cluster status shows active operations and draining / drained nodes (--etcd, and --seeds through the node)', async () => {
    const map = (await cluster.store.read())!.map;
    const busy = map.byId(0)!.chain[0]!.node;
    const held = map.replicasOf(busy).length;
    const keys = operationKeys();
    const id = (await run(['cluster', 'drain-node', busy, '--no-wait', ...etcdArgs()])).stdout.trim();
    // In place of the coordinator: the marks a drain writes.
    await cluster.etcdClient.put(keys.drainingOf(busy)).value(JSON.stringify({ operation: id }));
    await cluster.etcdClient.put(keys.drainingOf(spare)).value(JSON.stringify({ operation: id }));
    try {
      for (const reach of [etcdArgs(), seedArgs()]) {
        const status = await run(['cluster', 'status', ...reach]);
        expect(status.code, status.stderr).toBe(0);
        expect(status.stdout).toMatch(new RegExp(`operations: \\d+ active\\n(  .*\\n)*  ${id} pending  submitted against map version 1`));
        expect(status.stdout).toContain(`draining: ${busy} still holds ${held} replica${held === 1 ? '' : 's'}`);
        expect(status.stdout).toContain(`drained: ${spare} holds no replicas; can be stopped`);
        const json = JSON.parse((await run(['cluster', 'status', '--json', ...reach])).stdout) as { operations: OperationRecord[]; draining: Array<{ node: string; replicas: number; drained: boolean }> };
        expect(json.operations.map((o) => o.id)).toContain(id);
        expect(json.draining).toEqual([
          { node: busy, replicas: held, drained: false },
          { node: spare, replicas: 0, drained: true },
        ].sort((a, b) => (a.node < b.node ? -1 : 1)));
      }
    } finally {
      await cluster.etcdClient.delete().prefix(keys.draining);
      await admin.cancel(id, 'test cleanup');
    }
  }, 60_000);
});
