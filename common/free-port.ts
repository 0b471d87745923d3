import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** The lowest port handed out: below it are well-known and registered services' usual ports. */
const LOWEST_PORT = 10_000;
/** Ports tried at random below the ephemeral range before falling back to one the kernel picks. */
const ATTEMPTS = 64;
/** Ports this process handed out: never twice, as callers bind them later (often several at once). */
const handedOut = new Set<number>();

/**
 * A TCP port on `host` that was free a moment ago, for a server that may be stopped and started
 * again on it (a local cluster's nodes, Redis, etcd). It is taken below the kernel's ephemeral
 * range (`net.ipv4.ip_local_port_range`): a port in that range, once the server on it stops, can be
 * given at once to any outgoing connection as its local port, and the restart on the same address
 * then fails with EADDRINUSE (seen when a SIGKILLed node was restarted under load). Falls back to
 * a port the kernel picks when the range leaves no room below it.
 */
export async function findFreePort(host = '127.0.0.1'): Promise<number> {
  const below = ephemeralRangeStart() - 1;
  for (let attempt = 0; below > LOWEST_PORT && attempt < ATTEMPTS; attempt++) {
    const port = LOWEST_PORT + Math.floor(Math.random() * (below - LOWEST_PORT + 1));
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    if ((await bind(host, port)) !== undefined) return port;
  }
  const port = await bind(host, 0);
  if (port === undefined) throw new Error(`no free TCP port on ${host}`);
  handedOut.add(port);
  return port;
}

/** The first port of the kernel's ephemeral range (Linux; 32768, its default, elsewhere). */
function ephemeralRangeStart(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32768;
  } catch {
    return 32768;
  }
}

/** Binds `port` (0 = any) on `host` and releases it: the port bound, or undefined when it was taken. */
function bind(host: string, port: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(undefined) : reject(err)));
    server.listen({ port, host, exclusive: true }, () => {
      const address = server.address();
      const bound = typeof address === 'object' && address ? address.port : undefined;
      server.close(() => resolve(bound));
    });
  });
}
