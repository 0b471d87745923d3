import { Client, Metadata, credentials, type ServiceError } from '@grpc/grpc-js';
import { create, toBinary, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { STORE_SERVICE_DESC } from '../../store/index.js';
import { METADATA_ERROR_CODE } from '../../store/grpc-errors.js';

/** The outcome of one raw call: the response bytes (each streamed message), or the gRPC error with our code. */
export type RawOutcome = { ok: true; bytes: Buffer; messages: Buffer[]; ms: number } | { ok: false; error: ServiceError; code: string | undefined; ms: number };

/**
 * A raw grpc-js client of the Store service that sends requests built by reflection from the
 * proto descriptor, so 64-bit fields can carry any uint64 (bigint) — values the generated
 * (number-typed) client cannot even encode.
 */
export class RawStoreClient {
  private readonly client: Client;

  constructor(readonly address: string) {
    this.client = new Client(address, credentials.createInsecure(), { 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 });
  }

  /** The request descriptor of a method by its proto name. */
  input(method: string): DescMessage {
    const m = STORE_SERVICE_DESC.methods.find((x) => x.name === method);
    if (m === undefined) throw new TypeError(`no method ${method}`);
    return m.input;
  }

  /** Encodes `init` as the method's request message and sends it. */
  call(method: string, init: MessageInitShape<DescMessage>, deadlineMs = 5000): Promise<RawOutcome> {
    const desc = this.input(method);
    return this.callBytes(method, Buffer.from(toBinary(desc, create(desc, init))), deadlineMs);
  }

  /** Sends `bytes` as the request of `method` (server-streaming methods: collects every message). */
  callBytes(method: string, bytes: Buffer, deadlineMs = 5000): Promise<RawOutcome> {
    const path = `/shardpipe.store.v1.Store/${method}`;
    const streaming = STORE_SERVICE_DESC.methods.find((m) => m.name === method)?.methodKind === 'server_streaming';
    const started = performance.now();
    const id = (b: Buffer): Buffer => b;
    const deadline = Date.now() + deadlineMs;
    return new Promise((resolve) => {
      const fail = (error: ServiceError): void => {
        const code = error.metadata?.get(METADATA_ERROR_CODE)[0];
        resolve({ ok: false, error, code: typeof code === 'string' ? code : undefined, ms: performance.now() - started });
      };
      if (streaming) {
        const chunks: Buffer[] = [];
        const stream = this.client.makeServerStreamRequest(path, id, id, bytes, new Metadata(), { deadline });
        stream.on('data', (b: Buffer) => chunks.push(b));
        stream.on('error', fail);
        stream.on('end', () => resolve({ ok: true, bytes: Buffer.concat(chunks), messages: chunks, ms: performance.now() - started }));
      } else {
        this.client.makeUnaryRequest(path, id, id, bytes, new Metadata(), { deadline }, (err, response) => {
          if (err) fail(err);
          else resolve({ ok: true, bytes: response!, messages: [response!], ms: performance.now() - started });
        });
      }
    });
  }

  close(): void {
    this.client.close();
  }
}
