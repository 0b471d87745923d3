import { readFileSync } from 'node:fs';
import { ConfigError } from './config-error.js';

/** Paths of PEM files as given by `--tls-cert`, `--tls-key`, `--tls-ca` (or SHARDPIPE_TLS_*). */
export interface TlsPaths {
  /** This process's certificate (a server's identity; a client's certificate for mutual TLS). */
  cert?: string;
  /** The private key of `cert`. */
  key?: string;
  /** CA bundle: a client trusts servers signed by it; a server requires client certificates signed by it. */
  ca?: string;
}

/** The PEM contents of TlsPaths, read once at start. */
export interface TlsMaterial {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
}

/**
 * Reads the PEM files; undefined when none is given. A certificate without its key (or the other
 * way round) is a configuration error, named as such.
 */
export function loadTls(paths: TlsPaths): TlsMaterial | undefined {
  if (paths.cert === undefined && paths.key === undefined && paths.ca === undefined) return undefined;
  if ((paths.cert === undefined) !== (paths.key === undefined)) {
    throw new ConfigError('CONFIG_TLS_INVALID', `--tls-cert and --tls-key go together: got only ${paths.cert === undefined ? '--tls-key' : '--tls-cert'}`);
  }
  return { cert: readPem(paths.cert, '--tls-cert'), key: readPem(paths.key, '--tls-key'), ca: readPem(paths.ca, '--tls-ca') };
}

/** Whether the material lets a server speak TLS (it has a certificate and key). */
export function canServeTls(tls: TlsMaterial | undefined): tls is TlsMaterial & { cert: Buffer; key: Buffer } {
  return tls?.cert !== undefined && tls.key !== undefined;
}

function readPem(path: string | undefined, flag: string): Buffer | undefined {
  if (path === undefined) return undefined;
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    throw new ConfigError('CONFIG_TLS_INVALID', `cannot read ${flag} ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (!pem.includes('-----BEGIN ')) throw new ConfigError('CONFIG_TLS_INVALID', `${flag} ${path} is not a PEM file (no "-----BEGIN" line)`);
  return pem;
}
