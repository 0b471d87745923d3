import { resolve } from 'node:path';
import type { connectionFromUrl } from '../jobs/index.js';
import type { CliContext } from './cli-context.js';

/** BullMQ connection options, as `connectionFromUrl` makes them. */
export type JobConnection = ReturnType<typeof connectionFromUrl>;

/**
 * The Redis of the job queues: `url` (--redis or SHARDPIPE_REDIS_URL) when given, else a private
 * redis-server in DATA_DIR/redis that the lifecycle stops with the command. Its credentials are
 * checked before anything is submitted.
 */
export async function openJobRedis(ctx: CliContext, url: string | undefined, dataDir: string): Promise<JobConnection> {
  const { PrivateRedis, checkRedisCredentials, connectionFromUrl } = await import('../jobs/index.js');
  const redisUrl = url ?? ctx.lifecycle.add('private redis', await PrivateRedis.start({ dataDir: resolve(dataDir, 'redis'), logger: ctx.logger }), (r) => r.stop()).url;
  const connection = connectionFromUrl(redisUrl);
  await checkRedisCredentials(connection, redisUrl);
  return connection;
}

/** DATA_DIR: --data-dir, else SHARDPIPE_DATA_DIR, else `.shardpipe`, absolute. */
export function dataDirOf(ctx: CliContext, flag: string | undefined): string {
  return resolve(flag ?? ctx.env.SHARDPIPE_DATA_DIR ?? '.shardpipe');
}
