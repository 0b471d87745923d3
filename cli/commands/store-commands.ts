import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES, DEFAULT_WRITE_BUFFER_BYTES, checkBind, parseDurationMs, widenOldGenerationGrowth } from '../../common/index.js';
import type { EtcdNodeAgent, StoredMap } from '../../store/index.js';
import { CliUsageError } from '../cli-env.js';
import { EXIT, parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { metricsPortOf, withMetricsEndpointOptions, type MetricsEndpointFlags } from '../common-options.js';
import { startMetricsEndpoint } from '../metrics-endpoint.js';
import { etcdConnectionOf, withEtcdOptions, type EtcdFlags } from '../etcd-options.js';
import { nodeIdentity } from '../node-identity.js';

interface StartOptions extends MetricsEndpointFlags, EtcdFlags {
  map?: string;
  lease: string;
  node: string;
  data: string;
  listen?: string;
  sync: boolean;
  maxKeyBytes: string;
  maxValueBytes: string;
  maxBatchBytes: string;
  maxInflightBytes: string;
  writeBufferBytes: string;
  flowControlWindow: string;
  inflightWait: string;
  sweepInterval: string;
  shutdownGrace: string;
  forwardTimeout: string;
  gcGrace: string;
  changeLogRetention: string;
}

export function registerStoreCommands(program: Command, ctx: CliContext): void {
  const store = program.command('store').description('store node');
  const start = store
    .command('start')
    .description('run a store node in the foreground until SIGTERM/SIGINT (then drains gracefully)')
    .option('--map <file>', 'partition map file; optional once the node has persisted a map in --data')
    .requiredOption('--node <host:port>', 'this node\'s address as named in the map; also the listen address')
    .requiredOption('--data <dir>', 'data folder: the persisted map and one LevelDB per partition')
    .option('--listen <host:port>', 'bind here instead of --node (e.g. 0.0.0.0:7001 in a container)')
    .option('--no-sync', 'acknowledge writes before they are fsynced: faster, but a machine crash can lose acknowledged writes')
    .option('--max-key-bytes <n>', 'longest key accepted', '4096')
    .option('--max-value-bytes <n>', 'largest value accepted', String(4 * 1024 * 1024))
    .option('--max-batch-bytes <n>', 'largest BulkInsert batch (key + value bytes)', String(16 * 1024 * 1024))
    .option('--max-inflight-bytes <n>', 'request bytes the node holds at once over all calls; a request counts the copies it holds (a BulkInsert 4× its size per row, 3× packed; others 2×), a waiting call the --flow-control-window it may fill; beyond it calls wait (--inflight-wait), then get RESOURCE_EXHAUSTED with a retry hint and their stream is reset. At least 2 × (--max-batch-bytes + 1 MiB)', String(DEFAULT_MAX_INFLIGHT_BYTES))
    .option('--flow-control-window <bytes>', 'HTTP/2 window the node advertises (65535–2147483647): a client sends this much per round trip on a call; a call waiting for --max-inflight-bytes is charged this much of it', String(DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES))
    .option('--write-buffer-bytes <n>', 'LevelDB memtable per partition: larger loads faster; a partition holds up to twice it in memory, and reopening after a full disk needs about it free', String(DEFAULT_WRITE_BUFFER_BYTES))
    .option('--inflight-wait <duration>', 'how long a call waits for room in --max-inflight-bytes before it is refused', '2s')
    .option('--sweep-interval <duration>', 'how often expired entries are deleted (0 = never)', '5s')
    .option('--shutdown-grace <duration>', 'how long shutdown waits for in-flight calls', '10s')
    .option('--forward-timeout <duration>', 'in a chain of replicas: a write forwarded to the next replica and not acknowledged within this is sent again to the then-current successor (and logged), never dropped', '2s')
    .option('--gc-grace <duration>', 'how long the data of a partition that left this node (moved, drained, fewer replicas, merged away by a newer map) stays on disk, untouched and readable for repair, before it is deleted (s/m/h); a partition that comes back within it reuses its data', '10m')
    .option('--change-log-retention <spec>', 'KEYS,DURATION: per partition, the keys of recent writes kept for fast sync (a replica back from a short outage copies only what changed since its last write): at most KEYS keys and DURATION old, whichever is reached first; 0 keys = no log (every sync copies the whole partition)', '1000000,1h');
  withEtcdOptions(start, 'take the partition map from etcd instead of --map: register under a lease, wait for a map (shardpipe cluster init), follow every change; SetPartitionMap is refused. Endpoints http(s)://HOST:PORT[,...]; a user in the URL logs in with etcd user auth (never logged)')
    .option('--lease <duration>', 'with --etcd: the node\'s lease; a node that cannot renew it for this long is fenced (STORE_FENCED) and the coordinator drops it from its chains', '5s');
  withMetricsEndpointOptions(start, {
    metricsPort: 'serve Prometheus /metrics (RPC counts and latencies by method and status, process metrics) on this port; 0 = any free port',
    authTokenFile: 'tokens this node accepts, one "ROLE TOKEN" per line (ROLE: admin, write, read, or replica for chain forwards between nodes); also guards /metrics (read). Without it only loopback clients are accepted',
    insecure: 'without --auth-token-file, still bind a non-loopback address and accept any client (trusted networks only)',
  }).action(async (opts: StartOptions) => {
    // From here a SIGTERM, even during start-up, ends in a drain rather than a kill.
    ctx.lifecycle.start();
    // A process-wide V8 setting (common/old-generation.ts), so here: tests run StoreServer inside the test runner.
    widenOldGenerationGrowth();
    ctx.errors.setContext({ node: opts.node });
    const tokens = ctx.serverTokens(opts.authTokenFile);
    const tls = ctx.serverTls();
    const insecure = opts.insecure ?? false;
    // Fail before the node opens its data, not after.
    if (opts.metricsPort !== undefined) checkBind(opts.metricsHost, { what: '/metrics endpoint', authenticated: tokens !== undefined, insecure, flag: '--metrics-host' });
    if (opts.etcd !== undefined && opts.map !== undefined) throw new CliUsageError('--map and --etcd exclude each other: with --etcd the map comes from etcd');
    // Loaded by the command that runs it: `--help` and other commands start without store/.
    const { EtcdNodeAgent, OperationAdmin, PartitionMap, StoreServer, parseChangeLogRetention } = await import('../../store/index.js');
    const changeLogRetention = parseChangeLogRetention(opts.changeLogRetention);
    let initialMap = opts.map ? PartitionMap.fromJson(JSON.parse(await readFile(opts.map, 'utf8'))) : undefined;
    let agent: EtcdNodeAgent | undefined;
    let fromEtcd: StoredMap | undefined;
    if (opts.etcd !== undefined) {
      const identity = await nodeIdentity(opts.data);
      agent = ctx.lifecycle.add('etcd membership', await EtcdNodeAgent.start({ etcd: await etcdConnectionOf(opts.etcd, opts), node: opts.node, leaseMs: parseDurationMs(opts.lease), identity, logger: ctx.logger, faultInjectionHoldPreparesFile: ctx.config.faultInjection.holdPreparesFile }), (a) => a.close());
      ctx.print(JSON.stringify({ event: 'registered', node: opts.node, leaseMs: agent.leaseMs }));
      fromEtcd = await agent.waitForMap(ctx.lifecycle.start());
      initialMap = fromEtcd.map;
    }
    const metricsPort = metricsPortOf(opts);
    const maxBatchBytes = parsePositiveInt(opts.maxBatchBytes, '--max-batch-bytes');
    const maxInflightBytes = parsePositiveInt(opts.maxInflightBytes, '--max-inflight-bytes');
    // A request counts twice (received message and decoded copy): the budget must hold the largest one.
    const smallestBudget = 2 * (maxBatchBytes + 1024 * 1024);
    if (maxInflightBytes < smallestBudget) {
      throw new CliUsageError(`--max-inflight-bytes must be at least twice the largest request (2 × (--max-batch-bytes + 1 MiB) = ${smallestBudget}), got ${maxInflightBytes}`);
    }
    const metrics = await startMetricsEndpoint(ctx, { port: metricsPort, host: opts.metricsHost, access: () => ({ tokens, tls, insecure }) });
    const starting = StoreServer.start({
      node: opts.node,
      dataDir: opts.data,
      listen: opts.listen,
      initialMap,
      mapFromEtcd: agent !== undefined,
      syncWrites: opts.sync,
      maxKeyBytes: parsePositiveInt(opts.maxKeyBytes, '--max-key-bytes'),
      maxValueBytes: parsePositiveInt(opts.maxValueBytes, '--max-value-bytes'),
      maxBatchBytes,
      maxInflightBytes,
      writeBufferBytes: parsePositiveInt(opts.writeBufferBytes, '--write-buffer-bytes'),
      flowControlWindowBytes: parsePositiveInt(opts.flowControlWindow, '--flow-control-window'),
      inflightWaitMs: parseDurationMs(opts.inflightWait),
      sweepIntervalMs: parseDurationMs(opts.sweepInterval),
      shutdownGraceMs: parseDurationMs(opts.shutdownGrace),
      forwardTimeoutMs: parseDurationMs(opts.forwardTimeout),
      gcGraceMs: parseDurationMs(opts.gcGrace, { name: '--gc-grace', maxMs: 365 * 24 * 3_600_000 }),
      changeLogRetention,
      metricsRegistry: metrics.registry,
      tokens,
      tls,
      insecure,
      faultInjectionWithoutMulti: ctx.config.faultInjection.storeWithoutMulti,
      faultInjectionHoldForwardsFile: ctx.config.faultInjection.holdForwardsFile,
      // Operation RPCs (cluster … --seeds) go to etcd through the membership's connection.
      operations: agent && new OperationAdmin(agent.etcdClient, agent.store.display),
      logger: ctx.logger,
    });
    // Drains on the way out (health NOT_SERVING, new calls refused, calls in flight finished) while /metrics still answers.
    const server = ctx.lifecycle.add('store node', await starting, (s) => s.shutdown());
    // Syncs copy from peers with the node's own credentials, as map catch-up does.
    // A fast sync's ChangedKeys is node to node (role replica), like a chain forward.
    if (agent !== undefined && fromEtcd !== undefined) await agent.follow(server.node, fromEtcd, { token: tokens?.peerToken, tls }, tokens === undefined ? undefined : { token: tokens.replicaToken, tls });
    // Tests and supervisors wait for this line on stdout before sending traffic.
    ctx.print(JSON.stringify({ event: 'ready', node: opts.node, port: server.port, mapVersion: server.node.map.version, ...(metrics.port === undefined ? {} : { metricsPort: metrics.port }) }));
    await ctx.lifecycle.untilSignal();
  });

  store
    .command('health')
    .description('asks a node\'s grpc.health.v1 service; exit 0 when SERVING, 1 otherwise (for container health checks). The node is NOT_SERVING while draining or while any of its partitions cannot write')
    .requiredOption('--node <host:port>', 'the node to ask')
    .option('--partition <id>', 'ask about one partition instead (NOT_SERVING while it recovers from a write fault such as a full disk)')
    .option('--timeout <duration>', 'how long to wait for the answer', '2s')
    .action(async (opts: { node: string; partition?: string; timeout: string }) => {
      const partition = opts.partition === undefined ? undefined : parsePositiveInt(opts.partition, '--partition');
      const { checkHealth, partitionHealthService } = await import('../../store/index.js');
      const status = await checkHealth(opts.node, parseDurationMs(opts.timeout), partition === undefined ? '' : partitionHealthService(partition), ctx.clientTls());
      ctx.print(JSON.stringify({ node: opts.node, ...(partition === undefined ? {} : { partition }), status }));
      if (status !== 'SERVING') process.exitCode = EXIT.failed;
    });
}
