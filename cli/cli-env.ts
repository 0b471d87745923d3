import { readFileSync } from 'node:fs';
import { z } from 'zod';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
const LOG_FORMATS = ['json', 'pretty'] as const;

/**
 * Every setting: its environment variable, its name in a config file, what it is, its default.
 * Flags override the environment, which overrides the config file, which overrides the default.
 */
export const SETTINGS = {
  SHARDPIPE_SEEDS: { file: 'seeds', about: 'store nodes HOST:PORT[,...] to fetch the partition map from', default: undefined },
  SHARDPIPE_REDIS_URL: { file: 'redisUrl', about: 'Redis of the job queues; unset = a private redis-server per command', default: undefined },
  SHARDPIPE_REDIS_URL_FILE: { file: 'redisUrlFile', about: 'file holding the Redis URL (it may carry a password; Docker/Kubernetes secrets); SHARDPIPE_REDIS_URL wins', default: undefined },
  SHARDPIPE_DATA_DIR: { file: 'dataDir', about: 'data folder: private Redis, rejects, staged blobs, default backups', default: '.shardpipe' },
  SHARDPIPE_BACKUP_TARGET: { file: 'backupTarget', about: 'backup target file:///DIR or az://CONTAINER/PREFIX', default: 'file://<dataDir>/backups' },
  SHARDPIPE_METRICS_URL: { file: 'metricsUrl', about: 'metrics server to take shard plans from; unset = plan in-process', default: undefined },
  SHARDPIPE_LOG_LEVEL: { file: 'logLevel', about: LOG_LEVELS.join(', '), default: 'info' },
  SHARDPIPE_LOG_FORMAT: { file: 'logFormat', about: 'json or pretty; unset = pretty on a terminal', default: undefined },
  AZURE_STORAGE_CONNECTION_STRING: { file: 'azureConnectionString', about: 'credentials for az:// drops and backup targets', default: undefined },
  SHARDPIPE_TOKEN: { file: 'token', about: 'token sent to store nodes and the metrics server (authorization: Bearer); see --auth-token-file', default: undefined },
  SHARDPIPE_TOKEN_FILE: { file: 'tokenFile', about: 'file holding the token (Docker/Kubernetes secrets); SHARDPIPE_TOKEN wins', default: undefined },
  SHARDPIPE_TLS_CA: { file: 'tlsCa', about: 'PEM CA bundle: clients trust servers signed by it; servers require client certificates signed by it', default: undefined },
  SHARDPIPE_TLS_CERT: { file: 'tlsCert', about: 'PEM certificate: a server\'s identity (serves TLS), a client\'s certificate for mutual TLS', default: undefined },
  SHARDPIPE_TLS_KEY: { file: 'tlsKey', about: 'PEM private key of SHARDPIPE_TLS_CERT', default: undefined },
  SENTRY_DSN: { file: 'sentryDsn', about: 'send unexpected errors (not user errors with a stable code) to this Sentry DSN; unset = nothing is loaded or sent', default: undefined },
} as const;

export type SettingName = keyof typeof SETTINGS;

const envSchema = z.object({
  SHARDPIPE_SEEDS: z.string().min(1).optional(),
  SHARDPIPE_REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must start with redis:// or rediss://').optional(),
  SHARDPIPE_REDIS_URL_FILE: z.string().min(1).optional(),
  SHARDPIPE_DATA_DIR: z.string().min(1).optional(),
  SHARDPIPE_BACKUP_TARGET: z.string().regex(/^(file:\/\/\/|az:\/\/)/, 'must start with file:/// or az://').optional(),
  SHARDPIPE_METRICS_URL: z.string().regex(/^https?:\/\//, 'must start with http:// or https://').optional(),
  SHARDPIPE_LOG_LEVEL: z.enum(LOG_LEVELS).optional(),
  SHARDPIPE_LOG_FORMAT: z.enum(LOG_FORMATS).optional(),
  AZURE_STORAGE_CONNECTION_STRING: z.string().min(1).optional(),
  SHARDPIPE_TOKEN: z.string().regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces').optional(),
  SHARDPIPE_TOKEN_FILE: z.string().min(1).optional(),
  SHARDPIPE_TLS_CA: z.string().min(1).optional(),
  SHARDPIPE_TLS_CERT: z.string().min(1).optional(),
  SHARDPIPE_TLS_KEY: z.string().min(1).optional(),
  SENTRY_DSN: z.string().regex(/^https?:\/\/[^@/]+@[^/]+\/\S+$/, 'must be a Sentry DSN: https://KEY@HOST/PROJECT').optional(),
});

/** The settings the CLI reads, validated once at start. */
export type CliEnv = z.infer<typeof envSchema>;

/** Where a setting's effective value came from. */
export type SettingSource = 'flag' | 'env' | 'file' | 'default' | 'unset';

/** The validated settings plus where each came from. */
export interface LoadedConfig {
  env: CliEnv;
  sources: Record<SettingName, SettingSource>;
  /** The config file read, if any. */
  file: string | undefined;
  /** Test-only fault injection, from the environment only (never a config file or flag). */
  faultInjection: FaultInjection;
}

/**
 * Faults a test can inject into a real process. `SHARDPIPE_FAULT_INJECTION_NO_MULTI=1`: a store
 * node serves the Store service without Multi (answers UNIMPLEMENTED, as a node older than Multi does).
 */
export interface FaultInjection {
  storeWithoutMulti: boolean;
  /**
   * `SHARDPIPE_FAULT_INJECTION_HOLD_FORWARDS=PATH`: while a file exists at PATH, a store node sends
   * no chain forward (each waits until its chain changes), so a head holds writes it applied but
   * never forwarded.
   */
  holdForwardsFile: string | undefined;
  /**
   * `SHARDPIPE_FAULT_INJECTION_HOLD_PREPARES=PATH`: while a file exists at PATH, a store node's
   * split and merge prepares wait before they start (so a test can change the chain under them).
   */
  holdPreparesFile: string | undefined;
}

/**
 * Reads the settings from the process environment and, when `configFile` (or SHARDPIPE_CONFIG)
 * names one, a JSON config file. Errors name the setting, its source and the allowed values.
 */
export function loadCliConfig(processEnv: NodeJS.ProcessEnv, configFile?: string): LoadedConfig {
  const fromEnv: Record<string, string> = {};
  for (const name of Object.keys(SETTINGS) as SettingName[]) {
    const value = processEnv[name];
    if (value !== undefined && value !== '') fromEnv[name] = value;
  }
  const envParsed = envSchema.safeParse(fromEnv);
  if (!envParsed.success) throw new CliUsageError(describeIssue(envParsed.error, (setting) => `environment variable ${setting}`));

  const file = configFile ?? processEnv.SHARDPIPE_CONFIG;
  const fromFile = file === undefined || file === '' ? {} : readConfigFile(file);
  const env: CliEnv = { ...fromFile, ...envParsed.data };
  const urlFromFile = env.SHARDPIPE_REDIS_URL === undefined && env.SHARDPIPE_REDIS_URL_FILE !== undefined;
  if (urlFromFile) env.SHARDPIPE_REDIS_URL = readRedisUrlFile(env.SHARDPIPE_REDIS_URL_FILE!);
  const sources = {} as Record<SettingName, SettingSource>;
  for (const name of Object.keys(SETTINGS) as SettingName[]) {
    sources[name] = name in envParsed.data ? 'env' : name in fromFile ? 'file' : SETTINGS[name].default === undefined ? 'unset' : 'default';
  }
  if (urlFromFile) sources.SHARDPIPE_REDIS_URL = sources.SHARDPIPE_REDIS_URL_FILE;
  return { env, sources, file: file || undefined, faultInjection: { storeWithoutMulti: processEnv.SHARDPIPE_FAULT_INJECTION_NO_MULTI === '1', holdForwardsFile: processEnv.SHARDPIPE_FAULT_INJECTION_HOLD_FORWARDS || undefined, holdPreparesFile: processEnv.SHARDPIPE_FAULT_INJECTION_HOLD_PREPARES || undefined } };
}

/** Validates settings given as flags (same rules as the environment). */
export function readCliEnv(values: Partial<Record<SettingName, string | undefined>>): CliEnv {
  const defined = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined));
  const parsed = envSchema.safeParse(defined);
  if (!parsed.success) throw new CliUsageError(describeIssue(parsed.error, (setting) => flagOf(setting)));
  return parsed.data;
}

/** The Redis URL a SHARDPIPE_REDIS_URL_FILE holds (one line), checked as SHARDPIPE_REDIS_URL is; errors never show the file's content. */
function readRedisUrlFile(path: string): string {
  let url: string;
  try {
    url = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new CliUsageError(`SHARDPIPE_REDIS_URL_FILE ${path}: ${(err as Error).message}`);
  }
  if (!/^rediss?:\/\/\S+$/.test(url)) throw new CliUsageError(`SHARDPIPE_REDIS_URL_FILE ${path}: must hold one redis:// or rediss:// URL`);
  return url;
}

function readConfigFile(path: string): CliEnv {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new CliUsageError(`config file ${path}: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CliUsageError(`config file ${path}: must be a JSON object of settings`);
  const byFileName = new Map(Object.entries(SETTINGS).map(([env, s]) => [s.file as string, env as SettingName]));
  const asEnv: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    const env = byFileName.get(key);
    if (env === undefined) throw new CliUsageError(`config file ${path}: unknown setting "${key}" (allowed: ${[...byFileName.keys()].join(', ')})`);
    asEnv[env] = value;
  }
  const parsed = envSchema.safeParse(asEnv);
  if (!parsed.success) throw new CliUsageError(describeIssue(parsed.error, (setting) => `config file ${path}: setting "${SETTINGS[setting].file}"`));
  return parsed.data;
}

function describeIssue(error: z.ZodError, where: (setting: SettingName) => string): string {
  const issue = error.issues[0]!;
  const setting = issue.path[0] as SettingName;
  return `${where(setting)}: ${issue.message}`;
}

function flagOf(setting: SettingName): string {
  return `--${SETTINGS[setting].file.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** A mistake in what the user typed or configured: exit code 64 (EX_USAGE). */
export class CliUsageError extends Error {
  override readonly name = 'CliUsageError';
}
