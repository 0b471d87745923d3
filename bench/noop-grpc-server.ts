/**
 * A grpc-js server whose one unary method answers every call at once with an empty message,
 * bytes in and bytes out (no protobuf): the transport ceiling the bench suite measures point
 * operations against. Run as a child: `node dist/bench/noop-grpc-server.js PORT`; prints
 * `{"event":"ready"}` once it listens on 127.0.0.1:PORT and stops on SIGTERM.
 */
import { Server, ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { NOOP_SERVICE } from './noop-service.js';

const EMPTY = Buffer.alloc(0);

if (process.argv[2] === '--help' || process.argv[2] === '-h') {
  process.stdout.write('usage: node dist/bench/noop-grpc-server.js PORT — a no-op grpc-js server on 127.0.0.1:PORT (started by the benches)\n');
  process.exit(0);
}
const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`port must be 1–65535, got ${process.argv[2]}`);
const server = new Server();
const handlers: UntypedServiceImplementation = { Call: (_call: unknown, callback: (err: null, value: Buffer) => void) => callback(null, EMPTY) };
server.addService(NOOP_SERVICE, handlers);
await new Promise<void>((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
process.stdout.write('{"event":"ready"}\n');
process.once('SIGTERM', () => server.tryShutdown(() => undefined));
