import type { Command } from 'commander';
import { redactUrl } from '../../common/index.js';
import { SETTINGS, type SettingName } from '../cli-env.js';
import type { CliContext } from '../cli-context.js';
import { formatTable } from '../cli-io.js';

const SECRET: ReadonlySet<SettingName> = new Set(['AZURE_STORAGE_CONNECTION_STRING', 'SHARDPIPE_TOKEN']);
/** Settings that are URLs which may carry a password: shown with the password masked. */
const URLS: ReadonlySet<SettingName> = new Set(['SHARDPIPE_REDIS_URL', 'SHARDPIPE_METRICS_URL', 'SENTRY_DSN']);

export function registerConfigCommands(program: Command, ctx: CliContext): void {
  const config = program.command('config').description('the effective settings and where they come from');
  config
    .command('print')
    .description('every setting: value, source (env, file, default), environment variable and config-file name; secrets masked')
    .option('--json', '{"file", "settings": [{"env","file","value","source","about"}]}')
    .action((opts: { json?: boolean }) => {
      const { env, sources, file } = ctx.config;
      const settings = (Object.keys(SETTINGS) as SettingName[]).map((name) => {
        const value = env[name] ?? SETTINGS[name].default;
        return {
          env: name,
          file: SETTINGS[name].file,
          value: value !== undefined && SECRET.has(name) && sources[name] !== 'default' ? '***' : value !== undefined && URLS.has(name) ? redactUrl(value) : (value ?? null),
          source: sources[name],
          about: SETTINGS[name].about,
        };
      });
      if (opts.json) {
        ctx.print(JSON.stringify({ file: file ?? null, settings }));
        return;
      }
      ctx.print(`config file: ${file ?? '(none: pass --config FILE or set SHARDPIPE_CONFIG)'}`);
      ctx.print(formatTable(['setting', 'config file', 'value', 'source'], settings.map((s) => [s.env, s.file, s.value ?? '-', s.source])));
    });
}
