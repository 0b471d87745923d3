import type { IncomingMessage } from 'node:http';
import { AuthTokens, roleAllows, type Role } from './auth-tokens.js';
import { isLoopback, protectedModeMessage } from './protected-mode.js';

export interface HttpAuthOptions {
  /** Accepted tokens; absent = protected mode (loopback peers only, unless `insecure`). */
  tokens?: AuthTokens;
  /** Without tokens, accept any peer. */
  insecure: boolean;
  /** Names the server in messages ("this /metrics endpoint"). */
  what: string;
}

/** Why a request was refused: HTTP status, a message for the caller, headers to send. */
export interface HttpRefusal {
  status: 401 | 403;
  message: string;
  headers: Record<string, string>;
}

/**
 * Checks an HTTP request's `authorization` header (Bearer TOKEN, or Basic with the token as
 * password so a browser can log in) for `role`; without tokens, that the peer is on loopback.
 */
export function checkHttpRequest(req: IncomingMessage, role: Role, options: HttpAuthOptions): HttpRefusal | undefined {
  const challenge = { 'www-authenticate': 'Basic realm="shardpipe", charset="UTF-8"' };
  if (options.tokens === undefined) {
    const peer = req.socket.remoteAddress ?? 'unknown';
    if (options.insecure || isLoopback(peer)) return undefined;
    return { status: 403, message: protectedModeMessage(options.what, peer), headers: {} };
  }
  const result = options.tokens.check(AuthTokens.tokenOfHeader(req.headers.authorization));
  if (!result.ok) {
    const message =
      result.reason === 'missing'
        ? `${options.what} needs a token of role ${role} or higher: send "authorization: Bearer TOKEN" (browsers: any user name, the token as password)`
        : `${options.what}: the token is not one of the server's --auth-token-file`;
    return { status: 401, message, headers: challenge };
  }
  if (!roleAllows(result.role, role)) return { status: 403, message: `${options.what} needs role ${role}; the token has role ${result.role}`, headers: {} };
  return undefined;
}
