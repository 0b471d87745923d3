import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from './config-error.js';

/**
 * What a token may do. Client roles nest: admin ⊇ write ⊇ read. `replica` stands apart: store
 * nodes use it for each other (chain forwards) and it allows nothing else; no client role includes it.
 */
export type Role = 'read' | 'write' | 'admin' | 'replica';

export const ROLES: readonly Role[] = ['read', 'write', 'admin', 'replica'];

const RANK: Record<Role, number> = { read: 1, write: 2, admin: 3, replica: 0 };

/** Shortest token accepted: shorter ones are guessable. */
export const MIN_TOKEN_LENGTH = 16;

/** Whether `role` includes everything `needed` may do. */
export function roleAllows(role: Role, needed: Role): boolean {
  if (role === 'replica' || needed === 'replica') return role === needed;
  return RANK[role] >= RANK[needed];
}

/** The outcome of checking a request's credentials. */
export type AuthResult = { ok: true; role: Role } | { ok: false; reason: 'missing' | 'invalid' };

interface Entry {
  role: Role;
  digest: Buffer;
}

/**
 * The tokens a server accepts, each with its role, read from an `--auth-token-file`: one
 * `ROLE TOKEN` per line, `#` comments and blank lines ignored. Tokens are compared as SHA-256
 * digests, with every entry and in constant time, so timing gives no token away.
 */
export class AuthTokens {
  /**
   * The token of the weakest role in the file: what a server presents to a peer of the same
   * cluster (a node fetching the partition map from another node).
   */
  readonly peerToken: string;
  /** The `replica` token of the file, which a node presents when it forwards to its successor in a chain. */
  readonly replicaToken: string | undefined;
  private readonly entries: readonly Entry[];

  private constructor(entries: Entry[], peerToken: string, replicaToken: string | undefined) {
    this.entries = entries;
    this.peerToken = peerToken;
    this.replicaToken = replicaToken;
  }

  /** Parses token file text; errors name the file and line. */
  static parse(text: string, source = 'token file'): AuthTokens {
    const entries: Entry[] = [];
    const seen = new Set<string>();
    let peer: { role: Role; token: string } | undefined;
    let replica: string | undefined;
    for (const [i, raw] of text.split('\n').entries()) {
      const line = raw.replace(/\r$/, '').trim();
      if (line === '' || line.startsWith('#')) continue;
      const where = `${source} line ${i + 1}`;
      const parts = line.split(/\s+/);
      if (parts.length !== 2) throw new ConfigError('CONFIG_TOKEN_FILE_INVALID', `${where}: expected "ROLE TOKEN" (ROLE is ${ROLES.join(', ')}), got ${parts.length} word(s)`);
      const [role, token] = parts as [string, string];
      if (!(ROLES as readonly string[]).includes(role)) throw new ConfigError('CONFIG_TOKEN_FILE_INVALID', `${where}: unknown role "${role.slice(0, 20)}" (allowed: ${ROLES.join(', ')})`);
      if (token.length < MIN_TOKEN_LENGTH) throw new ConfigError('CONFIG_TOKEN_FILE_INVALID', `${where}: the token is ${token.length} characters, at least ${MIN_TOKEN_LENGTH} are needed (e.g. openssl rand -hex 32)`);
      if (!/^[\x21-\x7e]+$/.test(token)) throw new ConfigError('CONFIG_TOKEN_FILE_INVALID', `${where}: the token has characters outside printable ASCII`);
      const digest = sha256(token);
      const hex = digest.toString('hex');
      if (seen.has(hex)) throw new ConfigError('CONFIG_TOKEN_FILE_INVALID', `${where}: the same token appears twice; give each role its own token`);
      seen.add(hex);
      entries.push({ role: role as Role, digest });
      if (role === 'replica') replica ??= token;
      else if (peer === undefined || RANK[role as Role] < RANK[peer.role]) peer = { role: role as Role, token };
    }
    if (entries.length === 0) throw new ConfigError('CONFIG_TOKEN_FILE_INVALID', `${source}: no tokens (expected lines "ROLE TOKEN", ROLE one of ${ROLES.join(', ')})`);
    if (peer === undefined) throw new ConfigError('CONFIG_TOKEN_FILE_INVALID', `${source}: only replica tokens; a node also needs a read, write or admin token to present to its peers`);
    return new AuthTokens(entries, peer.token, replica);
  }

  /** Reads and parses a token file. */
  static fromFile(path: string): AuthTokens {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError('CONFIG_TOKEN_FILE_INVALID', `cannot read --auth-token-file ${path}: ${(err as Error).message}`, { cause: err });
    }
    return AuthTokens.parse(text, path);
  }

  /** The role of `token`, checking every entry so the time taken does not depend on which matched. */
  check(token: string | undefined): AuthResult {
    if (token === undefined || token === '') return { ok: false, reason: 'missing' };
    const digest = sha256(token);
    let found: Role | undefined;
    for (const e of this.entries) {
      if (timingSafeEqual(e.digest, digest) && found === undefined) found = e.role;
    }
    return found === undefined ? { ok: false, reason: 'invalid' } : { ok: true, role: found };
  }

  /** The token of an `authorization` header value (`Bearer T`, or HTTP Basic with T as password). */
  static tokenOfHeader(header: string | undefined): string | undefined {
    if (header === undefined) return undefined;
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (bearer) return bearer[1];
    const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      return colon >= 0 ? decoded.slice(colon + 1) : undefined;
    }
    return undefined;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
