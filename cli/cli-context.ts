import { readFileSync } from 'node:fs';
import { AuthTokens, NO_ERROR_REPORTER, canServeTls, createLogger, loadTls, type ErrorReporter, type Logger, type TlsMaterial } from '../common/index.js';
import type { StoreCredentials } from '../store/index.js';
import { CliUsageError, type CliEnv, type LoadedConfig, type SettingName } from './cli-env.js';
import { CliLifecycle } from './cli-lifecycle.js';
import { parseSeeds } from './cli-io.js';

/** What every command gets from the entry: the environment, the root logger, output. */
export class CliContext {
  private loaded: LoadedConfig;
  private rootLogger: Logger | undefined;
  private logLevel: CliEnv['SHARDPIPE_LOG_LEVEL'];
  private logFormat: CliEnv['SHARDPIPE_LOG_FORMAT'];
  /** The process's one signal handler and the components it closes, in reverse start order. */
  readonly lifecycle = new CliLifecycle({ logger: () => this.logger });
  /** Where unexpected errors are sent (SENTRY_DSN); set by the entry before any command runs. */
  errors: ErrorReporter = NO_ERROR_REPORTER;

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

  /** Global flags (--token, --tls-*) win over the environment and the config file; before any command runs. */
  applyFlags(flags: Partial<CliEnv>): void {
    const env = { ...this.loaded.env };
    const sources = { ...this.loaded.sources };
    for (const [name, value] of Object.entries(flags) as Array<[SettingName, string | undefined]>) {
      if (value === undefined) continue;
      (env as Record<string, string>)[name] = value;
      sources[name] = 'flag';
    }
    this.loaded = { ...this.loaded, env, sources };
  }

  /** How this process reaches store nodes: SHARDPIPE_TOKEN and the SHARDPIPE_TLS_* files. */
  storeCredentials(): StoreCredentials {
    return { token: this.token(), tls: this.tlsMaterial() };
  }

  /** The TLS a client uses towards servers (CA, client certificate), without any token. */
  clientTls(): TlsMaterial | undefined {
    return this.tlsMaterial();
  }

  /** What this process must never send anywhere: its token, passwords in its URLs, its Azure credentials. */
  secrets(): string[] {
    const out = [this.env.SHARDPIPE_TOKEN, this.env.AZURE_STORAGE_CONNECTION_STRING];
    try {
      out.push(this.token());
    } catch {
      // An unreadable token file is reported by the command that needs it; there is no secret to hide.
    }
    for (const url of [this.env.SHARDPIPE_REDIS_URL, this.env.SHARDPIPE_METRICS_URL]) {
      if (url === undefined || !URL.canParse(url)) continue;
      const { username, password } = new URL(url);
      // A user name alone may be a password (Redis ACL); beside a password it is just a name.
      out.push(decodeURIComponent(password || username));
    }
    return out.filter((s): s is string => s !== undefined && s !== '');
  }

  /** SHARDPIPE_TOKEN, else the content of SHARDPIPE_TOKEN_FILE; undefined when neither is set. */
  token(): string | undefined {
    if (this.env.SHARDPIPE_TOKEN !== undefined) return this.env.SHARDPIPE_TOKEN;
    const file = this.env.SHARDPIPE_TOKEN_FILE;
    if (file === undefined) return undefined;
    let token: string;
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new CliUsageError(`SHARDPIPE_TOKEN_FILE ${file}: ${(err as Error).message}`);
    }
    if (!/^[\x21-\x7e]+$/.test(token)) throw new CliUsageError(`SHARDPIPE_TOKEN_FILE ${file}: must hold one token (printable ASCII, no spaces)`);
    return token;
  }

  /** The TLS this process serves with: certificate and key (and CA for mutual TLS), or none. */
  serverTls(): TlsMaterial | undefined {
    const tls = this.tlsMaterial();
    return canServeTls(tls) ? tls : undefined;
  }

  /** The tokens a server accepts, from its --auth-token-file; undefined without one. */
  serverTokens(file: string | undefined): AuthTokens | undefined {
    return file === undefined ? undefined : AuthTokens.fromFile(file);
  }

  private tlsMaterial(): TlsMaterial | undefined {
    return loadTls({ ca: this.env.SHARDPIPE_TLS_CA, cert: this.env.SHARDPIPE_TLS_CERT, key: this.env.SHARDPIPE_TLS_KEY });
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
      onError: (err, fields) => this.errors.report(err, fields),
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
