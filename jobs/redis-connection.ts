import type { ConnectionOptions } from 'bullmq';
import type { RedisOptions } from 'ioredis';
import { Redis } from './commonjs-libraries.js';
import { redactUrl } from '../common/index.js';
import { JobsError } from './jobs-errors.js';

/**
 * BullMQ connection options from a redis:// or rediss:// URL: user name and password (Redis ACL or
 * requirepass) and TLS (rediss://) go to ioredis as they are; errors never repeat the password.
 */
export function connectionFromUrl(url: string): ConnectionOptions {
  const shown = redactUrl(url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new JobsError('JOBS_INVALID_URL', `invalid Redis URL "${shown}": expected redis://[user:password@]host:port[/db]`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new JobsError('JOBS_INVALID_URL', `invalid Redis URL "${shown}": the scheme must be redis:// or rediss://`);
  }
  const db = parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new JobsError('JOBS_INVALID_URL', `invalid Redis URL "${shown}": database must be a whole number`);
  return {
    host: parsed.hostname,
    port: parsed.port ? Number(parsed.port) : 6379,
    username: parsed.username ? decodeURIComponent(parsed.username) : undefined,
    password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
    db,
    ...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
    // Workers block on Redis; BullMQ requires unlimited retries per request for them.
    maxRetriesPerRequest: null,
  };
}

/**
 * Pings Redis once with the connection's credentials, so a wrong password fails at once with
 * JOBS_REDIS_REFUSED instead of BullMQ reconnecting forever. Other failures (Redis down) are left
 * to BullMQ's retries. `shownUrl` names the server in the message (give it redacted).
 */
export async function checkRedisCredentials(connection: ConnectionOptions, shownUrl: string, timeoutMs = 5000): Promise<void> {
  const probe = new Redis({ ...(connection as RedisOptions), lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: timeoutMs });
  // ioredis reports a refused AUTH as an 'error' event; connect() then only says the connection closed.
  let refusal: Error | undefined;
  probe.on('error', (err: Error) => (refusal ??= err));
  try {
    await probe.connect();
    await probe.ping();
  } catch (caught) {
    const err = refusal ?? (caught as Error);
    const message = err.message;
    if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(message)) {
      throw new JobsError('JOBS_REDIS_REFUSED', `Redis at ${redactUrl(shownUrl)} refused the credentials: ${message}`, { cause: err });
    }
  } finally {
    probe.disconnect();
  }
}
