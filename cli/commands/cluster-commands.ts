import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { PartitionMap } from '../../store/index.js';
import { CliUsageError } from '../cli-env.js';
import type { InitEtcdFlags, StatusFlags } from '../cluster-etcd.js';
import { withEtcdOptions, type EtcdFlags } from '../etcd-options.js';
import { formatTable, parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { SEEDS_HELP } from '../common-options.js';
import { generateRoleTokens, writeTokenFile } from '../token-file.js';
import { registerOperationCommands } from './operation-commands.js';

export function registerClusterCommands(program: Command, ctx: CliContext): void {
  const cluster = program.command('cluster').description('partition map administration');

  const init = cluster
    .command('init')
    .description('write a version-1 partition map: partitions split evenly over the first two key bytes, or at --split-keys. With --etcd: the first map of a replicated cluster, written to etcd from the registered nodes (exit 1 when a map exists or too few nodes registered in time)')
    .option('--nodes <list>', 'without --etcd (required then): store node addresses HOST:PORT[,HOST:PORT...]; partitions are assigned round-robin')
    .option('--partitions <n>', 'number of partitions (1–65536; ignored with --split-keys)', '8')
    .option('--split-keys <file>', 'file with one split key per line (UTF-8), sorted; N keys make N+1 partitions')
    .option('--map-version <n>', 'version of the map written (file maps only; a map in etcd starts at 1)', '1')
    .option('--out <file>', 'without --etcd (required then): where to write the map (JSON)')
    .option('--replicas <n>', 'with --etcd: replicas per chain, on distinct nodes, heads spread evenly', '1')
    .option('--wait <duration>', 'with --etcd: how long to wait for --replicas nodes to register', '30s')
    .option('--exists-ok', 'with --etcd: exit 0 (and change nothing) when etcd holds a map already, for a one-shot init service that runs on every start');
  withEtcdOptions(init, 'write the map to this etcd instead of a file, placing chains on the nodes registered there (store start --etcd). Endpoints http(s)://HOST:PORT[,...]; a user in the URL logs in with etcd user auth (never logged)');
  init.action(async (opts: InitEtcdFlags & { nodes?: string; mapVersion: string; out?: string }) => {
      if (opts.etcd !== undefined) {
        if (opts.nodes !== undefined || opts.out !== undefined) throw new CliUsageError('--nodes and --out are for file maps: with --etcd the nodes are the registered ones and the map goes to etcd');
        // etcd and coordinator code is loaded by the commands that use it (here and below), not at start-up.
        const { clusterInitEtcd } = await import('../cluster-etcd.js');
        await clusterInitEtcd(ctx, { ...opts, etcd: opts.etcd });
        return;
      }
      if (opts.nodes === undefined || opts.out === undefined) throw new CliUsageError('cluster init needs --nodes and --out (a map file), or --etcd URL (a map in etcd)');
      const nodes = opts.nodes.split(',').map((n) => n.trim()).filter(Boolean);
      const version = parsePositiveInt(opts.mapVersion, '--map-version');
      const { PartitionMap } = await import('../../store/index.js');
      let map: PartitionMap;
      if (opts.splitKeys) {
        const { readSplitKeys } = await import('../cluster-etcd.js');
        map = PartitionMap.fromSplitKeys(version, nodes, await readSplitKeys(opts.splitKeys));
      } else {
        map = PartitionMap.evenlySplit(version, nodes, parsePositiveInt(opts.partitions, '--partitions'));
      }
      await writeFile(opts.out, JSON.stringify(map.toJson(), null, 2) + '\n');
      ctx.print(`wrote map version ${map.version}: ${map.partitions.length} partitions on ${map.nodes().length} nodes to ${opts.out}`);
    });

  cluster
    .command('map')
    .description('print the partition map the cluster serves (newest version any seed has)')
    .option('--seeds <list>', SEEDS_HELP)
    .option('--json', 'print the map file form')
    .action(async (opts: { seeds?: string; json?: boolean }) => {
      const { rangeText, withClient } = await import('../store-io.js');
      const map = await withClient(ctx.seeds(opts.seeds), ctx, (client) => client.refreshMap());
      if (opts.json) ctx.print(JSON.stringify(map.toJson()));
      else {
        ctx.print(`map version ${map.version}`);
        ctx.print(formatTable(['id', 'range', 'node'], map.partitions.map((p) => [String(p.id), rangeText(p.start, p.end), p.node])));
      }
    });

  const status = cluster
    .command('status')
    .description('show every partition\'s chain (head first), epoch and replica states (serving, syncing); with --etcd also whether each replica\'s node holds a live lease; then active operations (one line each) and nodes being drained ("drained: … can be stopped" once one holds nothing; with --seeds when the node lists operations). Exit 0 when shown, 1 when etcd or the nodes do not answer')
    .option('--seeds <list>', `${SEEDS_HELP}; asked when --etcd is not given`)
    .option('--json', 'print {version, replicas, partitions: [{id, start, end, epoch, chain: [{node, state, live?}]}], nodes?, operations?: [record with progress], draining?: [{node, replicas, drained}]} as JSON');
  withEtcdOptions(status, 'read the map and the node leases from this etcd instead of asking the nodes. Endpoints http(s)://HOST:PORT[,...]');
  status.action(async (opts: StatusFlags) => (await import('../cluster-etcd.js')).clusterStatus(ctx, opts));

  cluster
    .command('check')
    .description('every replica of every partition digests its copy (keys, values, expiries, etags); reports each partition as consistent or names the diverging replica and the first differing key range. Syncing replicas are shown but not judged. Exit 0 only when every partition is consistent, 1 otherwise')
    .option('--seeds <list>', SEEDS_HELP)
    .option('--page-entries <n>', 'entries of a partition one digest call covers, about: a larger partition is compared page by page, each page at one sequence number of its own (default 200000, about a second of a loaded node\'s work)')
    .option('--json', 'print {consistent, partitions: [{id, epoch, replicas: [{node, count, digest, state, error?}], consistent, pages: {checked, total}, diverging?, firstDifference?: {start, end}}]} (keys hex)')
    .action(async (opts: { seeds?: string; json?: boolean; pageEntries?: string }) => (await import('../cluster-check.js')).clusterCheck(ctx, opts));

  const repair = cluster
    .command('repair')
    .description('resync one replica: it goes back to syncing at the tail of partition PARTITION\'s chain (one etcd transaction, epoch + 1), copies the partition again from the tail and is made serving once the copy matches. Refused for the chain\'s only serving replica')
    .argument('<partition>', 'partition id (cluster status shows them)')
    .requiredOption('--replica <host:port>', 'the node whose replica is resynced');
  withEtcdOptions(repair, 'the etcd holding the map (the map changes only there). Endpoints http(s)://HOST:PORT[,...]');
  repair.action(async (partition: string, opts: EtcdFlags & { replica: string }) => {
    if (opts.etcd === undefined) throw new CliUsageError('cluster repair needs --etcd URL: replicas exist only in etcd-managed clusters');
    const { clusterRepair } = await import('../cluster-check.js');
    await clusterRepair(ctx, partition, { ...opts, etcd: opts.etcd });
  });

  cluster
    .command('install')
    .description('install a newer partition map on every node it names (nodes refuse older versions)')
    .requiredOption('--map <file>', 'the map file (JSON)')
    .option('--seeds <list>', 'store nodes HOST:PORT[,...] (env SHARDPIPE_SEEDS); default: the map\'s nodes')
    .option('--force', 'admin recovery: install even if the version moves back or more than 1000 ahead of a node\'s (see README "recover a node whose map version is wrong")')
    .action(async (opts: { map: string; seeds?: string; force?: boolean }) => {
      const [{ PartitionMap }, { withClient }] = await Promise.all([import('../../store/index.js'), import('../store-io.js')]);
      const map = PartitionMap.fromJson(JSON.parse(await readFile(opts.map, 'utf8')));
      const seeds = opts.seeds || ctx.env.SHARDPIPE_SEEDS ? ctx.seeds(opts.seeds) : map.nodes();
      const results = await withClient(seeds, ctx, (client) => client.installMap(map, { force: opts.force ?? false }));
      for (const r of results) ctx.print(`${r.node}: ${r.error ? `failed: ${r.error.message}` : r.installed ? 'installed' : 'already had it'}`);
      if (results.some((r) => r.error)) throw new CliUsageError(`map version ${map.version} was not installed everywhere`);
    });

  cluster
    .command('tokens')
    .description('write an --auth-token-file with a fresh random token per role (admin, write, read, and replica for chain forwards between nodes), readable by the owner only; the tokens are not printed')
    .requiredOption('--out <file>', 'where to write the token file (an existing file is replaced)')
    .option('--role-files', 'also write FILE.admin, FILE.write, FILE.read and FILE.replica, each holding just that token (for SHARDPIPE_TOKEN_FILE and Docker secrets)')
    .action(async (opts: { out: string; roleFiles?: boolean }) => {
      const tokens = generateRoleTokens();
      await writeTokenFile(opts.out, tokens);
      if (opts.roleFiles) {
        for (const [role, token] of Object.entries(tokens)) await writeFile(`${opts.out}.${role}`, `${token}\n`, { mode: 0o600 });
      }
      ctx.print(`wrote tokens for admin, write, read and replica to ${opts.out}${opts.roleFiles ? ` and ${opts.out}.{admin,write,read,replica}` : ''} (mode 0600); give it to servers as --auth-token-file, and each client its token as SHARDPIPE_TOKEN or SHARDPIPE_TOKEN_FILE`);
    });

  registerOperationCommands(cluster, ctx);
}
