import type { Command } from 'commander';
import { formatTable } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { SEEDS_HELP } from '../common-options.js';

export function registerStatsCommand(program: Command, ctx: CliContext): void {
  program
    .command('stats')
    .description('per-partition table: id, key range, node, approximate entry count, bytes (unreachable nodes are marked)')
    .option('--seeds <list>', SEEDS_HELP)
    .option('--json', '{"mapVersion", "partitions": [{"id","start","end","node","approxCount","bytes"}]}')
    .action(async (opts: { seeds?: string; json?: boolean }) => {
      // Loaded by the command that runs them: `--help` and other commands start without them.
      const [{ displayBytes }, { rangeText, withClient }] = await Promise.all([import('../../store/index.js'), import('../store-io.js')]);
      const { map, nodes } = await withClient(ctx.seeds(opts.seeds), ctx, async (c) => ({ map: await c.refreshMap(), nodes: await c.stats() }));
      const byId = new Map<number, { approxCount: number; bytes: number }>();
      const down = new Map<string, string>();
      for (const n of nodes) {
        if (n.result.ok) for (const p of n.result.partitions) byId.set(p.id, { approxCount: p.approxCount, bytes: p.logicalBytes });
        else down.set(n.node, n.result.error.message);
      }
      const rows = map.partitions.map((p) => ({ partition: p, stat: byId.get(p.id) }));
      if (opts.json) {
        ctx.print(
          JSON.stringify({
            mapVersion: map.version,
            partitions: rows.map(({ partition: p, stat }) => ({
              id: p.id,
              start: displayBytes(p.start),
              end: displayBytes(p.end),
              node: p.node,
              approxCount: stat?.approxCount ?? null,
              bytes: stat?.bytes ?? null,
              ...(down.has(p.node) ? { error: down.get(p.node) } : {}),
            })),
          }),
        );
        return;
      }
      ctx.print(`map version ${map.version}`);
      ctx.print(
        formatTable(
          ['id', 'range', 'node', 'approx count', 'bytes'],
          rows.map(({ partition: p, stat }) => [
            String(p.id),
            rangeText(p.start, p.end),
            p.node,
            stat ? String(stat.approxCount) : 'unreachable',
            stat ? String(stat.bytes) : '-',
          ]),
        ),
      );
      for (const [node, message] of down) ctx.print(`unreachable: ${node}: ${message}`);
    });
}
