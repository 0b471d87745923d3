/**
 * Gateway benchmark (a measurement, not a test).
 *
 * One store node child (`store start --no-sync`, 4 partitions) and one gateway child (`shardpipe
 * gateway`), measured in the same run:
 *   1. a no-op call to the gateway's own gRPC server (grpc.health.v1 Check: the same server, port and
 *      interceptors, no store call) — the ceiling of any gateway call;
 *   2. Get and Put ops/s through the gateway (gRPC) and with the thick client direct, at concurrency
 *      1 and 32; ratios gateway/no-op and gateway/direct. Each concurrency is warmed first, then its
 *      five ops (the no-op among them) take turns in 8 rounds (every other round in reverse), so a
 *      burst of the machine's other load falls on all of them alike; the goal line gives the ratio
 *      over all rounds, the median of the rounds' ratios (with their range) and the lock-step CPU
 *      model (the no-op's CPU per op summed over the processes ÷ the Get's);
 *   3. BulkPut of N sorted rows (client stream, 1000 rows a message) per-row (`rows`) and packed
 *      (`packed`, PackedBulkRows), vs StoreClient.bulkPutAll direct (separate key ranges, one
 *      partition each, same node, every path warmed first), each path loading N rows twice in
 *      alternating rounds: rows/s and the ratios.
 * Beside each rate: the CPU per op (per 1M rows for BulkPut) of the bench client, the gateway and
 * the node (from /proc): the three share the machine's cores, so their sum bounds the rates; and
 * the calls the node answered per op (from its /metrics: below 1 where the thick client merged
 * concurrent point ops into Multi calls).
 * Goals (issue 14): gateway Get at 32 ≥ 0.7× the no-op; BulkPut of sorted rows ≥ 0.7× direct.
 * Prints a table, then one JSON line with every figure.
 *
 * Run after `npx tsc -p tsconfig.json`: node dist/bench/gateway-bench.js [--rows N (default 200000)] [--ops N (default 2000)]
 *   [--only points|bulk] [--gateway-cpu-prof DIR (the gateway child runs with node --cpu-prof into DIR)]
 *   [--node-cpu-prof DIR (the same for the store node child)]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { create } from '@bufbuild/protobuf';
import { Client, credentials, makeGenericClientConstructor, type ClientWritableStream, type ServiceError } from '@grpc/grpc-js';
import { findFreePort } from '../common/index.js';
import { grpcServiceDefinition, GATEWAY_SERVICE_DESC, packBulkRows } from '../gateway/index.js';
import { BulkPutRequestSchema, GetRequestSchema, PutRequestSchema, type BulkPutRequest } from '../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';
import { Key, PartitionMap, StoreClient, type BulkRowInput } from '../store/index.js';
import { readCpuSeconds, stopChild, waitForReady } from './bench-processes.js';
import { fixed, int, table } from './bench-format.js';

const MAIN_JS = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');
const { values: args } = parseArgs({ options: { rows: { type: 'string', default: '200000' }, ops: { type: 'string', default: '2000' }, only: { type: 'string' }, 'gateway-cpu-prof': { type: 'string' }, 'node-cpu-prof': { type: 'string' }, help: { type: 'boolean' } } });
if (args.help) {
  process.stdout.write(
    'node dist/bench/gateway-bench.js [--rows N (BulkPut rows, default 200000)] [--ops N (calls per run at concurrency 1; 4× at 32; default 2000)]\n' +
      '  [--only points|bulk (run only the Get/Put or only the BulkPut part)] [--gateway-cpu-prof DIR (profile the gateway child with node --cpu-prof, written to DIR on exit)]\n' +
      '  [--node-cpu-prof DIR (the same for the store node child)]\n',
  );
  process.exit(0);
}
const ROWS = Number(args.rows);
const OPS = Number(args.ops);
if (!Number.isSafeInteger(ROWS) || ROWS < 1000) throw new RangeError(`--rows must be a whole number ≥ 1000, got ${args.rows}`);
if (!Number.isSafeInteger(OPS) || OPS < 10) throw new RangeError(`--ops must be a whole number ≥ 10, got ${args.ops}`);
if (args.only !== undefined && args.only !== 'points' && args.only !== 'bulk') throw new RangeError(`--only must be points or bulk, got ${args.only}`);
const RUN_POINTS = args.only !== 'bulk';
const RUN_BULK = args.only !== 'points';
/** Rounds the point ops are cut into, taking turns with the no-op (see measureRounds). */
const POINT_ROUNDS = 8;
/** Loads of --rows rows per BulkPut path, taking turns with the other paths. */
const BULK_ROUNDS = 2;

type Call = (...a: unknown[]) => unknown;
type GatewayClient = Client & { Check: Call; Get: Call; Put: Call; BulkPut: Call };
const GatewayGrpcClient = makeGenericClientConstructor(grpcServiceDefinition(GATEWAY_SERVICE_DESC), 'Gateway');
const HealthCheckClient = makeGenericClientConstructor(
  { Check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } },
  'Health',
);

function startChild(argv: string[], nodeFlags: string[] = []): { child: ChildProcess; exited: Promise<void> } {
  const child = spawn(process.execPath, [...nodeFlags, MAIN_JS, ...argv, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return { child, exited: once(child, 'exit').then(() => undefined) };
}

function unary<T>(fn: (cb: (err: ServiceError | null, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value as T))));
}

/**
 * CPU microseconds per op of the last `measure`, per process (from /proc and process.cpuUsage; NaN
 * where not available), and the calls the node answered per op (`nodeCalls`, from its /metrics).
 */
let lastCpu = { gateway: NaN, node: NaN, client: NaN, nodeCalls: NaN };

/** Calls the node has answered so far (every method and code of `shardpipe_store_rpc_total`), NaN if /metrics fails. */
async function nodeCallCount(): Promise<number> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${nodeMetricsPort}/metrics`)).text();
    let sum = 0;
    for (const m of text.matchAll(/^shardpipe_store_rpc_total\{[^}]*\} (\S+)$/gm)) sum += Number(m[1]);
    return sum;
  } catch {
    return NaN;
  }
}

/** CPU seconds of a child so far (from /proc), undefined without one. */
async function childCpu(pid: number | undefined): Promise<number | undefined> {
  return pid === undefined ? undefined : readCpuSeconds(pid);
}

/**
 * Runs `op` `total` times with `concurrency` callers; ops/s. Also sets lastCpu (the bench client,
 * the gateway and the node: all three share the machine's cores, so each one's share bounds the rate).
 */
async function measure(total: number, concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  return (await measureRaw(total, concurrency, op)).rate;
}

/** What one `measure` took: wall ms, and CPU µs of each process over it (NaN where not available). */
interface Spent {
  ops: number;
  ms: number;
  gatewayUs: number;
  nodeUs: number;
  clientUs: number;
  nodeCalls: number;
}

async function measureRaw(total: number, concurrency: number, op: (i: number) => Promise<unknown>): Promise<Spent & { rate: number }> {
  let next = 0;
  // Read outside the CPU window: the scrape's own CPU on the node is not counted.
  const callsBefore = await nodeCallCount();
  const [gatewayBefore, nodeBefore] = [await childCpu(gatewayPid), await childCpu(nodePid)];
  const clientBefore = process.cpuUsage();
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) await op(next++);
  }));
  const rate = total / ((performance.now() - started) / 1000);
  const client = process.cpuUsage(clientBefore);
  const [gatewayAfter, nodeAfter] = [await childCpu(gatewayPid), await childCpu(nodePid)];
  const nodeCalls = ((await nodeCallCount()) - callsBefore) / total;
  const spentUs = (before: number | undefined, after: number | undefined): number => (before === undefined || after === undefined ? NaN : (after - before) * 1e6);
  const spent: Spent = { ops: total, ms: (total / rate) * 1000, gatewayUs: spentUs(gatewayBefore, gatewayAfter), nodeUs: spentUs(nodeBefore, nodeAfter), clientUs: client.user + client.system, nodeCalls: nodeCalls * total };
  lastCpu = perOpCpu(spent);
  return { ...spent, rate };
}

/** CPU µs per op of what was spent, and node calls per op. */
function perOpCpu(s: Spent): typeof lastCpu {
  return { gateway: s.gatewayUs / s.ops, node: s.nodeUs / s.ops, client: s.clientUs / s.ops, nodeCalls: s.nodeCalls / s.ops };
}

/**
 * Runs each of `ops` for `total` ops at `concurrency`, cut into `rounds` rounds that take the ops
 * in turn (in reverse order every other round), so the machine's load, which moves all of them
 * alike, and the order within a round weigh on each op the same; each op's rate is over the sum of
 * its rounds. `op(i)` gets i in `[0, total)` once over the rounds.
 */
async function measureRounds(ops: ReadonlyArray<(i: number) => Promise<unknown>>, total: number, concurrency: number, rounds: number): Promise<Array<{ rate: number; cpu: typeof lastCpu; roundRates: number[] }>> {
  const sums: Spent[] = ops.map(() => ({ ops: 0, ms: 0, gatewayUs: 0, nodeUs: 0, clientUs: 0, nodeCalls: 0 }));
  const roundRates: number[][] = ops.map(() => []);
  for (let round = 0; round < rounds; round++) {
    const from = Math.round((round * total) / rounds);
    const n = Math.round(((round + 1) * total) / rounds) - from;
    const order = ops.map((_, k) => k);
    if (round % 2 === 1) order.reverse();
    for (const k of order) {
      const spent = await measureRaw(n, concurrency, (i) => ops[k]!(from + i));
      roundRates[k]!.push(spent.rate);
      const sum = sums[k]!;
      for (const field of ['ops', 'ms', 'gatewayUs', 'nodeUs', 'clientUs', 'nodeCalls'] as const) sum[field] += spent[field];
    }
  }
  return sums.map((sum, k) => ({ rate: sum.ops / (sum.ms / 1000), cpu: perOpCpu(sum), roundRates: roundRates[k]! }));
}

/**
 * The median over rounds of `a`'s rate ÷ `b`'s in the same round: a burst of the machine's other
 * load that falls on one op's turn moves one round's ratio, not the median (the ratio of the
 * totals above weighs the slowest rounds most).
 */
function medianRoundRatio(a: { roundRates: number[] }, b: { roundRates: number[] }): number {
  const ratios = a.roundRates.map((rate, i) => rate / b.roundRates[i]!).sort((x, y) => x - y);
  const mid = ratios.length >> 1;
  return ratios.length % 2 === 1 ? ratios[mid]! : (ratios[mid - 1]! + ratios[mid]!) / 2;
}
let gatewayPid: number | undefined;
let nodePid: number | undefined;

function keyOf(prefix: number, i: number): Buffer {
  const key = Buffer.alloc(16);
  key.writeUInt8(prefix, 0);
  key.writeUInt32BE(i, 12);
  return key;
}

const dir = await mkdtemp(join(tmpdir(), 'shardpipe-gateway-bench-'));
const nodeAddress = `127.0.0.1:${await findFreePort()}`;
const gatewayPort = await findFreePort();
const nodeMetricsPort = await findFreePort();
const mapFile = join(dir, 'map.json');
await writeFile(mapFile, JSON.stringify(PartitionMap.evenlySplit(1, [nodeAddress], 4).toJson()));
const node = startChild(['store', 'start', '--map', mapFile, '--node', nodeAddress, '--data', join(dir, 'node'), '--no-sync', '--metrics-port', String(nodeMetricsPort)], args['node-cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', args['node-cpu-prof']] : []);
const gateway = { child: undefined as ChildProcess | undefined, exited: Promise.resolve() };
const direct = new StoreClient({ seeds: [nodeAddress] });
let gw: GatewayClient | undefined;
let health: GatewayClient | undefined;
try {
  await waitForReady(node.child);
  nodePid = node.child.pid;
  Object.assign(gateway, startChild(['gateway', '--seeds', nodeAddress, '--listen', `127.0.0.1:${gatewayPort}`], args['gateway-cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', args['gateway-cpu-prof']] : []));
  await waitForReady(gateway.child!);
  gatewayPid = gateway.child!.pid;
  gw = new GatewayGrpcClient(`127.0.0.1:${gatewayPort}`, credentials.createInsecure()) as unknown as GatewayClient;
  health = new HealthCheckClient(`127.0.0.1:${gatewayPort}`, credentials.createInsecure()) as unknown as GatewayClient;
  const value = Buffer.alloc(100, 7);
  for (let i = 0; i < 1000; i++) await direct.put(Key.fromBytes(keyOf(0x40, i)), value);

  // Warm every path (JIT, channels, the gateway's map) before the clock.
  await measure(500, 8, () => unary((cb) => health!.Check(Buffer.alloc(0), cb)));
  await measure(500, 8, (i) => unary((cb) => gw!.Get(create(GetRequestSchema, { key: keyOf(0x40, i % 1000) }), cb)));
  await measure(500, 8, (i) => unary((cb) => gw!.Put(create(PutRequestSchema, { key: keyOf(0x43, i), value }), cb)));
  await measure(500, 8, (i) => direct.get(Key.fromBytes(keyOf(0x40, i % 1000))));

  const rows: string[][] = [];
  const figures: Record<string, number> = {};
  /** Records a measured op's rate and each process's CPU per op under its name. */
  const record = (name: string, concurrency: number, { rate, cpu }: { rate: number; cpu: typeof lastCpu }): void => {
    Object.assign(figures, { [`${name}_c${concurrency}`]: rate, [`client_cpu_us_${name}_c${concurrency}`]: cpu.client, [`node_cpu_us_${name}_c${concurrency}`]: cpu.node, [`node_calls_per_op_${name}_c${concurrency}`]: cpu.nodeCalls });
    if (!name.startsWith('direct_')) figures[`gateway_cpu_us_${name.replace('gateway_', '')}_c${concurrency}`] = cpu.gateway;
  };
  const cpuCells = (cpu: typeof lastCpu, viaGateway: boolean): string[] => [viaGateway ? fixed(cpu.gateway, 0) : '', fixed(cpu.client, 0), fixed(cpu.node, 0), fixed(cpu.nodeCalls, 3)];
  for (const concurrency of RUN_POINTS ? [1, 32] : []) {
    const total = concurrency === 1 ? OPS : OPS * 4;
    // Warm this concurrency's paths (at 32 the gateway gathers Gets into Multi calls) before the clock.
    await measure(Math.min(total, 1000), concurrency, () => unary((cb) => health!.Check(Buffer.alloc(0), cb)));
    await measure(Math.min(total, 1000), concurrency, (i) => unary((cb) => gw!.Get(create(GetRequestSchema, { key: keyOf(0x40, i % 1000) }), cb)));
    const [noop, gwGet, directGet, gwPut, directPut] = await measureRounds(
      [
        () => unary((cb) => health!.Check(Buffer.alloc(0), cb)),
        (i) => unary((cb) => gw!.Get(create(GetRequestSchema, { key: keyOf(0x40, i % 1000) }), cb)),
        (i) => direct.get(Key.fromBytes(keyOf(0x40, i % 1000))),
        (i) => unary((cb) => gw!.Put(create(PutRequestSchema, { key: keyOf(0x41, i), value }), cb)),
        (i) => direct.put(Key.fromBytes(keyOf(0x42, i)), value),
      ],
      total,
      concurrency,
      POINT_ROUNDS,
    );
    figures[`gateway_get_vs_noop_median_round_c${concurrency}`] = medianRoundRatio(gwGet!, noop!);
    figures[`gateway_get_vs_noop_min_round_c${concurrency}`] = Math.min(...gwGet!.roundRates.map((rate, i) => rate / noop!.roundRates[i]!));
    figures[`gateway_get_vs_noop_max_round_c${concurrency}`] = Math.max(...gwGet!.roundRates.map((rate, i) => rate / noop!.roundRates[i]!));
    // The lock-step model (gateway/README.md, round 6): at 32 the three processes take each wave in
    // turn, so the rate is about 1 ÷ their CPU per op added up; its ratio moves less with the load.
    figures[`gateway_get_vs_noop_cpu_model_c${concurrency}`] = (noop!.cpu.gateway + noop!.cpu.client + noop!.cpu.node) / (gwGet!.cpu.gateway + gwGet!.cpu.client + gwGet!.cpu.node);
    record('noop', concurrency, noop!);
    record('gateway_get', concurrency, gwGet!);
    record('direct_get', concurrency, directGet!);
    record('gateway_put', concurrency, gwPut!);
    record('direct_put', concurrency, directPut!);
    rows.push([`no-op (gateway health Check)`, String(concurrency), int(noop!.rate), '', '', ...cpuCells(noop!.cpu, true)]);
    rows.push(['Get via gateway', String(concurrency), int(gwGet!.rate), fixed(gwGet!.rate / noop!.rate, 2), fixed(gwGet!.rate / directGet!.rate, 2), ...cpuCells(gwGet!.cpu, true)]);
    rows.push(['Get direct', String(concurrency), int(directGet!.rate), fixed(directGet!.rate / noop!.rate, 2), '', ...cpuCells(directGet!.cpu, false)]);
    rows.push(['Put via gateway', String(concurrency), int(gwPut!.rate), fixed(gwPut!.rate / noop!.rate, 2), fixed(gwPut!.rate / directPut!.rate, 2), ...cpuCells(gwPut!.cpu, true)]);
    rows.push(['Put direct', String(concurrency), int(directPut!.rate), fixed(directPut!.rate / noop!.rate, 2), '', ...cpuCells(directPut!.cpu, false)]);
  }

  // BulkPut of sorted rows: through the gateway (client stream, per-row and packed messages) and
  // direct, into separate key ranges (one partition each), in alternating rounds.
  if (RUN_BULK) {
    const message = (prefix: number, from: number, n: number, packed: boolean): BulkPutRequest => {
      const rowsOf = Array.from({ length: n }, (_, j) => ({ key: keyOf(prefix, from + j), value }));
      return create(BulkPutRequestSchema, packed ? { packed: packBulkRows(rowsOf) } : { rows: rowsOf });
    };
    const gatewayBulk = (prefix: number, first: number, n: number, packed: boolean): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        const call = gw!.BulkPut((err: ServiceError | null) => (err ? reject(err) : resolve())) as ClientWritableStream<BulkPutRequest>;
        (async () => {
          for (let from = first; from < first + n; from += 1000) {
            if (!call.write(message(prefix, from, Math.min(1000, first + n - from), packed))) await once(call, 'drain');
          }
          call.end();
        })().catch(reject);
      });
    const directBulkPut = (prefix: number, first: number, n: number) =>
      direct.bulkPutAll((function* (): Generator<BulkRowInput[]> {
        for (let from = first; from < first + n; from += 1000) yield Array.from({ length: Math.min(1000, first + n - from) }, (_, j) => ({ key: keyOf(prefix, from + j), value }));
      })(), { maxInFlight: 4 });
    // Warm every bulk path (the gateway's and the node's BulkInsert JIT) before the clock, each into
    // the partition its measured rows go to: otherwise the first measured load pays the warm-up.
    const warmRows = Math.min(ROWS, 50_000);
    await gatewayBulk(0x81, 0, warmRows, false);
    await gatewayBulk(0x21, 0, warmRows, true);
    await directBulkPut(0xc1, 0, warmRows);
    // One "op" is a whole load of ROWS rows; each path loads BULK_ROUNDS times (fresh keys each time).
    const [gwBulk, gwPacked, directBulk] = (
      await measureRounds([(i) => gatewayBulk(0x80, i * ROWS, ROWS, false), (i) => gatewayBulk(0x20, i * ROWS, ROWS, true), (i) => directBulkPut(0xc0, i * ROWS, ROWS)], BULK_ROUNDS, 1, BULK_ROUNDS)
    ).map((m) => ({ rate: m.rate * ROWS, cpu: m.cpu }));
    // Per 1M rows, CPU s = µs per load ÷ rows.
    const perMRows = (us: number): number => us / ROWS;
    Object.assign(figures, {
      gateway_bulk_rows_per_sec: gwBulk!.rate,
      gateway_packed_bulk_rows_per_sec: gwPacked!.rate,
      direct_bulk_rows_per_sec: directBulk!.rate,
      gateway_cpu_s_per_m_bulk_rows: perMRows(gwBulk!.cpu.gateway),
      client_cpu_s_per_m_bulk_rows_gateway: perMRows(gwBulk!.cpu.client),
      node_cpu_s_per_m_bulk_rows_gateway: perMRows(gwBulk!.cpu.node),
      gateway_cpu_s_per_m_packed_bulk_rows: perMRows(gwPacked!.cpu.gateway),
      client_cpu_s_per_m_packed_bulk_rows_gateway: perMRows(gwPacked!.cpu.client),
      node_cpu_s_per_m_packed_bulk_rows_gateway: perMRows(gwPacked!.cpu.node),
      client_cpu_s_per_m_bulk_rows_direct: perMRows(directBulk!.cpu.client),
      node_cpu_s_per_m_bulk_rows_direct: perMRows(directBulk!.cpu.node),
    });
    const s = (us: number): string => `${fixed(perMRows(us), 2)} s/1M`;
    rows.push([`BulkPut via gateway, per-row (${int(ROWS)} sorted rows × ${BULK_ROUNDS})`, '-', int(gwBulk!.rate), '', fixed(gwBulk!.rate / directBulk!.rate, 2), s(gwBulk!.cpu.gateway), s(gwBulk!.cpu.client), s(gwBulk!.cpu.node), '']);
    rows.push([`BulkPut via gateway, packed (${int(ROWS)} sorted rows × ${BULK_ROUNDS})`, '-', int(gwPacked!.rate), '', fixed(gwPacked!.rate / directBulk!.rate, 2), s(gwPacked!.cpu.gateway), s(gwPacked!.cpu.client), s(gwPacked!.cpu.node), '']);
    rows.push(['bulkPutAll direct', '-', int(directBulk!.rate), '', '', '', s(directBulk!.cpu.client), s(directBulk!.cpu.node), '']);
  }

  process.stdout.write(table(['operation', 'concurrency', 'ops/s (rows/s)', '÷ no-op', '÷ direct', 'gateway CPU µs/op', 'bench client CPU µs/op', 'node CPU µs/op', 'node calls/op'], rows) + '\n');
  const goals = {
    getVsNoopC32: figures.gateway_get_c32! / figures.noop_c32!,
    getVsNoopC32MedianRound: figures.gateway_get_vs_noop_median_round_c32!,
    bulkVsDirect: figures.gateway_bulk_rows_per_sec! / figures.direct_bulk_rows_per_sec!,
    packedBulkVsDirect: figures.gateway_packed_bulk_rows_per_sec! / figures.direct_bulk_rows_per_sec!,
  };
  // With --only, the part not run has no figure: its goal is left out, not printed as NaN.
  const measured = [
    Number.isFinite(goals.getVsNoopC32)
      ? `gateway Get c32 ÷ no-op = ${fixed(goals.getVsNoopC32, 2)} over all rounds, median of the ${POINT_ROUNDS} rounds' ${fixed(goals.getVsNoopC32MedianRound, 2)} (${fixed(figures.gateway_get_vs_noop_min_round_c32!, 2)}–${fixed(figures.gateway_get_vs_noop_max_round_c32!, 2)}), CPU model ${fixed(figures.gateway_get_vs_noop_cpu_model_c32!, 2)} (goal ≥ 0.70)`
      : undefined,
    Number.isFinite(goals.bulkVsDirect) ? `BulkPut per-row ÷ direct = ${fixed(goals.bulkVsDirect, 2)}, packed ÷ direct = ${fixed(goals.packedBulkVsDirect, 2)} (goal ≥ 0.70)` : undefined,
  ].filter((g) => g !== undefined);
  process.stdout.write(`goals: ${measured.join('; ')}\n`);
  process.stdout.write(JSON.stringify({ bench: 'gateway', rows: ROWS, ops: OPS, figures, goals }) + '\n');
} finally {
  gw?.close();
  health?.close();
  direct.close();
  if (gateway.child) await stopChild(gateway.child, gateway.exited);
  await stopChild(node.child, node.exited);
  await rm(dir, { recursive: true, force: true });
}
