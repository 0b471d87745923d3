import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { credentials, loadPackageDefinition, type Client } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Key, PartitionMap, StoreClient, checkHealth, type PartitionMapJson } from '../../store/index.js';
import { GatewayProcess } from '../helpers/gateway-process.js';
import { CLI, StoreCluster } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';
import { makeTestCerts } from '../helpers/test-certs.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const PYTHON = '/usr/bin/python3';
const DRIVER = resolve(ROOT, 'test/fixtures/gateway/gateway_driver.py');
const EXAMPLE = resolve(ROOT, 'examples/python/gateway_client.py');
const TOKENS = { read: 'r'.repeat(20) + '-gateway-read', write: 'w'.repeat(20) + '-gateway-write' };
const BULK_ROWS = 100_000;

const keyOf = (i: number): Buffer => Buffer.from(`row-${String(i).padStart(6, '0')}`);
const valueOf = (i: number): Buffer => Buffer.from(createHash('sha256').update(`value-${i}`).digest('hex'));

let tmp: TempDir;
let stubs: string;
let cluster: StoreCluster;
let gateway: GatewayProcess;
let client: StoreClient;

/** Runs the Python driver (Debian's python3 with python3-grpcio) against the gateway; its JSON answer. */
async function python(step: string, ...args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run('nice', ['-n', '10', PYTHON, DRIVER, gateway.address, step, ...args], { env: { ...process.env, PYTHONPATH: stubs }, maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** A Connect unary call with curl (HTTP/1.1): status, headers text and parsed body. */
async function curl(address: string, method: string, body: unknown, token?: string): Promise<{ status: number; headers: string; body: Record<string, unknown> }> {
  const args = ['-s', '-m', '30', '--http1.1', '-D', '-', '-H', 'Content-Type: application/json', ...(token ? ['-H', `Authorization: Bearer ${token}`] : []), '-d', JSON.stringify(body), `http://${address}/shardpipe.gateway.v1.Gateway/${method}`];
  const { stdout } = await run('curl', args, { maxBuffer: 64 * 1024 * 1024 });
  const split = stdout.indexOf('\r\n\r\n');
  const headers = stdout.slice(0, split);
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(headers)![1]), headers, body: JSON.parse(stdout.slice(split + 4)) as Record<string, unknown> };
}

const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');

beforeAll(async () => {
  tmp = await makeTempDir('shardpipe-gateway-');
  stubs = tmp.sub('stubs');
  await run('mkdir', ['-p', stubs]);
  // The Python stubs come from the gateway's .proto, as a user outside this repo would make them.
  await run('protoc', ['-I', resolve(ROOT, 'gateway/proto'), `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, '--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin', 'shardpipe/gateway/v1/gateway.proto']);
  cluster = await StoreCluster.start({ nodes: 2, partitions: 4 });
  gateway = await GatewayProcess.start(cluster.seeds);
  client = new StoreClient({ seeds: cluster.seeds });
}, 120_000);

afterAll(async () => {
  client?.close();
  await gateway?.stop();
  await cluster?.close();
  await tmp?.remove();
});

describe('gateway driven from Python (gRPC) and curl (Connect JSON)', () => {
  it('Python: put, get, CAS conflict with the current etag, NOT_FOUND, a named bad key, delete', async () => {
    const out = await python('unary');
    expect(out.get).toEqual({ value: 'one', etag: out.put_etag });
    expect(out.cas).toEqual({ status: 'ABORTED', current_etag: String(out.put_etag), code: 'GATEWAY_ETAG_MISMATCH' });
    expect(out.cas_ok_etag).toBeGreaterThan(out.put_etag as number);
    expect(out.missing).toBe('NOT_FOUND');
    expect(out.empty_key).toEqual({ status: 'INVALID_ARGUMENT', details: expect.stringContaining('GetRequest.key: key is empty') });
    expect(out.deleted).toBe(true);
    expect(await client.get(Key.fromUtf8('py:a'))).toBeUndefined();
  }, 60_000);

  it(`Python: BulkPut of ${BULK_ROWS} unsorted rows; every row reads back through the TypeScript client; Scan of 10,000 keys and ScanAll agree`, async () => {
    const bulk = await python('bulk', String(BULK_ROWS));
    expect(bulk.rows).toBe(BULK_ROWS);
    let i = 0;
    for await (const batch of client.scanAll(Buffer.from('row-'), Buffer.from('row.'))) {
      for (const e of batch) {
        expect(e.key.equals(keyOf(i)), `key #${i}`).toBe(true);
        expect(e.value.equals(valueOf(i)), `value of ${e.key.toString()}`).toBe(true);
        i++;
      }
    }
    expect(i).toBe(BULK_ROWS);

    const scan = await python('scan', '20000', '10000');
    expect(scan).toEqual({ keys: 10_000, bad: [] });

    const digest = createHash('sha256');
    let entries = 0;
    for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) {
      for (const e of batch) {
        digest.update(Buffer.concat([e.key, Buffer.from([0]), e.value, Buffer.from('\n')]));
        entries++;
      }
    }
    expect(await python('scan-all-digest')).toEqual({ entries, sha256: digest.digest('hex') });
  }, 180_000);

  it('Python: BulkPut of 20,000 unsorted rows in the packed form (every third message per-row); every row reads back through the TypeScript client; a bad packed message is INVALID_ARGUMENT naming the field', async () => {
    const out = await python('bulk-packed', '0', '20000');
    expect(out.rows).toBe(20_000);
    let i = 0;
    for await (const batch of client.scanAll(Buffer.from('pk-'), Buffer.from('pk.'))) {
      for (const e of batch) {
        expect(e.key.toString(), `key #${i}`).toBe(`pk-${String(i).padStart(6, '0')}`);
        expect(e.value.equals(valueOf(i)), `value of ${e.key.toString()}`).toBe(true);
        i++;
      }
    }
    expect(i).toBe(20_000);
    expect(out.unknown_format).toEqual({ status: 'INVALID_ARGUMENT', details: expect.stringContaining('BulkPutRequest.packed.format is 2, a packed row format this gateway does not know') });
    expect(out.short_data).toEqual({ status: 'INVALID_ARGUMENT', details: expect.stringContaining('BulkPutRequest.packed.data is 145 bytes, but the lengths of its 2 rows add up to 146') });
  }, 120_000);

  it('Python: a BulkPut row with an empty key is INVALID_ARGUMENT naming its position in the stream', async () => {
    const out = await python('bulk-bad-key');
    expect(out).toEqual({ status: 'INVALID_ARGUMENT', details: expect.stringContaining('BulkPutRequest row 2500 (counting from 0 over the stream): key is empty') });
  }, 60_000);

  it('curl: Put, Get, CAS conflict (409 with the current etag), partial pages of a 10,000-key range', async () => {
    const put = await curl(gateway.address, 'Put', { key: b64('curl:a'), value: b64('hello') });
    expect(put.status).toBe(200);
    const etag = put.body.etag as string;
    const got = await curl(gateway.address, 'Get', { key: b64('curl:a') });
    expect(got.body).toMatchObject({ value: b64('hello'), etag });
    const stored = await client.get(Key.fromUtf8('curl:a'));
    expect(stored?.value.toString()).toBe('hello');
    expect(String(stored?.etag)).toBe(etag);

    const conflict = await curl(gateway.address, 'Put', { key: b64('curl:a'), value: b64('x'), expectedEtag: String(Number(etag) + 5) });
    expect(conflict.status).toBe(409);
    expect(conflict.body.code).toBe('aborted');
    expect(conflict.headers).toMatch(new RegExp(`shardpipe-current-etag: ${etag}\\r?$`, 'm'));

    const missing = await curl(gateway.address, 'Get', { key: b64('curl:none') });
    expect(missing.status).toBe(404);

    // Page through row-030000 … row-039999 (written by the BulkPut test) and check every value.
    let start = b64(keyOf(30_000));
    let seen = 0;
    for (let page = 0; page < 20 && start !== ''; page++) {
      const r = await curl(gateway.address, 'ScanPage', { start, end: b64(keyOf(40_000)), limit: 1000 });
      expect(r.status).toBe(200);
      for (const e of (r.body.entries as Array<{ key: string; value: string }> | undefined) ?? []) {
        expect(Buffer.from(e.key, 'base64').equals(keyOf(30_000 + seen))).toBe(true);
        expect(Buffer.from(e.value, 'base64').equals(valueOf(30_000 + seen))).toBe(true);
        seen++;
      }
      start = (r.body.nextStart as string | undefined) ?? '';
    }
    expect(seen).toBe(10_000);
    expect(start).toBe('');

    const bad = await curl(gateway.address, 'ScanPage', { limit: 5000 });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toContain('ScanPageRequest.limit is 5000, out of range: allowed 1–1000');
  }, 120_000);

  it('Python: Patch (merge, JSON Patch with if_etag and ttl), ABORTED with the current etag, FAILED_PRECONDITION for a failed test, INVALID_ARGUMENT for a non-JSON value; partial Get — each checked against the TypeScript client', async () => {
    const out = await python('documents');
    const doc = await client.get(Key.fromUtf8('py:doc'));
    const stored = JSON.parse(doc!.value.toString()) as unknown;
    expect(out.merge).toEqual({ etag: expect.any(Number), document: { name: 'Ada', address: { city: 'London' }, tags: ['a', 'b'], age: 36 }, after_put: true });
    const jp = out.json_patch as { etag: number; expires_at_ms: number; document: string };
    expect(stored).toEqual({ name: 'Ada L.', address: { city: 'London' }, tags: ['a', 'b', 'c'], age: 36 });
    expect(jp.etag).toBe(doc!.etag);
    expect(jp.expires_at_ms).toBe(doc!.expiresAtMs);
    expect(jp.expires_at_ms).toBeGreaterThan(Date.now() + 3_000_000);
    expect(jp.document).toBe('');
    expect(out.stale).toMatchObject({ status: 'ABORTED', code: 'GATEWAY_ETAG_MISMATCH', current_etag: String(doc!.etag) });
    expect(out.test_failed).toMatchObject({ status: 'FAILED_PRECONDITION', code: 'GATEWAY_PATCH_TEST_FAILED', details: expect.stringContaining('operation 0 (test "/age")') });
    expect(out.not_json).toMatchObject({ status: 'INVALID_ARGUMENT', code: 'GATEWAY_INVALID_ARGUMENT', details: expect.stringContaining('key "py:plain" is not a JSON document') });
    expect(out.missing).toMatchObject({ status: 'NOT_FOUND' });
    expect(out.partial).toEqual({ value: { name: 'Ada L.', tags: ['c'], address: { city: 'London' } }, etag: doc!.etag });
    const tsPartial = await client.get(Key.fromUtf8('py:doc'), { fields: ['/name', '/tags/2', '/address/city', '/missing'] });
    expect(JSON.parse(tsPartial!.value.toString())).toEqual((out.partial as { value: unknown }).value);
    expect(out.partial_not_json).toMatchObject({ status: 'INVALID_ARGUMENT', details: expect.stringContaining('py:plain') });
    expect(out.bad_pointer).toMatchObject({ status: 'INVALID_ARGUMENT', details: expect.stringContaining('GetRequest.fields[0] "name" is not a JSON Pointer') });
    expect((await client.get(Key.fromUtf8('py:plain')))!.value.toString()).toBe('plain text');
  }, 60_000);

  it('curl: Patch (merge and JSON Patch by enum name, returnDocument), 409 with the current etag, 400 failed_precondition; partial Get — checked against the TypeScript client', async () => {
    const key = b64('curl:doc');
    await curl(gateway.address, 'Put', { key, value: b64(JSON.stringify({ a: 1, b: { c: 2, d: 3 }, list: [10, 20, 30] })) });
    const merged = await curl(gateway.address, 'Patch', { key, patch: JSON.stringify({ a: null, b: { d: 4 }, e: 'new' }), returnDocument: true });
    expect(merged.status).toBe(200);
    const afterMerge = await client.get(Key.fromUtf8('curl:doc'));
    expect(merged.body.etag).toBe(String(afterMerge!.etag));
    expect(JSON.parse(merged.body.document as string)).toEqual(JSON.parse(afterMerge!.value.toString()));
    expect(JSON.parse(afterMerge!.value.toString())).toEqual({ b: { c: 2, d: 4 }, list: [10, 20, 30], e: 'new' });

    const jp = await curl(gateway.address, 'Patch', { key, patch: JSON.stringify([{ op: 'remove', path: '/list/0' }, { op: 'copy', from: '/e', path: '/f' }]), mode: 'PATCH_MODE_JSON_PATCH', ifEtag: merged.body.etag });
    expect(jp.status).toBe(200);
    const afterJp = await client.get(Key.fromUtf8('curl:doc'));
    expect(jp.body.etag).toBe(String(afterJp!.etag));
    expect(JSON.parse(afterJp!.value.toString())).toEqual({ b: { c: 2, d: 4 }, list: [20, 30], e: 'new', f: 'new' });

    const stale = await curl(gateway.address, 'Patch', { key, patch: '{"x":1}', ifEtag: merged.body.etag });
    expect(stale.status).toBe(409);
    expect(stale.headers).toContain(`shardpipe-current-etag: ${afterJp!.etag}`);
    const test = await curl(gateway.address, 'Patch', { key, patch: JSON.stringify([{ op: 'test', path: '/e', value: 'old' }]), mode: 'PATCH_MODE_JSON_PATCH' });
    expect(test.status).toBe(400);
    expect(test.body.code).toBe('failed_precondition');
    expect(test.headers).toContain('shardpipe-error-code: GATEWAY_PATCH_TEST_FAILED');
    const missingPath = await curl(gateway.address, 'Patch', { key, patch: JSON.stringify([{ op: 'replace', path: '/zz/y', value: 1 }]), mode: 'PATCH_MODE_JSON_PATCH' });
    expect(missingPath.status).toBe(400);
    expect(missingPath.body.message).toContain('"/zz/y" is not in the document');
    expect((await client.get(Key.fromUtf8('curl:doc')))!.etag).toBe(afterJp!.etag);

    const partial = await curl(gateway.address, 'Get', { key, fields: ['/b/d', '/list/1', '/nope'] });
    expect(partial.status).toBe(200);
    const value = JSON.parse(Buffer.from(partial.body.value as string, 'base64').toString()) as unknown;
    expect(value).toEqual({ b: { d: 4 }, list: [30] });
    expect(value).toEqual(JSON.parse((await client.get(Key.fromUtf8('curl:doc'), { fields: ['/b/d', '/list/1', '/nope'] }))!.value.toString()));
    expect(partial.body.etag).toBe(String(afterJp!.etag));
  }, 60_000);

  it('answers grpc.health.v1 and server reflection (list and file of the Gateway service)', async () => {
    expect(await checkHealth(gateway.address, 5000, '')).toBe('SERVING');
    expect(await checkHealth(gateway.address, 5000, 'shardpipe.gateway.v1.Gateway')).toBe('SERVING');

    const def = loadSync(resolve(ROOT, 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto'), { keepCase: true });
    const pkg = loadPackageDefinition(def) as unknown as { grpc: { reflection: { v1: { ServerReflection: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => Client } } } };
    const reflection = new pkg.grpc.reflection.v1.ServerReflection(gateway.address, credentials.createInsecure()) as Client & { ServerReflectionInfo(): NodeJS.ReadWriteStream & { write(m: unknown): boolean; end(): void } };
    try {
      const call = reflection.ServerReflectionInfo();
      const answers: Array<Record<string, any>> = [];
      call.on('data', (m: Record<string, unknown>) => answers.push(m));
      call.write({ list_services: '' });
      call.write({ file_containing_symbol: 'shardpipe.gateway.v1.Gateway' });
      call.end();
      await once(call, 'end');
      const services = (answers[0]!.list_services_response.service as Array<{ name: string }>).map((s) => s.name);
      expect(services).toContain('shardpipe.gateway.v1.Gateway');
      const files = answers[1]!.file_descriptor_response.file_descriptor_proto as Buffer[];
      expect(Buffer.concat(files).toString('latin1')).toContain('shardpipe/gateway/v1/gateway.proto');
    } finally {
      reflection.close();
    }
  }, 60_000);

  it('hides a partition map change from a caller in the middle of a stream of Gets', async () => {
    const child = spawn('nice', ['-n', '10', PYTHON, DRIVER, gateway.address, 'get-loop', '2000'], { env: { ...process.env, PYTHONPATH: stubs }, stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout! });
    const output: string[] = [];
    const started = new Promise<void>((ok) => lines.on('line', (line) => (output.push(line), line.includes('"started"') && ok())));
    await started;
    // Version 2 moves the empty partition 3 to the other node: every node refuses the gateway's version 1 from now on.
    const json = cluster.map.toJson() as PartitionMapJson;
    const moved = PartitionMap.fromJson({ ...json, version: 2, partitions: json.partitions.map((p) => (p.id === 3 ? { ...p, node: cluster.seeds.find((s) => s !== p.node)! } : p)) });
    const installed = await client.installMap(moved);
    expect(installed.map((r) => r.installed)).toEqual([true, true]);
    child.stdin!.end('\n');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
    expect(JSON.parse(output[output.length - 1]!)).toEqual({ gets: 2000, errors: [] });
  }, 120_000);

  it('the shipped Python example runs against the gateway', async () => {
    const { stdout } = await run(PYTHON, [EXAMPLE, gateway.address], { env: { ...process.env, PYTHONPATH: stubs } });
    const steps = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(steps[0]).toMatchObject({ step: 'put-get', value: 'hello' });
    expect(steps[1]).toMatchObject({ step: 'cas', status: 'ABORTED' });
    const profile = await client.get(Key.fromUtf8('example:profile'));
    expect(steps[2]).toEqual({
      step: 'documents',
      etag: profile!.etag,
      document: { name: 'Ada', address: { city: 'London' }, langs: ['en', 'fr'], born: 1815 },
      partial: { address: { city: 'London' }, langs: ['fr'] },
    });
    expect(JSON.parse(profile!.value.toString())).toEqual((steps[2] as { document: unknown }).document);
    expect(steps[3]).toEqual({ step: 'bulk', written: 300, scanned: 300 });
  }, 60_000);
});

describe('gateway with --auth-token-file', () => {
  let secured: GatewayProcess;
  beforeAll(async () => {
    const file = tmp.sub('gateway-tokens');
    await writeFile(file, `read ${TOKENS.read}\nwrite ${TOKENS.write}\n`, { mode: 0o600 });
    secured = await GatewayProcess.start(cluster.seeds, ['--auth-token-file', file]);
  }, 60_000);
  afterAll(async () => {
    await secured?.stop();
  });

  it('refuses calls without a token (curl 401, gRPC UNAUTHENTICATED) and a read token for Put (403); a write token works', async () => {
    const none = await curl(secured.address, 'Get', { key: b64('x') });
    expect(none.status).toBe(401);
    expect(none.body).toMatchObject({ code: 'unauthenticated', message: expect.stringContaining('needs a token') });
    const weak = await curl(secured.address, 'Put', { key: b64('auth:x'), value: b64('v') }, TOKENS.read);
    expect(weak.status).toBe(403);
    expect(weak.body.message).toContain('Put needs role write; the token has role read');
    const ok = await curl(secured.address, 'Put', { key: b64('auth:x'), value: b64('v') }, TOKENS.write);
    expect(ok.status).toBe(200);

    const { stdout } = await run(PYTHON, [DRIVER, secured.address, 'no-token'], { env: { ...process.env, PYTHONPATH: stubs } });
    expect(JSON.parse(stdout)).toMatchObject({ status: 'UNAUTHENTICATED', details: expect.stringContaining('needs a token') });
    // Health stays open for probes.
    expect(await checkHealth(secured.address, 5000, '')).toBe('SERVING');
  }, 60_000);
});

describe('gateway over TLS (mutual), in front of TLS store nodes', () => {
  it('serves gRPC (Python) and Connect JSON (curl over HTTP/1.1) on one TLS port, and refuses a caller without a client certificate', async () => {
    await run('mkdir', ['-p', tmp.sub('certs')]);
    const certs = await makeTestCerts(tmp.sub('certs'));
    const tlsEnv = { SHARDPIPE_TLS_CERT: certs.serverCert, SHARDPIPE_TLS_KEY: certs.serverKey, SHARDPIPE_TLS_CA: certs.ca };
    // The node children take their TLS from the environment they inherit.
    const saved = { ...process.env };
    Object.assign(process.env, tlsEnv);
    let tlsCluster: StoreCluster | undefined;
    let tlsGateway: GatewayProcess | undefined;
    try {
      tlsCluster = await StoreCluster.start({ nodes: 1, partitions: 2 });
      process.env = saved;
      tlsGateway = await GatewayProcess.start(tlsCluster.seeds, [], tlsEnv);
      const url = `https://${tlsGateway.address}/shardpipe.gateway.v1.Gateway`;
      const tlsCurl = ['-s', '-m', '30', '--http1.1', '--cacert', certs.ca, '-H', 'Content-Type: application/json'];
      const put = await run('curl', [...tlsCurl, '--cert', certs.clientCert, '--key', certs.clientKey, '-d', JSON.stringify({ key: b64('tls:a'), value: b64('secret') }), `${url}/Put`]);
      expect(JSON.parse(put.stdout)).toHaveProperty('etag');
      const script = [
        'import sys, grpc',
        'from shardpipe.gateway.v1 import gateway_pb2 as pb, gateway_pb2_grpc as rpc',
        'ca, cert, key, addr = [open(p, "rb").read() if i < 3 else p for i, p in enumerate(sys.argv[1:5])]',
        'creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)',
        'print(rpc.GatewayStub(grpc.secure_channel(addr, creds)).Get(pb.GetRequest(key=b"tls:a")).value.decode())',
      ].join('\n');
      const got = await run(PYTHON, ['-c', script, certs.ca, certs.clientCert, certs.clientKey, tlsGateway.address], { env: { ...process.env, PYTHONPATH: stubs } });
      expect(got.stdout.trim()).toBe('secret');
      await expect(run('curl', [...tlsCurl, '-d', JSON.stringify({ key: b64('tls:a') }), `${url}/Get`])).rejects.toThrow();
    } finally {
      process.env = saved;
      await tlsGateway?.stop();
      await tlsCluster?.close();
    }
  }, 120_000);
});
