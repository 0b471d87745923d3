import type { Logger } from '../common/index.js';
import { Key, StoreClient, displayBytes, type StoreCredentials } from '../store/index.js';
import { CliUsageError } from './cli-env.js';
import { decodeArg, type Encoding } from './cli-io.js';

// The CLI's helpers that need store/: commands load this module in their actions (`await import`),
// so building the command tree does not load the store client.

export function parseKey(text: string, encoding: Encoding): Key {
  try {
    return Key.fromBytes(decodeArg(text, encoding, 'key'));
  } catch (err) {
    throw new CliUsageError(`invalid key: ${(err as Error).message}`);
  }
}

/** Runs `fn` with a client for the seeds (with the context's token and TLS) and always closes it. */
export async function withClient<T>(seeds: string[], ctx: { logger: Logger; storeCredentials(): StoreCredentials }, fn: (client: StoreClient) => Promise<T>, rpcDeadlineMs?: number): Promise<T> {
  const client = new StoreClient({ seeds, logger: ctx.logger, credentials: ctx.storeCredentials(), ...(rpcDeadlineMs === undefined ? {} : { rpcDeadlineMs }) });
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

export function rangeText(start: Buffer, end: Buffer): string {
  return `[${start.length ? displayBytes(start) : '-∞'}, ${end.length ? displayBytes(end) : '+∞'})`;
}
