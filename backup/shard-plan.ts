import { z } from 'zod';
import { ShardpipeError } from '../common/index.js';
import { planCoverageProblem, type ShardRange, type ShardTarget, type StoreClient } from '../store/index.js';
import { describeCause } from '../common/index.js';
import { BackupError } from './backup-errors.js';

/** Options of `planBackupShards`. */
export interface PlanBackupShardsOptions {
  /**
   * Base URL of a metrics server (`http://host:port`): the plan is its `GET /api/shards` answer,
   * made from its polled partition sizes. Absent: the store client plans in-process from live stats.
   */
  metricsUrl?: string;
  /** Sent to the metrics server as `authorization: Bearer TOKEN` (role read). Default: none. */
  token?: string;
  /** Longest wait for the metrics server, in ms. Default 30000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const hex = z.string().regex(/^(?:[0-9a-f]{2})*$/);
const planAnswer = z.object({
  mapVersion: z.number().int(),
  shards: z
    .array(
      z.object({
        index: z.number().int().min(0),
        start: hex,
        end: hex,
        partitions: z.array(z.number().int().min(0)),
        approxRows: z.number().min(0),
        approxBytes: z.number().min(0),
      }),
    )
    .min(1),
});

/**
 * The shard plan of a backup: contiguous key ranges covering the keyspace exactly once, each about
 * `target` in size. Throws BackupError BACKUP_PLAN_FAILED (retryable) when the store or metrics
 * server cannot be asked now, and BACKUP_PLAN_IMPOSSIBLE when retrying cannot help: the target is
 * too small for the store (the message names one that fits), the URL is bad, or the answer is not a
 * plan covering the keyspace.
 */
export async function planBackupShards(client: StoreClient, target: ShardTarget, options: PlanBackupShardsOptions = {}): Promise<ShardRange[]> {
  let shards: ShardRange[];
  if (options.metricsUrl === undefined) {
    try {
      shards = await client.planShards(target, { signal: options.signal });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      if (err instanceof ShardpipeError && err.code === 'STORE_PLAN_TOO_LARGE') {
        const flag = 'targetRows' in target ? '--shard-rows' : '--shard-bytes';
        throw new BackupError('BACKUP_PLAN_IMPOSSIBLE', `${err.message} (${flag} ${String(err.context.smallestTarget)} or more)`, { cause: err });
      }
      const retryable = err instanceof ShardpipeError && err.retryable;
      throw new BackupError(retryable ? 'BACKUP_PLAN_FAILED' : 'BACKUP_PLAN_IMPOSSIBLE', `cannot plan the backup's shards from the store: ${describeCause(err)}`, { cause: err });
    }
  } else {
    shards = await fetchPlan(options.metricsUrl, target, options);
  }
  checkCoverage(shards, options.metricsUrl ?? 'the store');
  return shards;
}

async function fetchPlan(metricsUrl: string, target: ShardTarget, options: PlanBackupShardsOptions): Promise<ShardRange[]> {
  const query = 'targetRows' in target ? `targetRows=${target.targetRows}` : `targetBytes=${target.targetBytes}`;
  let url: URL;
  try {
    url = new URL(`api/shards?${query}`, metricsUrl.endsWith('/') ? metricsUrl : `${metricsUrl}/`);
  } catch (err) {
    throw new BackupError('BACKUP_PLAN_IMPOSSIBLE', `--metrics-url "${metricsUrl}" is not a URL: ${describeCause(err)}`, { cause: err });
  }
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 30_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  let body: unknown;
  let refused: string | undefined;
  try {
    const response = await fetch(url, { signal, headers: { accept: 'application/json', ...(options.token ? { authorization: `Bearer ${options.token}` } : {}) } });
    const text = await response.text();
    // A 4xx answer is about the request (e.g. METRICS_PLAN_TOO_LARGE): asking again gets the same.
    if (response.status >= 400 && response.status < 500) refused = `HTTP ${response.status}: ${errorMessageOf(text)}`;
    else if (!response.ok) throw new Error(`HTTP ${response.status}: ${text.slice(0, 300)}`);
    else body = JSON.parse(text);
  } catch (err) {
    if (options.signal?.aborted) throw options.signal.reason;
    throw new BackupError('BACKUP_PLAN_FAILED', `the metrics server at ${url.href} gave no shard plan: ${describeCause(err)}; try again, or leave out --metrics-url to plan in-process`, {
      cause: err,
    });
  }
  if (refused !== undefined) {
    const flag = 'targetRows' in target ? '--shard-rows' : '--shard-bytes';
    throw new BackupError('BACKUP_PLAN_IMPOSSIBLE', `the metrics server at ${url.href} cannot make this shard plan: ${refused}; change ${flag} as it says`);
  }
  const parsed = planAnswer.safeParse(body);
  if (!parsed.success) {
    throw new BackupError('BACKUP_PLAN_IMPOSSIBLE', `the metrics server at ${url.href} answered a shard plan this shardpipe does not understand: ${parsed.error.issues[0]!.message}`, { cause: parsed.error });
  }
  return parsed.data.shards.map((s) => ({ ...s, start: Buffer.from(s.start, 'hex'), end: Buffer.from(s.end, 'hex') }));
}

/** The message of a JSON error answer (`{"error": {"code", "message"}}`), else the text's start. */
function errorMessageOf(text: string): string {
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    if (typeof parsed.error?.message === 'string') return `${parsed.error.message}${typeof parsed.error.code === 'string' ? ` [${parsed.error.code}]` : ''}`;
  } catch {
    // Not JSON: quoted as it is below.
  }
  return text.slice(0, 300);
}

function checkCoverage(shards: readonly ShardRange[], source: string): void {
  const problem = planCoverageProblem(shards);
  if (problem !== undefined) throw new BackupError('BACKUP_PLAN_IMPOSSIBLE', `the shard plan from ${source} ${problem}`);
}
