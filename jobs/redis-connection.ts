import type { ConnectionOptions } from 'bullmq';
import { JobsError } from './jobs-errors.js';

/** BullMQ connection options from a redis:// or rediss:// URL. */
export function connectionFromUrl(url: string): ConnectionOptions {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new JobsError('JOBS_INVALID_URL', `invalid Redis URL "${url}": expected redis://[user:password@]host:port[/db]`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new JobsError('JOBS_INVALID_URL', `invalid Redis URL "${url}": the scheme must be redis:// or rediss://`);
  }
  const db = parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new JobsError('JOBS_INVALID_URL', `invalid Redis URL "${url}": database must be a whole number`);
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
