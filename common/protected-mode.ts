import { isIP } from 'node:net';
import { ConfigError } from './config-error.js';

/** Whether a host or peer address is loopback (127.0.0.0/8, ::1, IPv4-mapped loopback, localhost). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const host = address.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host === '::1') return true;
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

/** The host part of `HOST:PORT` or `[V6]:PORT`. */
export function hostOf(address: string): string {
  const v6 = /^\[([^\]]+)\]:\d+$/.exec(address);
  if (v6) return v6[1]!;
  const i = address.lastIndexOf(':');
  return i < 0 ? address : address.slice(0, i);
}

/**
 * Protected mode, as Redis has it: a server without tokens may bind only a loopback address,
 * unless the user says `--insecure`. `what` names the server in the message ("store node").
 */
export function checkBind(host: string, options: { what: string; authenticated: boolean; insecure: boolean; flag?: string }): void {
  if (options.authenticated || options.insecure || isLoopback(host)) return;
  throw new ConfigError(
    'CONFIG_INSECURE_BIND',
    `refusing to bind the ${options.what} to ${host}: without --auth-token-file anyone who can reach ${host} could read and change data. ` +
      `Give --auth-token-file FILE (lines "ROLE TOKEN"), bind ${options.flag ?? 'it'} to 127.0.0.1, or pass --insecure if the network is trusted`,
  );
}

/** What an unauthenticated server tells a non-loopback peer it refuses. */
export function protectedModeMessage(what: string, peer: string): string {
  return `${what} is in protected mode: no --auth-token-file is configured, so only loopback clients are accepted and ${peer} is not one. Start it with --auth-token-file FILE and send a token (SHARDPIPE_TOKEN or --token), or start it with --insecure on a trusted network`;
}
