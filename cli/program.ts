import { Command } from 'commander';
import type { CliContext } from './cli-context.js';
import { loadCliConfig, readCliEnv } from './cli-env.js';
import { registerBackupCommands } from './commands/backup-commands.js';
import { registerClusterCommands } from './commands/cluster-commands.js';
import { registerConfigCommands } from './commands/config-commands.js';
import { registerCoordinatorCommand } from './commands/coordinator-command.js';
import { registerDemoCommand } from './commands/demo-command.js';
import { registerGatewayCommand } from './commands/gateway-command.js';
import { registerIngestCommands } from './commands/ingest-commands.js';
import { registerKvCommands } from './commands/kv-commands.js';
import { registerMetricsCommands } from './commands/metrics-commands.js';
import { registerRestoreCommands } from './commands/restore-commands.js';
import { registerStatsCommand } from './commands/stats-command.js';
import { registerStoreCommands } from './commands/store-commands.js';
import { registerUpCommand } from './commands/up-command.js';
import { registerWorkerCommand } from './commands/worker-command.js';

/** Builds the `shardpipe` command tree (also used by the docs test to read every --help). */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command('shardpipe')
    .description('Feeds and protects a range-partitioned LevelDB key-value store.')
    .option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent (env SHARDPIPE_LOG_LEVEL)')
    .option('--log-format <format>', 'json or pretty; default: pretty on a terminal (env SHARDPIPE_LOG_FORMAT)')
    .option('--config <file>', 'JSON file of settings (env SHARDPIPE_CONFIG); see `shardpipe config print`')
    .option('--token <token>', 'token sent to store nodes and the metrics server (env SHARDPIPE_TOKEN; prefer the environment: flags show in ps)')
    .option('--tls-ca <file>', 'PEM CA: clients trust servers signed by it; servers require client certificates signed by it (env SHARDPIPE_TLS_CA)')
    .option('--tls-cert <file>', 'PEM certificate: servers serve TLS with it, clients present it for mutual TLS (env SHARDPIPE_TLS_CERT)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert (env SHARDPIPE_TLS_KEY)')
    // A fixed width keeps --help identical everywhere, so README's CLI reference can be checked.
    .configureHelp({ helpWidth: 100 })
    .showHelpAfterError()
    .exitOverride();
  program.hook('preAction', () => {
    const { logLevel, logFormat, config, token, tlsCa, tlsCert, tlsKey } = program.opts<{ logLevel?: string; logFormat?: string; config?: string; token?: string; tlsCa?: string; tlsCert?: string; tlsKey?: string }>();
    if (config !== undefined) ctx.useConfig(loadCliConfig(process.env, config));
    ctx.applyFlags(readCliEnv({ SHARDPIPE_TOKEN: token, SHARDPIPE_TLS_CA: tlsCa, SHARDPIPE_TLS_CERT: tlsCert, SHARDPIPE_TLS_KEY: tlsKey }));
    const env = readCliEnv({ SHARDPIPE_LOG_LEVEL: logLevel, SHARDPIPE_LOG_FORMAT: logFormat });
    ctx.configureLogging(env.SHARDPIPE_LOG_LEVEL, env.SHARDPIPE_LOG_FORMAT);
  });
  registerClusterCommands(program, ctx);
  registerStoreCommands(program, ctx);
  registerCoordinatorCommand(program, ctx);
  registerKvCommands(program, ctx);
  registerStatsCommand(program, ctx);
  registerIngestCommands(program, ctx);
  registerWorkerCommand(program, ctx);
  registerBackupCommands(program, ctx);
  registerMetricsCommands(program, ctx);
  registerGatewayCommand(program, ctx);
  registerRestoreCommands(program, ctx);
  registerDemoCommand(program, ctx);
  registerUpCommand(program, ctx);
  registerConfigCommands(program, ctx);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}
