import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { BackupTarget, OpenBackupTargetOptions } from '../backup/index.js';
import { parseDurationMs } from '../common/index.js';
import type { BackupSpec } from '../jobs/index.js';
import type { ShardTarget } from '../store/index.js';
import type { CliContext } from './cli-context.js';
import { CliUsageError } from './cli-env.js';
import { parsePositiveInt } from './cli-io.js';
import { dataDirOf } from './job-redis.js';

/** Flags naming a backup target (every backup command, and restore). */
export interface TargetOptions {
  target?: string;
  dataDir?: string;
  json?: boolean;
}

/** Flags shaping a backup's plan (`backup run`, `backup schedule`). */
export interface PlanOptions {
  shardRows?: string;
  shardBytes?: string;
  metricsUrl?: string;
  lease: string;
  rowGroupRows?: string;
}

/** Credentials and tuning for `az://` targets, from this process's environment. */
export function targetOptionsOf(ctx: CliContext): OpenBackupTargetOptions {
  return { azure: { connectionString: ctx.env.AZURE_STORAGE_CONNECTION_STRING } };
}

/**
 * `--target` (or SHARDPIPE_BACKUP_TARGET) as a URL: a scheme-less value is a local folder; nothing
 * given is DATA_DIR/backups. Every command that reads or writes backups (restore too) parses it here.
 */
export function targetUrlOf(ctx: CliContext, opts: TargetOptions): string {
  const given = opts.target ?? ctx.env.SHARDPIPE_BACKUP_TARGET;
  if (given === undefined || given === '') return pathToFileURL(resolve(dataDirOf(ctx, opts.dataDir), 'backups')).href;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(given)) return given;
  return pathToFileURL(resolve(given)).href;
}

/** Runs `fn` with the target of the flags open and always closes it. */
export async function withTarget(ctx: CliContext, opts: TargetOptions, fn: (target: BackupTarget) => Promise<void>): Promise<void> {
  const { openBackupTarget } = await import('../backup/index.js');
  const target = openBackupTarget(targetUrlOf(ctx, opts), targetOptionsOf(ctx));
  try {
    await fn(target);
  } finally {
    await target.close();
  }
}

/** The backup spec of the flags; every bad value is a usage error naming its flag. */
export async function specOf(ctx: CliContext, opts: TargetOptions & PlanOptions): Promise<BackupSpec> {
  if (opts.shardRows !== undefined && opts.shardBytes !== undefined) throw new CliUsageError('give --shard-rows or --shard-bytes, not both');
  const shardTarget: ShardTarget = opts.shardBytes !== undefined ? { targetBytes: atLeastOne(opts.shardBytes, '--shard-bytes') } : { targetRows: atLeastOne(opts.shardRows ?? '1000000', '--shard-rows') };
  const leaseMs = parseDurationMs(opts.lease);
  if (leaseMs < 10_000 || leaseMs > 24 * 3600_000) throw new CliUsageError(`--lease must be 10s–24h, got ${opts.lease}`);
  const rowGroupRows = opts.rowGroupRows === undefined ? undefined : atLeastOne(opts.rowGroupRows, '--row-group-rows');
  if (rowGroupRows !== undefined && rowGroupRows > 65_536) throw new CliUsageError(`--row-group-rows must be 1–65536, got ${rowGroupRows}`);
  const target = targetUrlOf(ctx, opts);
  // Refuses a malformed URL as a usage error before anything starts.
  const { openBackupTarget } = await import('../backup/index.js');
  openBackupTarget(target, targetOptionsOf(ctx));
  return { target, shardTarget, metricsUrl: opts.metricsUrl ?? ctx.env.SHARDPIPE_METRICS_URL, leaseMs, rowGroupRows };
}

/** A whole number ≥ 1 for `flag`. */
export function atLeastOne(value: string, flag: string): number {
  const n = parsePositiveInt(value, flag);
  if (n < 1) throw new CliUsageError(`${flag} must be ≥ 1, got "${value}"`);
  return n;
}

/** --keep: complete backups to keep, ≥ 1. */
export function keepOf(value: string): number {
  return atLeastOne(value, '--keep');
}

/** The shared Redis schedules live in: --redis or SHARDPIPE_REDIS_URL, required. */
export function sharedRedis(ctx: CliContext, flag: string | undefined): string {
  const url = flag ?? ctx.env.SHARDPIPE_REDIS_URL;
  if (!url) throw new CliUsageError('schedules live in the shared Redis the workers use: pass --redis URL or set SHARDPIPE_REDIS_URL');
  return url;
}

/** A stable default name per target, so scheduling the same target again updates its schedule. */
export function scheduleNameOf(target: string): string {
  return target
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(-100) || 'backup';
}
