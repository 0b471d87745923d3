import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { PrivateRedis } from '../../jobs/index.js';
import { StoreClient } from '../../store/index.js';
import { StoreCluster } from './store-cluster.js';

/** What a test needs to run the CLI against: a private redis-server, a store cluster and a client of it. */
export interface Stack {
  /** The stack's own temp directory (redis data lives in `redis/` inside it). */
  readonly dir: string;
  readonly redis: PrivateRedis;
  readonly cluster: StoreCluster;
  readonly client: StoreClient;
  /** A path inside `dir` (not created). */
  sub(name: string): string;
  /** `--seeds <cluster> --redis <url>`, for CLI calls. */
  readonly cliArgs: string[];
}

export interface StackOptions {
  nodes: number;
  partitions: number;
  /** Prefix of the temp directory made for the stack; ignored when `dir` is given. */
  prefix?: string;
  /** Use this directory (owned by the caller, not removed) instead of a fresh temp directory. */
  dir?: () => string;
  /** Runs once the stack is up (e.g. to load rows through `client`). */
  seed?: (stack: Stack) => Promise<void>;
  /** Timeout of the start-up hook, seeding included; default: the configured hookTimeout. */
  timeoutMs?: number;
}

/**
 * Starts redis-server + a store cluster + a client in `beforeAll`, and closes them (and removes the
 * temp directory it made) in `afterAll`. The returned object is filled in once `beforeAll` has run.
 */
export function useStack(options: StackOptions): Stack {
  const stack = { sub: (name: string) => join(stack.dir, name) } as { -readonly [K in keyof Stack]: Stack[K] };
  let ownDir = false;
  beforeAll(async () => {
    if (options.dir) stack.dir = options.dir();
    else {
      stack.dir = await mkdtemp(join(tmpdir(), options.prefix ?? 'shardpipe-stack-'));
      ownDir = true;
    }
    stack.redis = await PrivateRedis.start({ dataDir: join(stack.dir, 'redis') });
    stack.cluster = await StoreCluster.start({ nodes: options.nodes, partitions: options.partitions });
    stack.client = new StoreClient({ seeds: stack.cluster.seeds });
    stack.cliArgs = ['--seeds', stack.cluster.seeds.join(','), '--redis', stack.redis.url];
    await options.seed?.(stack);
  }, options.timeoutMs);
  afterAll(async () => {
    stack.client?.close();
    await stack.cluster?.close();
    await stack.redis?.stop();
    if (ownDir) await rm(stack.dir, { recursive: true, force: true });
  });
  return stack;
}
