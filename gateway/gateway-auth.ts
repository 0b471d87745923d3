import { AuthTokens, isLoopback, protectedModeMessage, roleAllows, type Role } from '../common/index.js';
import { GatewayError } from './gateway-errors.js';

/** The role each Gateway method needs. A method missing here needs admin (fail closed). */
export const GATEWAY_METHOD_ROLES: Readonly<Record<string, Role>> = {
  Get: 'read',
  Scan: 'read',
  ScanPage: 'read',
  ScanAll: 'read',
  Put: 'write',
  Patch: 'write',
  Delete: 'write',
  BulkPut: 'write',
};

/** Who may call what: tokens with roles, or (no tokens) loopback peers only unless `insecure`. */
export interface GatewayAuthOptions {
  tokens?: AuthTokens;
  insecure: boolean;
}

/**
 * Checks one call, whatever protocol carried it: `authorization` is the header or metadata value
 * (`Bearer TOKEN`), `peer` the remote address. Reflection needs role read like a read call.
 */
export function checkGatewayCall(method: string, authorization: string | undefined, peer: string | undefined, options: GatewayAuthOptions): GatewayError | undefined {
  if (options.tokens === undefined) {
    if (options.insecure || isLoopback(peer)) return undefined;
    return new GatewayError('GATEWAY_UNAUTHENTICATED', protectedModeMessage('this gateway', peer ?? 'unknown'));
  }
  const needed = GATEWAY_METHOD_ROLES[method] ?? (method === 'ServerReflectionInfo' ? 'read' : 'admin');
  const result = options.tokens.check(AuthTokens.tokenOfHeader(authorization));
  if (!result.ok) {
    return new GatewayError(
      'GATEWAY_UNAUTHENTICATED',
      result.reason === 'missing'
        ? `${method} needs a token: send "authorization: Bearer TOKEN" with a token of role ${needed} or higher from the gateway's --auth-token-file`
        : `${method} refused: the token is not one of this gateway's --auth-token-file`,
    );
  }
  if (!roleAllows(result.role, needed)) return new GatewayError('GATEWAY_PERMISSION_DENIED', `${method} needs role ${needed}; the token has role ${result.role}`);
  return undefined;
}
