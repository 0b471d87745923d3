import type { Command } from 'commander';
import { parseDurationMs } from '../../common/index.js';
import type { Coordinator } from '../../coordinator/index.js';
import type { CliContext } from '../cli-context.js';
import { ETCD_HELP, etcdConnectionOf, withEtcdOptions, type EtcdFlags } from '../etcd-options.js';

export function registerCoordinatorCommand(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('coordinator')
    .description('run a coordinator until SIGTERM/SIGINT: any number may run, one leads (etcd election); the leader removes nodes whose lease expired from every chain and adds new or returning nodes as syncing tails (store/README.md), each change one etcd transaction, and carries out data-movement operations (move, drain-node, set-replicas, rebalance; README "Live data movement")')
    .requiredOption('--etcd <url>', ETCD_HELP)
    .option('--lease <duration>', 'election lease: how long a dead leader holds off the next one', '5s')
    .option('--no-auto-rebalance', 'do not start a rebalance by itself when a node registers that holds no replica');
  withEtcdOptions(cmd, false).action(async (opts: EtcdFlags & { etcd: string; lease: string; autoRebalance: boolean }) => {
    ctx.lifecycle.start();
    const { Coordinator } = await import('../../coordinator/index.js');
    const coordinator: Coordinator = await Coordinator.start({
      etcd: await etcdConnectionOf(opts.etcd, opts),
      leaseMs: parseDurationMs(opts.lease),
      autoRebalance: opts.autoRebalance,
      logger: ctx.logger,
      onElected: () => ctx.print(JSON.stringify({ event: 'elected', coordinator: coordinator.id })),
      onChange: (c) => ctx.print(JSON.stringify({ event: 'changed', version: c.version, changes: c.changes })),
    });
    ctx.lifecycle.add('coordinator', coordinator, (c) => c.close());
    // Tests and supervisors wait for this line on stdout.
    ctx.print(JSON.stringify({ event: 'ready', coordinator: coordinator.id }));
    await ctx.lifecycle.untilSignal();
  });
}
