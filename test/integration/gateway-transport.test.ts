import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { create } from '@bufbuild/protobuf';
import { credentials, makeGenericClientConstructor, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpcServiceDefinition, GATEWAY_SERVICE_DESC } from '../../gateway/index.js';
import { GetRequestSchema, PutRequestSchema, type GetResponse } from '../../gateway/proto/gen/shardpipe/gateway/v1/gateway_pb.js';
import { StoreCluster } from '../helpers/store-cluster.js';
import { GatewayProcess } from '../helpers/gateway-process.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';
import { makeTestCerts } from '../helpers/test-certs.js';

const run = promisify(execFile);
const b64 = (s: string): string => Buffer.from(s).toString('base64');
type Call = (...a: unknown[]) => unknown;
type GatewayClient = Client & { Get: Call; Put: Call };
const GatewayGrpcClient = makeGenericClientConstructor(grpcServiceDefinition(GATEWAY_SERVICE_DESC), 'Gateway');

function unary<T>(fn: (cb: (err: ServiceError | null, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value as T))));
}

/** A Connect JSON unary call with curl; `-w` appends the HTTP version curl used. */
async function curl(url: string, body: unknown, flags: string[]): Promise<{ status: number; version: string; body: Record<string, unknown> }> {
  const { stdout } = await run('curl', ['-s', '-m', '30', ...flags, '-H', 'Content-Type: application/json', '-d', JSON.stringify(body), '-w', '\n%{http_code} %{http_version}', url]);
  const lines = stdout.split('\n');
  const [code, version] = lines.pop()!.split(' ');
  return { status: Number(code), version: version!, body: JSON.parse(lines.join('\n')) as Record<string, unknown> };
}

let tmp: TempDir;
let cluster: StoreCluster;

beforeAll(async () => {
  tmp = await makeTempDir('shardpipe-gateway-transport-');
  cluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
}, 120_000);

afterAll(async () => {
  await cluster?.close();
  await tmp?.remove();
});

describe('gateway: Connect JSON over HTTP/2 on the gRPC port', () => {
  it('serves JSON over h2c (prior knowledge) and HTTP/1.1, and gRPC, on one cleartext port', async () => {
    const gateway = await GatewayProcess.start(cluster.seeds);
    const grpc = new GatewayGrpcClient(gateway.address, credentials.createInsecure()) as unknown as GatewayClient;
    try {
      const url = `http://${gateway.address}/shardpipe.gateway.v1.Gateway`;
      const put = await curl(`${url}/Put`, { key: b64('h2:a'), value: b64('over h2c') }, ['--http2-prior-knowledge']);
      expect(put).toMatchObject({ status: 200, version: '2' });
      expect(put.body).toHaveProperty('etag');
      const get = await curl(`${url}/Get`, { key: b64('h2:a') }, ['--http2-prior-knowledge']);
      expect(get).toMatchObject({ status: 200, version: '2' });
      expect(Buffer.from(get.body.value as string, 'base64').toString()).toBe('over h2c');
      // An error is Connect's JSON error over HTTP/2 too.
      const missing = await curl(`${url}/Get`, { key: b64('h2:none') }, ['--http2-prior-knowledge']);
      expect(missing).toMatchObject({ status: 404, version: '2', body: { code: 'not_found' } });
      const h1 = await curl(`${url}/Get`, { key: b64('h2:a') }, ['--http1.1']);
      expect(h1).toMatchObject({ status: 200, version: '1.1' });
      const viaGrpc = await unary<GetResponse>((cb) => grpc.Get(create(GetRequestSchema, { key: Buffer.from('h2:a') }), cb));
      expect(Buffer.from(viaGrpc.value).toString()).toBe('over h2c');
    } finally {
      grpc.close();
      await gateway.stop();
    }
  }, 60_000);

  it('serves JSON over TLS with ALPN h2 (curl --http2) next to gRPC on the same TLS port', async () => {
    await mkdir(tmp.sub('certs'), { recursive: true });
    const certs = await makeTestCerts(tmp.sub('certs'));
    const tlsEnv = { SHARDPIPE_TLS_CERT: certs.serverCert, SHARDPIPE_TLS_KEY: certs.serverKey, SHARDPIPE_TLS_CA: certs.ca };
    const saved = { ...process.env };
    Object.assign(process.env, tlsEnv);
    let tlsCluster: StoreCluster | undefined;
    let gateway: GatewayProcess | undefined;
    let grpc: GatewayClient | undefined;
    try {
      tlsCluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
      process.env = saved;
      gateway = await GatewayProcess.start(tlsCluster.seeds, [], tlsEnv);
      const url = `https://${gateway.address}/shardpipe.gateway.v1.Gateway`;
      const tlsFlags = ['--http2', '--cacert', certs.ca, '--cert', certs.clientCert, '--key', certs.clientKey];
      const put = await curl(`${url}/Put`, { key: b64('tls-h2:a'), value: b64('over h2') }, tlsFlags);
      expect(put).toMatchObject({ status: 200, version: '2' });
      const get = await curl(`${url}/Get`, { key: b64('tls-h2:a') }, tlsFlags);
      expect(get).toMatchObject({ status: 200, version: '2' });
      expect(Buffer.from(get.body.value as string, 'base64').toString()).toBe('over h2');
      grpc = new GatewayGrpcClient(gateway.address, credentials.createSsl(certs.pem.ca, certs.pem.clientKey, certs.pem.clientCert)) as unknown as GatewayClient;
      const viaGrpc = await unary<GetResponse>((cb) => grpc!.Get(create(GetRequestSchema, { key: Buffer.from('tls-h2:a') }), cb));
      expect(Buffer.from(viaGrpc.value).toString()).toBe('over h2');
    } finally {
      process.env = saved;
      grpc?.close();
      await gateway?.stop();
      await tlsCluster?.close();
    }
  }, 120_000);
});
