import { createRequire } from 'node:module';
import type { Etcd3, IOptions } from 'etcd3';
import { redactUrl } from '../common/index.js';
import { StoreError } from './store-errors.js';

/** Where etcd is and how to authenticate to it. */
const require = createRequire(import.meta.url);
// etcd3 (and cockatiel) take most of a second to load: loaded by the first etcd connection, not by every process that imports the store.
let etcd3Module: typeof import('etcd3') | undefined;
/** The etcd3 module, loaded on first use. */
export function loadEtcd3(): typeof import('etcd3') {
  return (etcd3Module ??= require('etcd3') as typeof import('etcd3'));
}

export interface EtcdConnectionOptions {
  /**
   * One or more endpoints, comma-separated: `http://HOST:PORT` or `https://HOST:PORT`; a user in
   * the URL (`http://USER:PASSWORD@HOST:PORT`) logs in with etcd's own user auth. Required.
   */
  url: string;
  /** PEM CA that signed etcd's server certificate (TLS). */
  ca?: Buffer;
  /** PEM client certificate and key (etcd's client-certificate auth); both or neither. */
  cert?: Buffer;
  key?: Buffer;
  /** Deadline of one etcd call (not of watches). Default 5000 ms. */
  callTimeoutMs?: number;
}

/** The parsed form of an etcd URL list: hosts without credentials, the user, and a loggable text. */
export interface EtcdEndpoints {
  hosts: string[];
  username?: string;
  password?: string;
  /** The URL with any password replaced by `***`: the only form that is logged or printed. */
  display: string;
}

/** Parses `--etcd`; throws RangeError naming the bad endpoint (with its password hidden). */
export function parseEtcdUrl(url: string): EtcdEndpoints {
  const parts = url.split(',').map((u) => u.trim()).filter((u) => u.length > 0);
  if (parts.length === 0) throw new RangeError('--etcd needs at least one URL, e.g. http://127.0.0.1:2379');
  const hosts: string[] = [];
  let username: string | undefined;
  let password: string | undefined;
  for (const part of parts) {
    let parsed: URL;
    try {
      parsed = new URL(part);
    } catch {
      throw new RangeError(`--etcd: "${redactUrl(part)}" is not a URL (want http://HOST:PORT or https://HOST:PORT)`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new RangeError(`--etcd: "${redactUrl(part)}" must start with http:// or https://`);
    if (parsed.port === '') throw new RangeError(`--etcd: "${redactUrl(part)}" needs a port (etcd's client port is usually 2379)`);
    if (parsed.username !== '') {
      username = decodeURIComponent(parsed.username);
      password = decodeURIComponent(parsed.password);
    }
    hosts.push(`${parsed.protocol}//${parsed.host}`);
  }
  return { hosts, username, password, display: parts.map(redactUrl).join(',') };
}

/**
 * An etcd client: deadlines on every call, no hidden retries or circuit breaker (callers decide
 * when to try again, so a restarted etcd is used at once), watches reconnecting within a second.
 */
export function connectEtcd(options: EtcdConnectionOptions): Etcd3 {
  const endpoints = parseEtcdUrl(options.url);
  if ((options.cert === undefined) !== (options.key === undefined)) throw new RangeError('--etcd-cert and --etcd-key go together');
  const callTimeoutMs = options.callTimeoutMs ?? DEFAULT_ETCD_CALL_TIMEOUT_MS;
  const { ExponentialBackoff, noop } = require('cockatiel') as typeof import('cockatiel');
  const config: IOptions = {
    hosts: endpoints.hosts,
    dialTimeout: callTimeoutMs,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    faultHandling: { host: () => noop, global: noop, watchBackoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 1000 }).next() },
  };
  if (options.ca !== undefined || options.cert !== undefined) {
    config.credentials = { rootCertificate: options.ca ?? Buffer.alloc(0), ...(options.cert ? { certChain: options.cert, privateKey: options.key! } : {}) };
  }
  if (endpoints.username !== undefined) config.auth = { username: endpoints.username, password: endpoints.password ?? '' };
  return new (loadEtcd3().Etcd3)(config);
}

/** Default deadline of one etcd call, ms. */
export const DEFAULT_ETCD_CALL_TIMEOUT_MS = 5000;

/**
 * Wraps a failed etcd call: STORE_ETCD_UNAUTHENTICATED when etcd refused the credentials, else
 * STORE_ETCD_UNAVAILABLE; both name the endpoints (no secrets), what was being done and the deadline.
 */
export function etcdFailure(err: unknown, display: string, doing: string, timeoutMs = DEFAULT_ETCD_CALL_TIMEOUT_MS): StoreError {
  if (err instanceof StoreError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  if (isEtcdAuthFailure(err)) {
    return new StoreError('STORE_ETCD_UNAUTHENTICATED', `etcd at ${display} refused the credentials while ${doing}: ${reason}: check the user and password in the --etcd URL, or --etcd-cert/--etcd-key`, { cause: err });
  }
  return new StoreError('STORE_ETCD_UNAVAILABLE', `etcd at ${display} did not answer while ${doing} (each call has ${timeoutMs} ms): ${reason}`, { cause: err });
}

/** Runs one etcd call; its failure becomes `etcdFailure`'s error for `doing`. */
export async function etcdCall<T>(display: string, doing: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw etcdFailure(err, display, doing);
  }
}

/** etcd refused who we are (wrong user or password, unknown user, no permission): retrying will not help. */
export function isEtcdAuthFailure(err: unknown): boolean {
  const { EtcdAuthenticationFailedError, EtcdPermissionDeniedError, EtcdUserNotFoundError, GRPCUnauthenticatedError } = loadEtcd3();
  return err instanceof EtcdAuthenticationFailedError || err instanceof EtcdPermissionDeniedError || err instanceof EtcdUserNotFoundError || err instanceof GRPCUnauthenticatedError;
}
