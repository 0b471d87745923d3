import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

/** One span as received, with its resource's service name and its attributes. */
export interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, string | number | boolean>;
  /** The spans this one links to (a batch serving several traces links their spans). */
  links: Array<{ traceId: string; spanId: string }>;
}

/**
 * An OTLP/HTTP trace receiver: takes `POST /v1/traces` with an ExportTraceServiceRequest in protobuf
 * (gzip or plain), decodes it with a small wire-format reader (the fields of
 * opentelemetry/proto/trace/v1/trace.proto that tests look at) and keeps the spans.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  /** Requests that were not protobuf trace exports (content type, path), to fail on. */
  readonly refused: string[] = [];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<OtlpReceiver> {
    const receiver: OtlpReceiver = new OtlpReceiver(
      createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          if (req.method !== 'POST' || req.url !== '/v1/traces' || req.headers['content-type'] !== 'application/x-protobuf') {
            receiver.refused.push(`${req.method} ${req.url} ${req.headers['content-type']}`);
            res.writeHead(415).end();
            return;
          }
          const body = Buffer.concat(chunks);
          receiver.spans.push(...decodeExportRequest(req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body));
          // An empty ExportTraceServiceResponse: everything accepted.
          res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
        });
      }),
    );
    receiver.server.listen(0, '127.0.0.1');
    await once(receiver.server, 'listening');
    return receiver;
  }

  /** The base URL for OTEL_EXPORTER_OTLP_ENDPOINT. */
  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server.close();
    this.server.closeAllConnections();
    await once(this.server, 'close');
  }
}

type Field = { no: number; wire: number; bytes?: Buffer; int?: bigint };

/** The fields of one protobuf message, in order (wire types 0, 1, 2, 5). */
function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let at = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[at++];
      if (b === undefined) throw new Error('truncated varint');
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
    }
  };
  while (at < buf.length) {
    const tag = Number(varint());
    const no = tag >>> 3;
    const wire = tag & 7;
    if (wire === 0) out.push({ no, wire, int: varint() });
    else if (wire === 1) {
      out.push({ no, wire, int: buf.readBigUInt64LE(at) });
      at += 8;
    } else if (wire === 2) {
      const len = Number(varint());
      out.push({ no, wire, bytes: buf.subarray(at, at + len) });
      at += len;
    } else if (wire === 5) {
      out.push({ no, wire, int: BigInt(buf.readUInt32LE(at)) });
      at += 4;
    } else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}

const sub = (fs: Field[], no: number): Buffer[] => fs.filter((f) => f.no === no && f.bytes !== undefined).map((f) => f.bytes!);

/** KeyValue { key = 1; AnyValue value = 2 { string 1, bool 2, int64 3, double 4 } }. */
function attributesOf(list: Buffer[]): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const kv of list) {
    const f = fields(kv);
    const key = sub(f, 1)[0]?.toString('utf8') ?? '';
    const value = sub(f, 2)[0];
    if (value === undefined) continue;
    const v = fields(value)[0];
    if (v === undefined) continue;
    if (v.no === 1) out[key] = v.bytes!.toString('utf8');
    else if (v.no === 2) out[key] = v.int !== 0n;
    else if (v.no === 3) out[key] = Number(BigInt.asIntN(64, v.int!));
    else if (v.no === 4) out[key] = Buffer.from(BigInt.asUintN(64, v.int!).toString(16).padStart(16, '0'), 'hex').readDoubleBE(0);
  }
  return out;
}

/** ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }. */
export function decodeExportRequest(body: Buffer): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const rs of sub(fields(body), 1)) {
    const rsf = fields(rs);
    const resource = sub(rsf, 1)[0];
    const service = String(resource === undefined ? '' : (attributesOf(sub(fields(resource), 1))['service.name'] ?? ''));
    for (const ss of sub(rsf, 2)) {
      for (const s of sub(fields(ss), 2)) {
        const f = fields(s);
        const hex = (no: number): string => sub(f, no)[0]?.toString('hex') ?? '';
        const int = (no: number): bigint => f.find((x) => x.no === no)?.int ?? 0n;
        spans.push({
          service,
          traceId: hex(1),
          spanId: hex(2),
          parentSpanId: hex(4),
          name: sub(f, 5)[0]?.toString('utf8') ?? '',
          kind: Number(int(6)),
          startNs: int(7),
          endNs: int(8),
          attributes: attributesOf(sub(f, 9)),
          // Link { trace_id = 1; span_id = 2; … } at Span field 13.
          links: sub(f, 13).map((l) => {
            const lf = fields(l);
            return { traceId: sub(lf, 1)[0]?.toString('hex') ?? '', spanId: sub(lf, 2)[0]?.toString('hex') ?? '' };
          }),
        });
      }
    }
  }
  return spans;
}
