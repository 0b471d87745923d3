import { makeGenericClientConstructor, type ServiceError } from '@grpc/grpc-js';
import { createRequire } from 'node:module';
import type { TlsMaterial } from '../common/index.js';
import { channelCredentials } from './node-connection.js';

// grpc-health-check is loaded on the first check, not by every process that imports the store.
let HealthClient: ReturnType<typeof makeGenericClientConstructor> | undefined;
const healthClientType = (): ReturnType<typeof makeGenericClientConstructor> =>
  (HealthClient ??= makeGenericClientConstructor((createRequire(import.meta.url)('grpc-health-check') as typeof import('grpc-health-check')).service, 'grpc.health.v1.Health'));
const HEALTH_MAX_RECEIVE_BYTES = 64 * 1024;

type HealthCheck = (
  request: { service: string },
  options: { deadline: number },
  callback: (err: ServiceError | null, response: { status?: string } | undefined) => void,
) => void;

/**
 * Asks a node's grpc.health.v1 service for its status ('SERVING', 'NOT_SERVING', ...), or
 * 'UNREACHABLE' when it does not answer within `timeoutMs`. A node serving TLS needs `tls` (its CA,
 * and a client certificate under mutual TLS); health needs no token.
 */
export async function checkHealth(address: string, timeoutMs = 1000, service = '', tls?: TlsMaterial): Promise<string> {
  // A health answer is a few bytes; a peer sending more is not a store node.
  const client = new (healthClientType())(address, channelCredentials(tls), { 'grpc.max_receive_message_length': HEALTH_MAX_RECEIVE_BYTES });
  try {
    return await new Promise<string>((resolve) => {
      const check = (client as unknown as { check: HealthCheck }).check.bind(client);
      check({ service }, { deadline: Date.now() + timeoutMs }, (err, res) => {
        resolve(err ? 'UNREACHABLE' : (res?.status ?? 'UNKNOWN'));
      });
    });
  } finally {
    client.close();
  }
}
