// First: sets V8's young generation before any other module allocates (see young-generation.ts).
import './young-generation.js';
import { readFileSync } from 'node:fs';
import { CommanderError, type Command } from 'commander';
import { ConfigError, ShardpipeError, startErrorReporting, startTracing, tracingWanted } from '../common/index.js';
import { CliContext } from './cli-context.js';
import { CliUsageError, loadCliConfig } from './cli-env.js';
import { EXIT } from './cli-io.js';
import { KvOutcomeError } from './commands/kv-commands.js';
import { buildProgram } from './program.js';

async function main(argv: string[]): Promise<number> {
  let ctx: CliContext;
  try {
    ctx = new CliContext(loadCliConfig(process.env));
  } catch (err) {
    process.stderr.write(`shardpipe: ${(err as Error).message}\n`);
    return EXIT.usage;
  }
  const dsn = ctx.env.SENTRY_DSN;
  // Loaded only with a DSN: a command's start-up pays nothing for error reporting otherwise.
  if (dsn !== undefined) ctx.errors = await startErrorReporting({ dsn, release: releaseName(), secrets: () => ctx.secrets(), logger: () => ctx.logger });
  // Loaded only when OTEL_* names an exporter: otherwise spans are the API's no-ops (see common/tracing.ts).
  const tracing = tracingWanted(process.env) ? await startTracing({ serviceName: process.env.OTEL_SERVICE_NAME || `shardpipe-${argv[2] ?? 'cli'}` }) : undefined;
  const code = await run(ctx, argv);
  // Whatever the command started, stopped here in reverse order, also after a failure or a signal.
  const clean = await ctx.lifecycle.close();
  await ctx.errors.flush();
  // Exports the spans still queued; an unreachable collector costs the export timeout, never the exit code.
  await tracing?.shutdown().catch((err: unknown) => ctx.logger.warn({ err }, 'exporting the last spans failed'));
  return !clean && code === EXIT.ok ? EXIT.failed : code;
}

/** `shardpipe@VERSION` from package.json, for error reports. */
function releaseName(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return `shardpipe@${pkg.version}`;
}

/** The command's words, e.g. "store start". */
function commandPath(command: Command): string {
  const words: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) words.unshift(c.name());
  return words.join(' ');
}

async function run(ctx: CliContext, argv: string[]): Promise<number> {
  try {
    const program = buildProgram(ctx);
    program.hook('preAction', (_program, action) => ctx.errors.setContext({ command: commandPath(action) }));
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (thrown) {
    const err = ctx.lifecycle.interruption(thrown);
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (err instanceof KvOutcomeError) {
      process.stderr.write(`shardpipe: ${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`shardpipe: ${err.message} [${err.code}]\n`);
      return EXIT.usage;
    }
    if (err instanceof CliUsageError || err instanceof RangeError) {
      process.stderr.write(`shardpipe: ${err.message}\n`);
      return EXIT.usage;
    }
    const code = err instanceof ShardpipeError ? ` [${err.code}]` : '';
    ctx.errors.report(err);
    process.stderr.write(`shardpipe: ${(err as Error).message ?? String(err)}${code}\n`);
    ctx.logger.debug({ err }, 'command failed');
    return EXIT.failed;
  }
}

process.exitCode = await main(process.argv);
