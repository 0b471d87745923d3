import { createLogger, type Logger } from '../common/index.js';
import type { CliEnv, LoadedConfig } from './cli-env.js';
import { parseSeeds } from './cli-io.js';

/** What every command gets from the entry: the environment, the root logger, output. */
export class CliContext {
  private loaded: LoadedConfig;
  private rootLogger: Logger | undefined;
  private logLevel: CliEnv['SHARDPIPE_LOG_LEVEL'];
  private logFormat: CliEnv['SHARDPIPE_LOG_FORMAT'];

  constructor(config: LoadedConfig) {
    this.loaded = config;
    this.logLevel = config.env.SHARDPIPE_LOG_LEVEL;
    this.logFormat = config.env.SHARDPIPE_LOG_FORMAT;
  }

  /** The effective settings (environment over config file); flags are applied by each command. */
  get env(): CliEnv {
    return this.loaded.env;
  }

  /** The settings with where each came from (`config print`). */
  get config(): LoadedConfig {
    return this.loaded;
  }

  /** Replaces the settings once a global --config names a file; before any command runs. */
  useConfig(config: LoadedConfig): void {
    this.loaded = config;
    this.logLevel = config.env.SHARDPIPE_LOG_LEVEL;
    this.logFormat = config.env.SHARDPIPE_LOG_FORMAT;
  }

  /** Global --log-level/--log-format win over the environment; set before any command runs. */
  configureLogging(level: CliEnv['SHARDPIPE_LOG_LEVEL'], format: CliEnv['SHARDPIPE_LOG_FORMAT']): void {
    this.logLevel = level ?? this.logLevel;
    this.logFormat = format ?? this.logFormat;
  }

  get logger(): Logger {
    this.rootLogger ??= createLogger({
      level: this.logLevel ?? 'info',
      pretty: this.logFormat === undefined ? undefined : this.logFormat === 'pretty',
    });
    return this.rootLogger;
  }

  /** Store node addresses from --seeds or SHARDPIPE_SEEDS. */
  seeds(flag: string | undefined): string[] {
    return parseSeeds(flag, this.env.SHARDPIPE_SEEDS);
  }

  /** One line of the command's result on stdout (logs go to stderr). */
  print(line: string): void {
    process.stdout.write(line + '\n');
  }
}
