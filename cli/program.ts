import { Command } from 'commander';
import type { CliContext } from './cli-context.js';
import { readCliEnv } from './cli-env.js';
import { registerClusterCommands } from './commands/cluster-commands.js';
import { registerDemoCommand } from './commands/demo-command.js';
import { registerIngestCommands } from './commands/ingest-commands.js';
import { registerKvCommands } from './commands/kv-commands.js';
import { registerRestoreCommands } from './commands/restore-commands.js';
import { registerStatsCommand } from './commands/stats-command.js';
import { registerStoreCommands } from './commands/store-commands.js';

/** Builds the `shardpipe` command tree (also used by the docs test to read every --help). */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command('shardpipe')
    .description('Feeds and protects a range-partitioned LevelDB key-value store.')
    .option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent (env SHARDPIPE_LOG_LEVEL)')
    .option('--log-format <format>', 'json or pretty; default: pretty on a terminal (env SHARDPIPE_LOG_FORMAT)')
    // A fixed width keeps --help identical everywhere, so README's CLI reference can be checked.
    .configureHelp({ helpWidth: 100 })
    .showHelpAfterError()
    .exitOverride();
  program.hook('preAction', () => {
    const { logLevel, logFormat } = program.opts<{ logLevel?: string; logFormat?: string }>();
    const env = readCliEnv({ SHARDPIPE_LOG_LEVEL: logLevel, SHARDPIPE_LOG_FORMAT: logFormat });
    ctx.configureLogging(env.SHARDPIPE_LOG_LEVEL, env.SHARDPIPE_LOG_FORMAT);
  });
  registerClusterCommands(program, ctx);
  registerStoreCommands(program, ctx);
  registerKvCommands(program, ctx);
  registerStatsCommand(program, ctx);
  registerIngestCommands(program, ctx);
  registerRestoreCommands(program, ctx);
  registerDemoCommand(program, ctx);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}
