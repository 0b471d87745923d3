import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { stat, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createInterface } from 'node:readline';
import { Client, Metadata, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { Queue, QueueEvents, Worker } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { PrivateRedis, connectionFromUrl } from '../../jobs/index.js';
import { Key, PartitionMap, StoreClient, StoreError, StoreRouter, checkHealth, type StoreCredentials } from '../../store/index.js';
import { CLI, NodeProcess, StoreCluster, runCli } from '../helpers/store-cluster.js';
import { writeSparkDrop } from '../helpers/spark-drop.js';
import { makeTestCerts, type TestCerts } from '../helpers/test-certs.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const TOKENS = { admin: 'a'.repeat(24) + '-admin-token', write: 'w'.repeat(24) + '-write-token', read: 'r'.repeat(24) + '-read-token' };
const WRONG = 'this-token-is-wrong-0123456789';

let tmp: TempDir;
let certs: TestCerts;
let tokenFile: string;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeAll(async () => {
  tmp = await makeTempDir('shardpipe-auth-');
  certs = await makeTestCerts(tmp.path);
  tokenFile = tmp.sub('tokens');
  await writeFile(tokenFile, `# test tokens\nadmin ${TOKENS.admin}\nwrite ${TOKENS.write}\nread ${TOKENS.read}\n`, { mode: 0o600 });
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await tmp?.remove();
});

/** A client's routing core with these credentials: its channels, for raw calls. */
function router(seeds: string[], creds: StoreCredentials = {}, timeoutMs = 5000): StoreRouter {
  const r = new StoreRouter({ seeds, credentials: creds, operationTimeoutMs: timeoutMs, rpcDeadlineMs: Math.min(timeoutMs, 2000) });
  cleanups.push(() => r.close());
  return r;
}

function client(seeds: string[], creds: StoreCredentials = {}, timeoutMs = 5000): StoreClient {
  return new StoreClient(router(seeds, creds, timeoutMs));
}

async function startCluster(nodes: number, extraArgs: string[]): Promise<StoreCluster> {
  const cluster = await StoreCluster.start({ nodes, partitions: nodes * 2, extraArgs });
  cleanups.push(() => cluster.close());
  return cluster;
}

const failure = (p: Promise<unknown>): Promise<StoreError> =>
  p.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (err: unknown) => err as StoreError,
  );

/** The gRPC status code under a StoreError. */
const grpcCode = (err: StoreError): number | undefined => (err.cause as ServiceError | undefined)?.code;

/** GET over http(s) with optional bearer token and TLS material; resolves status and body. */
function get(url: string, options: { token?: string; ca?: Buffer; cert?: Buffer; key?: Buffer } = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
    const req = url.startsWith('https:')
      ? httpsRequest(url, { headers, ca: options.ca, cert: options.cert, key: options.key })
      : httpRequest(url, { headers });
    req.once('response', (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.once('error', reject);
    req.end();
  });
}

describe('tokens with roles on store nodes (plaintext)', () => {
  it('no token and a wrong token are UNAUTHENTICATED, a weaker role PERMISSION_DENIED, health is open, and no token reaches the log', async () => {
    const cluster = await startCluster(1, ['--auth-token-file', tokenFile, '--metrics-port', '0']);
    const seeds = cluster.seeds;
    const node = cluster.nodes[0]!;
    const key = Key.fromUtf8('k1');

    const none = await failure(client(seeds).get(key));
    expect(none.code).toBe('STORE_UNAUTHENTICATED');
    expect(grpcCode(none.cause as StoreError)).toBe(status.UNAUTHENTICATED);
    expect(none.message).toContain('SHARDPIPE_TOKEN');

    const wrong = await failure(client(seeds, { token: WRONG }).get(key));
    expect(wrong.code).toBe('STORE_UNAUTHENTICATED');
    expect(wrong.message).toContain('not one of this node');

    const reader = client(seeds, { token: TOKENS.read });
    expect(await reader.get(key)).toBeUndefined();
    const readPut = await failure(reader.put(key, Buffer.from('v')));
    expect(readPut.code).toBe('STORE_PERMISSION_DENIED');
    expect(grpcCode(readPut)).toBe(status.PERMISSION_DENIED);
    expect(readPut.message).toContain('needs role write');

    const writer = client(seeds, { token: TOKENS.write });
    await writer.put(key, Buffer.from('v'));
    expect((await reader.get(key))?.value.toString()).toBe('v');
    const map = await writer.map();
    const next = PartitionMap.create(map.version + 1, map.partitions);
    const writeInstall = await failure(router(seeds, { token: TOKENS.write }).connection(seeds[0]!).unary('setPartitionMap', { map: next.toProto(), force: false }, { deadline: Date.now() + 5000 }));
    expect(writeInstall.code).toBe('STORE_PERMISSION_DENIED');
    expect(grpcCode(writeInstall)).toBe(status.PERMISSION_DENIED);

    const admin = client(seeds, { token: TOKENS.admin });
    const installed = await admin.installMap(next);
    expect(installed).toEqual([{ node: seeds[0], installed: true }]);

    expect(await checkHealth(seeds[0]!)).toBe('SERVING');

    // /metrics: read token or better.
    const metricsUrl = `http://127.0.0.1:${node.ready.metricsPort as number}/metrics`;
    const anonymous = await get(metricsUrl);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers['www-authenticate']).toMatch(/^Basic/);
    expect((await get(metricsUrl, { token: WRONG })).status).toBe(401);
    const scraped = await get(metricsUrl, { token: TOKENS.read });
    expect(scraped.status).toBe(200);
    expect(scraped.body).toContain('# TYPE');

    // The CLI sends SHARDPIPE_TOKEN; without it the command fails with the code.
    const put = await runCli(['kv', 'put', 'cli-key', 'x', '--seeds', seeds.join(',')], { SHARDPIPE_TOKEN: TOKENS.write });
    expect(put.code, put.stderr).toBe(0);
    const refused = await runCli(['kv', 'get', 'cli-key', '--seeds', seeds.join(',')], { SHARDPIPE_TOKEN: '' });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('STORE_UNAUTHENTICATED');
    const flag = await runCli(['kv', 'get', 'cli-key', '--seeds', seeds.join(','), '--token', TOKENS.read], { SHARDPIPE_TOKEN: '' });
    expect(flag.code, flag.stderr).toBe(0);
    expect(flag.stdout.trim()).toBe('x');

    await node.stop();
    expect(node.stderr).toContain('refused a call');
    for (const token of [WRONG, ...Object.values(TOKENS)]) expect(node.stderr).not.toContain(token);
  });

  it('a raw gRPC call without metadata gets UNAUTHENTICATED with our code in trailing metadata', async () => {
    const cluster = await startCluster(1, ['--auth-token-file', tokenFile]);
    const raw = new Client(cluster.seeds[0]!, credentials.createInsecure());
    cleanups.push(() => raw.close());
    const err = await new Promise<ServiceError>((resolve) =>
      raw.makeUnaryRequest('/shardpipe.store.v1.Store/GetPartitionMap', (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), new Metadata(), (e) => resolve(e!)),
    );
    expect(err.code).toBe(status.UNAUTHENTICATED);
    expect(err.metadata.get('shardpipe-error-code')).toEqual(['STORE_UNAUTHENTICATED']);
  });

  it('a bad token file stops the node with the line named and exit 64', async () => {
    const bad = tmp.sub('bad-tokens');
    await writeFile(bad, `read ${TOKENS.read}\nsuperuser ${'x'.repeat(30)}\n`);
    const port = await findFreePort();
    const r = await runCli(['store', 'start', '--node', `127.0.0.1:${port}`, '--data', tmp.sub('bad-node'), '--auth-token-file', bad]);
    expect(r.code).toBe(64);
    expect(r.stderr).toContain(`${bad} line 2: unknown role "superuser"`);
    expect(r.stderr).toContain('CONFIG_TOKEN_FILE_INVALID');
    expect(r.stderr).not.toContain('x'.repeat(30));
  });
});

describe('a lagging node fetches the newer map itself', () => {
  it('from the peer the client names, with no admin token on the client; a peer outside the map is refused', async () => {
    const cluster = await startCluster(2, ['--auth-token-file', tokenFile]);
    const [a, b] = cluster.seeds as [string, string];
    const adminRouter = router([a], { token: TOKENS.admin });
    const admin = new StoreClient(adminRouter);
    const v1 = await admin.map();
    const v2 = PartitionMap.create(2, v1.partitions);
    // Installed on A only: B misses the install.
    await adminRouter.connection(a).unary('setPartitionMap', { map: v2.toProto(), force: false }, { deadline: Date.now() + 5000 });

    // A caller naming a server outside B's map is ignored: B keeps version 1.
    const outsider = `127.0.0.1:${await findFreePort()}`;
    const reader = router([a, b], { token: TOKENS.read });
    const answer = await reader.connection(b).unary('getPartitionMap', {}, { deadline: Date.now() + 5000 }, { 'x-shardpipe-map-from': outsider, 'x-shardpipe-map-version': '2' });
    expect(answer.version).toBe(1);

    // A writer's put to a partition of B: B says it is behind, the client names A, B fetches.
    const writer = client([a, b], { token: TOKENS.write });
    const keyOnB = v2.partitions.find((p) => p.node === b)!.start;
    const key = keyOnB.length > 0 ? Key.fromBytes(keyOnB) : Key.fromUtf8('\u0000');
    await writer.put(key, Buffer.from('healed'));
    expect((await reader.connection(b).unary('getPartitionMap', {}, { deadline: Date.now() + 5000 })).version).toBe(2);
    expect((await writer.get(key))?.value.toString()).toBe('healed');
    const nodeB = cluster.nodes[1]!;
    await nodeB.stop();
    expect(nodeB.stderr).toContain('not another node of this node');
  });
});

describe('TLS and mutual TLS', () => {
  it('a node with --tls-cert/--tls-key/--tls-ca refuses plaintext and clients without a certificate; /metrics over HTTPS wants the read token', async () => {
    const tlsArgs = ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tls-ca', certs.ca];
    const cluster = await startCluster(1, ['--auth-token-file', tokenFile, '--metrics-port', '0', ...tlsArgs]);
    const seeds = cluster.seeds;
    const node = cluster.nodes[0]!;
    const mtls = { ca: certs.pem.ca, cert: certs.pem.clientCert, key: certs.pem.clientKey };
    const key = Key.fromUtf8('tls-key');

    const good = client(seeds, { token: TOKENS.write, tls: mtls });
    await good.put(key, Buffer.from('over tls'));
    expect((await good.get(key))?.value.toString()).toBe('over tls');

    const plain = await failure(client(seeds, { token: TOKENS.write }, 1500).get(key));
    expect(plain.code).toBe('STORE_UNAVAILABLE');
    const noCert = await failure(client(seeds, { token: TOKENS.write, tls: { ca: certs.pem.ca } }, 1500).get(key));
    expect(noCert.code).toBe('STORE_UNAVAILABLE');

    expect(await checkHealth(seeds[0]!, 2000, '', mtls)).toBe('SERVING');
    expect(await checkHealth(seeds[0]!, 1000)).toBe('UNREACHABLE');

    // The CLI takes the same through SHARDPIPE_TLS_*.
    const cli = await runCli(['kv', 'get', 'tls-key', '--seeds', seeds.join(',')], {
      SHARDPIPE_TOKEN: TOKENS.read,
      SHARDPIPE_TLS_CA: certs.ca,
      SHARDPIPE_TLS_CERT: certs.clientCert,
      SHARDPIPE_TLS_KEY: certs.clientKey,
    });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout.trim()).toBe('over tls');

    const metricsUrl = `https://127.0.0.1:${node.ready.metricsPort as number}/metrics`;
    expect((await get(metricsUrl, mtls)).status).toBe(401);
    const scraped = await get(metricsUrl, { ...mtls, token: TOKENS.read });
    expect(scraped.status).toBe(200);
    expect(scraped.body).toContain('# TYPE');
    await expect(get(metricsUrl, { ca: certs.pem.ca, token: TOKENS.read })).rejects.toThrow();
    await expect(get(metricsUrl.replace('https:', 'http:'), { token: TOKENS.read })).rejects.toThrow();
  });
});

/** Runs `shardpipe metrics-server ARGS` until its ready line. */
async function startMetricsServer(args: string[], env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [CLI, 'metrics-server', ...args, '--log-format', 'json', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
  });
  const ready = await new Promise<{ url: string }>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"event":"ready"')) resolve(JSON.parse(line) as { url: string });
    });
    child.once('exit', (code) => reject(new Error(`metrics-server exited ${code}: ${stderr}`)));
  });
  return { child, url: ready.url };
}

describe('the metrics server with tokens and TLS', () => {
  it('serves its API and page over HTTPS to the read token only, and polls TLS nodes with its own token', async () => {
    const tlsArgs = ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tls-ca', certs.ca];
    const cluster = await startCluster(2, ['--auth-token-file', tokenFile, ...tlsArgs]);
    const port = await findFreePort();
    // The server's certificate also serves as its client certificate towards the nodes.
    const { url } = await startMetricsServer(['--seeds', cluster.seeds.join(','), '--port', String(port), '--interval', '200ms', '--auth-token-file', tokenFile, ...tlsArgs], { SHARDPIPE_TOKEN: TOKENS.read });
    expect(url).toBe(`https://127.0.0.1:${port}/`);
    const mtls = { ca: certs.pem.ca, cert: certs.pem.clientCert, key: certs.pem.clientKey };

    expect((await get(`${url}healthz`, mtls)).status).toBe(200);
    for (const path of ['api/cluster', 'metrics', '']) {
      expect((await get(`${url}${path}`, mtls)).status, path).toBe(401);
      expect((await get(`${url}${path}`, { ...mtls, token: WRONG })).status, path).toBe(401);
    }
    expect((await get(`${url}`, { ...mtls, token: TOKENS.read })).status).toBe(200);
    // Polled through TLS with the read token: both nodes up.
    let nodesUp = 0;
    const deadline = Date.now() + 20_000;
    while (nodesUp < 2 && Date.now() < deadline) {
      const r = await get(`${url}api/cluster`, { ...mtls, token: TOKENS.read });
      expect(r.status).toBe(200);
      nodesUp = (JSON.parse(r.body) as { nodesUp: number }).nodesUp;
      if (nodesUp < 2) await new Promise((done) => setTimeout(done, 200));
    }
    expect(nodesUp).toBe(2);
  });
});

describe('protected mode: no tokens configured', () => {
  it('a node refuses to bind a non-loopback address without --insecure, and says why', async () => {
    const port = await findFreePort();
    const r = await runCli(['store', 'start', '--node', `127.0.0.1:${port}`, '--listen', `0.0.0.0:${port}`, '--data', tmp.sub('open-node')]);
    expect(r.code).toBe(64);
    expect(r.stderr).toContain('refusing to bind the store node to 0.0.0.0');
    expect(r.stderr).toContain('--auth-token-file');
    expect(r.stderr).toContain('CONFIG_INSECURE_BIND');

    const mapFile = tmp.sub('open-map.json');
    await writeFile(mapFile, JSON.stringify(PartitionMap.evenlySplit(1, [`127.0.0.1:${port}`], 2).toJson()));
    const metrics = await runCli(['store', 'start', '--map', mapFile, '--node', `127.0.0.1:${port}`, '--data', tmp.sub('open-node-2'), '--metrics-port', '0', '--metrics-host', '0.0.0.0']);
    expect(metrics.code).toBe(64);
    expect(metrics.stderr).toContain('CONFIG_INSECURE_BIND');

    const server = await runCli(['metrics-server', '--seeds', `127.0.0.1:${port}`, '--host', '0.0.0.0', '--port', '0']);
    expect(server.code).toBe(64);
    expect(server.stderr).toContain('refusing to bind the metrics server to 0.0.0.0');
  });

  it('with --insecure it binds 0.0.0.0 and serves (reached over loopback here)', async () => {
    const port = await findFreePort();
    const dir = tmp.sub('insecure-node');
    const mapFile = tmp.sub('insecure-map.json');
    await writeFile(mapFile, JSON.stringify(PartitionMap.evenlySplit(1, [`127.0.0.1:${port}`], 2).toJson()));
    const node = new NodeProcess(`127.0.0.1:${port}`, dir, mapFile, ['--listen', `0.0.0.0:${port}`, '--insecure']);
    await node.start();
    cleanups.push(() => node.kill());
    const c = client([`127.0.0.1:${port}`]);
    await c.put(Key.fromUtf8('open'), Buffer.from('1'));
    expect((await c.get(Key.fromUtf8('open')))?.value.toString()).toBe('1');
  });
});

/** A redis-server on a free port that requires `password`, stopped after the test; its port. */
async function startPasswordRedis(password: string): Promise<number> {
  const port = await findFreePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--requirepass', password, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  cleanups.push(async () => {
    const exited = once(redis, 'exit');
    redis.kill('SIGTERM');
    await exited;
  });
  return port;
}

describe('Redis with a password', () => {
  it('a queue works through redis://:PASSWORD@ against redis-server --requirepass, a wrong password fails, and errors never show it', async () => {
    const password = 'redis-secret-7f3a9c';
    const port = await startPasswordRedis(password);
    const connection = connectionFromUrl(`redis://:${encodeURIComponent(password)}@127.0.0.1:${port}`);
    const name = `test-${crypto.randomUUID()}`;
    const queue = new Queue(name, { connection });
    const events = new QueueEvents(name, { connection });
    const worker = new Worker(name, async (job) => (job.data as { n: number }).n * 2, { connection });
    cleanups.push(async () => {
      await worker.close();
      await events.close();
      await queue.close();
    });
    await events.waitUntilReady();
    const job = await queue.add('double', { n: 21 });
    expect(await job.waitUntilFinished(events, 10_000)).toBe(42);

    const wrong = new Queue(`${name}-wrong`, { connection: { ...connectionFromUrl(`redis://:nope@127.0.0.1:${port}`), maxRetriesPerRequest: 0, retryStrategy: () => null } });
    wrong.on('error', () => undefined);
    await expect(wrong.add('x', {})).rejects.toThrow(/WRONGPASS|NOAUTH|invalid password|Connection is closed/);
    await wrong.close().catch(() => undefined);

    let message = '';
    try {
      connectionFromUrl(`redis://:${password}@127.0.0.1:${port}/not-a-db`);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('database must be a whole number');
    expect(message).not.toContain(password);

    const printed = await runCli(['config', 'print', '--json'], { SHARDPIPE_REDIS_URL: `redis://:${password}@127.0.0.1:${port}`, SHARDPIPE_TOKEN: TOKENS.admin });
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stdout).not.toContain(password);
    expect(printed.stdout).not.toContain(TOKENS.admin);
    expect(printed.stdout).toContain('redis://:***@127.0.0.1');
  });
});

describe('Redis with a password, end to end', () => {
  it('shardpipe ingest runs against redis-server --requirepass and a token-locked cluster; neither secret is printed', { timeout: 60_000 }, async () => {
    const password = 'ingest-redis-pw-51e0';
    const port = await startPasswordRedis(password);
    const cluster = await startCluster(2, ['--auth-token-file', tokenFile]);
    const drop = await writeSparkDrop(tmp.sub('drop'), { files: 2, rowsPerFile: 2000, rowGroupRows: 1000, prefix: 'rp-' });
    const env = { SHARDPIPE_REDIS_URL: `redis://:${password}@127.0.0.1:${port}`, SHARDPIPE_TOKEN: TOKENS.write, SHARDPIPE_SEEDS: cluster.seeds.join(',') };
    const r = await runCli(['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', '--data-dir', tmp.sub('ingest-data'), '--json', '--log-level', 'debug', '--log-format', 'json'], env);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ rowsIngested: drop.rows, rowsRejected: 0 });
    const digest = await client(cluster.seeds, { token: TOKENS.read }).checksum(Buffer.from('rp-'), Buffer.from('rp.'));
    expect(digest.count).toBe(drop.rows);
    for (const secret of [password, TOKENS.write]) expect(r.stdout + r.stderr).not.toContain(secret);

    // A wrong password fails the command at once with JOBS_REDIS_REFUSED, never showing the password.
    const wrong = await runCli(['ingest', drop.dir, '--key-column', 'id', '--data-dir', tmp.sub('ingest-data-2'), '--json'], { ...env, SHARDPIPE_REDIS_URL: `redis://:wrong-${password}@127.0.0.1:${port}` });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('JOBS_REDIS_REFUSED');
    expect(wrong.stderr).toContain(`redis://:***@127.0.0.1:${port}`);
    expect(wrong.stderr).not.toContain(password);
    const worker = await runCli(['worker'], { ...env, SHARDPIPE_REDIS_URL: `redis://127.0.0.1:${port}` });
    expect(worker.code).toBe(1);
    expect(worker.stderr).toContain('JOBS_REDIS_REFUSED');

  });

  it('the private redis-server of a command is password-protected too', async () => {
    const redis = await PrivateRedis.start({ dataDir: tmp.sub('private-redis') });
    cleanups.push(() => redis.stop());
    const url = new URL(redis.url);
    expect(url.password).toMatch(/^[0-9a-f]{48}$/);
    const queue = new Queue(`test-${crypto.randomUUID()}`, { connection: connectionFromUrl(redis.url) });
    cleanups.push(() => queue.close());
    expect(await queue.count()).toBe(0);
    const anonymous = new Queue(`test-${crypto.randomUUID()}`, { connection: { ...connectionFromUrl(`redis://127.0.0.1:${url.port}`), maxRetriesPerRequest: 0, retryStrategy: () => null } });
    anonymous.on('error', () => undefined);
    await expect(anonymous.count()).rejects.toThrow(/NOAUTH|Connection is closed/);
    await anonymous.close().catch(() => undefined);
  });
});

describe('cluster tokens', () => {
  it('writes a token file of mode 0600 that a node accepts', async () => {
    const out = tmp.sub('generated-tokens');
    const r = await runCli(['cluster', 'tokens', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const cluster = await startCluster(1, ['--auth-token-file', out]);
    expect(await checkHealth(cluster.seeds[0]!)).toBe('SERVING');
  });
});
