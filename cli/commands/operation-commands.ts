import type { Command } from 'commander';
import { CliUsageError } from '../cli-env.js';
import type { CliContext } from '../cli-context.js';
import type { CancelFlags, ListFlags, SubmitFlags } from '../cluster-operations.js';
import { SEEDS_HELP } from '../common-options.js';
import { withEtcdOptions } from '../etcd-options.js';

const ETCD_OPS_HELP = 'record and follow the operation in this etcd directly (endpoints http(s)://HOST:PORT[,...]; a user in the URL logs in with etcd user auth, never logged). Without it the node at --seeds does it (its operation RPCs; the token needs role admin)';
const WAIT_HELP = 'Waits for the operation, with progress on stderr (a live line on a terminal, JSON lines otherwise); exit 0 only when it completed, 1 when it failed or was cancelled, 64 when the arguments do not fit the cluster (nothing recorded). Ctrl-C stops only the waiting';

/** `--seeds`, `--etcd` and its credentials, `--poll-interval`: how a command reaches operations. */
function withReach(cmd: Command): Command {
  cmd.option('--seeds <list>', `${SEEDS_HELP}; used when --etcd is not given`);
  withEtcdOptions(cmd, ETCD_OPS_HELP);
  return cmd.option('--poll-interval <duration>', 'with --seeds: how often a waiting command asks the node again', '1s');
}

/** The flags of every command that submits an operation. */
function withSubmit(cmd: Command): Command {
  withReach(cmd);
  return cmd
    .option('--no-wait', 'print the operation id at once (with --json: its record) instead of waiting')
    .option('--json', 'print the record (with progress) as JSON when done, or at once with --no-wait')
    .option('--max-bytes-per-second <rate>', 'copy rate of each movement\'s sync, e.g. 50MB, 10MiB, 2000000; default unthrottled')
    .option('--max-movements <n>', 'movements (syncing replicas) at once, cluster-wide with other operations\' (1–64)', '2')
    .option('--max-pause <duration>', 'the longest a step may hold reads or writes (a split\'s final cut, a head hand-over); a step that would hold them longer backs off and tries again (1ms–10m)', '2s');
}

// The operation code needs store/ and etcd: loaded when a command runs, not for --help.
const submitOperation: typeof import('../cluster-operations.js').submitOperation = async (...args) => (await import('../cluster-operations.js')).submitOperation(...args);
const listOperations: typeof import('../cluster-operations.js').listOperations = async (...args) => (await import('../cluster-operations.js')).listOperations(...args);
const cancelOperation: typeof import('../cluster-operations.js').cancelOperation = async (...args) => (await import('../cluster-operations.js')).cancelOperation(...args);

function example(text: string, lines: string[]): string {
  return `${text}.\n\nExample:\n${lines.map((l) => `  ${l}`).join('\n')}`;
}

function parseId(text: string, what: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n > 0xffffffff) throw new CliUsageError(`${what} must be a partition id (a whole number 0–4294967295), got "${text}"`);
  return n;
}

/** The data-movement commands under `cluster` (README "Live data movement", "Commands"). */
export function registerOperationCommands(cluster: Command, ctx: CliContext): void {
  withSubmit(
    cluster
      .command('rebalance')
      .summary('move replicas and heads until every node holds a fair share (waits; exit 0 when completed)')
      .description(example(`move replicas and heads until every node holds a fair share of the data (by bytes, from PartitionStats). ${WAIT_HELP}`, ['shardpipe cluster rebalance --seeds 127.0.0.1:7001 --max-bytes-per-second 50MB'])),
  ).action(async (opts: SubmitFlags) => submitOperation(ctx, opts, { kind: 'rebalance' }));

  withSubmit(
    cluster
      .command('drain-node')
      .summary('move every replica off a node, so it can be stopped (waits; exit 0 when completed)')
      .description(example(`move every replica off a node (nothing new is placed on it); once drained, cluster status says it can be stopped. Refused when the other live nodes are too few for the chains. ${WAIT_HELP}`, ['shardpipe cluster drain-node 127.0.0.1:7003 --etcd http://127.0.0.1:2379']))
      .argument('<host:port>', 'the node to drain'),
  ).action(async (node: string, opts: SubmitFlags) => submitOperation(ctx, opts, { kind: 'drain-node', node }));

  withSubmit(
    cluster
      .command('move')
      .summary('move partition P\'s replica from --from to --to (waits; exit 0 when completed)')
      .description(example(`move partition P's replica from one node to another: a syncing replica is added on --to, then the one on --from removed. --from must hold a replica of P; --to must be registered and not in P's chain. ${WAIT_HELP}`, ['shardpipe cluster move 3 --from 127.0.0.1:7001 --to 127.0.0.1:7004 --seeds 127.0.0.1:7001']))
      .argument('<partition>', 'partition id (cluster status shows them)')
      .requiredOption('--from <host:port>', 'the node whose replica moves')
      .requiredOption('--to <host:port>', 'the node it moves to'),
  ).action(async (partition: string, opts: SubmitFlags & { from: string; to: string }) =>
    submitOperation(ctx, opts, { kind: 'move', partition: parseId(partition, 'partition'), from: opts.from, to: opts.to }),
  );

  withSubmit(
    cluster
      .command('set-replicas')
      .summary('raise or lower the replication factor R (waits; exit 0 when completed)')
      .description(example(`raise or lower the replication factor R of every partition (or of --partitions): new replicas sync on the least-loaded nodes; surplus ones are removed, never the last serving one. R must be 1–16 and at most the live nodes. ${WAIT_HELP}`, ['shardpipe cluster set-replicas 3 --etcd http://127.0.0.1:2379', 'shardpipe cluster set-replicas 2 --partitions 1,2,5 --seeds 127.0.0.1:7001']))
      .argument('<replicas>', 'replicas per chain, 1–16')
      .option('--partitions <ids>', 'only these partitions, comma-separated ids'),
  ).action(async (replicas: string, opts: SubmitFlags & { partitions?: string }) => {
    const r = Number(replicas);
    if (!/^\d+$/.test(replicas.trim()) || r < 1 || r > 16) throw new CliUsageError(`R must be a whole number 1–16, got "${replicas}"`);
    const partitions = opts.partitions === undefined ? undefined : opts.partitions.split(',').map((p) => parseId(p.trim(), '--partitions'));
    if (partitions !== undefined && partitions.length === 0) throw new CliUsageError('--partitions needs at least one partition id');
    await submitOperation(ctx, opts, { kind: 'set-replicas', replicas: r, ...(partitions ? { partitions } : {}) });
  });

  withSubmit(
    cluster
      .command('split')
      .summary('split partition P at a key or its median (waits; exit 0 when completed)')
      .description(example(`split partition P in two at a key strictly inside its range (--at as UTF-8 text, --at-hex as hex bytes), or at its median (--auto, from SplitKeys); the new partition starts on the same chain and its data moves into its own LevelDB. ${WAIT_HELP}`, ['shardpipe cluster split 3 --at user:5000 --etcd http://127.0.0.1:2379', 'shardpipe cluster split 3 --auto --seeds 127.0.0.1:7001']))
      .argument('<partition>', 'partition id (cluster status shows them)')
      .option('--at <key>', 'the split key as UTF-8 text: the new partition starts at it')
      .option('--at-hex <hex>', 'the split key as hex bytes')
      .option('--auto', 'split at the partition\'s median key'),
  ).action(async (partition: string, opts: SubmitFlags & { at?: string; atHex?: string; auto?: boolean }) => {
    const given = [opts.at !== undefined, opts.atHex !== undefined, opts.auto === true].filter(Boolean).length;
    if (given !== 1) throw new CliUsageError('cluster split needs exactly one of --at KEY, --at-hex HEX, --auto');
    let at: string | undefined;
    if (opts.atHex !== undefined) {
      if (!/^(?:[0-9a-fA-F]{2})+$/.test(opts.atHex)) throw new CliUsageError(`--at-hex must be an even number of hex digits, got "${opts.atHex.slice(0, 80)}"`);
      at = opts.atHex.toLowerCase();
    } else if (opts.at !== undefined) {
      if (opts.at.length === 0) throw new CliUsageError('--at needs a key: an empty key is the start of the keyspace, not inside any partition');
      at = Buffer.from(opts.at, 'utf8').toString('hex');
    }
    if (at !== undefined) {
      const { Key } = await import('../../store/index.js');
      try {
        Key.fromBytes(Buffer.from(at, 'hex'));
      } catch (err) {
        throw new CliUsageError(`the split key is not a valid key: ${(err as Error).message}`);
      }
    }
    await submitOperation(ctx, opts, { kind: 'split', partition: parseId(partition, 'partition'), ...(at === undefined ? { auto: true } : { at }) });
  });

  withSubmit(
    cluster
      .command('merge')
      .summary('merge two neighbouring partitions (waits; exit 0 when completed)')
      .description(example(`merge two neighbouring partitions (adjacent key ranges) into one. ${WAIT_HELP}`, ['shardpipe cluster merge 3 4 --etcd http://127.0.0.1:2379']))
      .argument('<p>', 'partition id')
      .argument('<q>', 'the partition next to it'),
  ).action(async (p: string, q: string, opts: SubmitFlags) => submitOperation(ctx, opts, { kind: 'merge', partitions: [parseId(p, 'P'), parseId(q, 'Q')] }));

  withReach(
    cluster
      .command('operations')
      .summary('list running and recent operations with progress, or one in detail')
      .description(
        example(
          'list running and recently finished operations (the 10 newest finished ones; --all: every one) with progress: step, phase, bytes and rows copied, rate, ETA, pauses measured; or one operation in detail with every step and pause. Exit 0 when shown, 3 when OP does not exist',
          ['shardpipe cluster operations --etcd http://127.0.0.1:2379', 'shardpipe cluster operations op-20261201-180512-3fa9c1 --seeds 127.0.0.1:7001 --json'],
        ),
      )
      .argument('[op]', 'an operation id: show that one in detail')
      .option('--json', 'print {operations: [record with progress]} (one record with OP)')
      .option('--all', 'every operation ever recorded, not only running and recent ones'),
  ).action(async (id: string | undefined, opts: ListFlags) => listOperations(ctx, id, opts));

  withReach(
    cluster
      .command('cancel')
      .summary('cancel a running operation (waits for cancelled)')
      .description(
        example(
          'ask the coordinator to stop an operation (state cancelling, by compare-and-swap): it rolls back or finishes the step in hand, then the operation is cancelled. Waits for that unless --no-wait. Exit 0 when cancelled, 1 when it completed or failed first or was finished already, 3 when OP does not exist',
          ['shardpipe cluster cancel op-20261201-180512-3fa9c1 --etcd http://127.0.0.1:2379'],
        ),
      )
      .argument('<op>', 'the operation id (cluster operations lists them)')
      .option('--no-wait', 'return once cancelling is recorded')
      .option('--json', 'print the record as JSON'),
  ).action(async (id: string, opts: CancelFlags) => cancelOperation(ctx, id, opts));
}
