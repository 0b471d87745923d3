import { ServerInterceptingCall, type Metadata, type ServerInterceptor } from '@grpc/grpc-js';
import { AuthTokens, isLoopback, protectedModeMessage, roleAllows, type Logger, type Role } from '../common/index.js';
import { METADATA_CALLER_MAP_VERSION, METADATA_MAP_FROM, toGrpcStatus } from './grpc-errors.js';
import type { PeerMapFetcher } from './peer-map-fetcher.js';
import { StoreError } from './store-errors.js';

/** The role each Store RPC needs. A method missing here needs admin (fail closed). */
export const METHOD_ROLES: Readonly<Record<string, Role>> = {
  Get: 'read',
  Scan: 'read',
  ScanPage: 'read',
  PartitionStats: 'read',
  Checksum: 'read',
  SplitKeys: 'read',
  GetPartitionMap: 'read',
  // Backups are reads; their snapshots are leases that run out by themselves.
  OpenSnapshot: 'read',
  RenewSnapshot: 'read',
  ReleaseSnapshot: 'read',
  Put: 'write',
  Patch: 'write',
  Delete: 'write',
  BulkInsert: 'write',
  SetPartitionMap: 'admin',
  // Point ops in one call: reading is enough to be let in; each put or delete in it needs write,
  // checked per op by the service against the role this gate grants (METADATA_GRANTED_ROLE).
  Multi: 'read',
  // Multi's requests on one stream: checked per op as in Multi.
  MultiStream: 'read',
  // Node to node only: no client token holds this role (common/auth-tokens.ts).
  Forward: 'replica',
  // Data movement changes the cluster's layout: admin only, listing included (records name nodes and keys).
  SubmitOperation: 'admin',
  ListOperations: 'admin',
  GetOperation: 'admin',
  CancelOperation: 'admin',
  // A fast sync's read of a snapshot's change log: node to node, like Forward.
  ChangedKeys: 'replica',
};

/**
 * Request metadata this gate sets on every call it lets through: the role the caller was granted
 * (admin when the node runs without tokens). Whatever a caller sends under this name is replaced.
 */
export const METADATA_GRANTED_ROLE = 'x-shardpipe-granted-role';

const HEALTH_PREFIX = '/grpc.health.v1.Health/';

export interface StoreAuthOptions {
  /** Accepted tokens; absent = protected mode (loopback peers only, unless `insecure`). */
  tokens?: AuthTokens;
  /** Without tokens, accept any peer. */
  insecure: boolean;
  /** Catches a lagging node up when a caller names a peer with a newer map. */
  mapFetcher?: PeerMapFetcher;
  logger: Logger;
}

/**
 * The one gate in front of every Store RPC: checks the caller's token and role (or, with no
 * tokens, that it is on loopback), then lets a caller with a newer map have the node fetch it
 * before the call runs. grpc.health.v1 stays open so probes need no token. Refusals carry our
 * codes in trailing metadata like every other store error; tokens are never logged.
 */
export function storeAuthInterceptor(options: StoreAuthOptions): ServerInterceptor {
  const { tokens, insecure, mapFetcher, logger } = options;
  const refusals = new RefusalLog(logger);
  return (method, call) => {
    const path = method.path;
    const intercepting: ServerInterceptingCall = new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, proceed) => {
            if (path.startsWith(HEALTH_PREFIX)) return proceed(metadata);
            const name = path.slice(path.lastIndexOf('/') + 1);
            const peer = call.getConnectionInfo().remoteAddress ?? call.getPeer();
            const granted = check(name, metadata, peer);
            if (granted instanceof StoreError) {
              refusals.note(granted.code, name, peer);
              const status = toGrpcStatus(granted);
              intercepting.sendStatus({ code: granted.grpcStatus, details: granted.message, metadata: status.metadata });
              return;
            }
            metadata.set(METADATA_GRANTED_ROLE, granted);
            const from = first(metadata, METADATA_MAP_FROM);
            const version = Number(first(metadata, METADATA_CALLER_MAP_VERSION));
            if (mapFetcher === undefined || from === undefined || !Number.isSafeInteger(version)) return proceed(metadata);
            mapFetcher.catchUp(from, version).then(() => proceed(metadata));
          },
        }),
    });
    return intercepting;
  };

  /** The role granted to the call, or why it is refused. */
  function check(name: string, metadata: Metadata, peer: string): StoreError | Role {
    if (tokens === undefined) {
      if (insecure || isLoopback(peer)) return 'admin';
      return new StoreError('STORE_UNAUTHENTICATED', protectedModeMessage('this store node', peer));
    }
    const needed = METHOD_ROLES[name] ?? 'admin';
    const result = tokens.check(AuthTokens.tokenOfHeader(first(metadata, 'authorization')));
    if (!result.ok) {
      return new StoreError(
        'STORE_UNAUTHENTICATED',
        result.reason === 'missing'
          ? `${name} needs a token: set SHARDPIPE_TOKEN (or --token) to a token of role ${needed} or higher from the node's --auth-token-file`
          : `${name} refused: the token is not one of this node's --auth-token-file`,
      );
    }
    if (!roleAllows(result.role, needed)) {
      return new StoreError('STORE_PERMISSION_DENIED', `${name} needs role ${needed}; the token has role ${result.role}`);
    }
    return result.role;
  }
}

function first(metadata: Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === 'string' ? value : undefined;
}

/** Logs refused calls at most once per interval, with how many were refused meanwhile. */
class RefusalLog {
  private lastMs = 0;
  private suppressed = 0;
  private static readonly INTERVAL_MS = 5000;

  constructor(private readonly logger: Logger) {}

  note(code: string, method: string, peer: string): void {
    const now = Date.now();
    if (now - this.lastMs < RefusalLog.INTERVAL_MS) {
      this.suppressed++;
      return;
    }
    this.logger.warn({ code, method, peer, alsoRefused: this.suppressed }, 'refused a call');
    this.lastMs = now;
    this.suppressed = 0;
  }
}
