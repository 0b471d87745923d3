import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { CliProcess } from '../helpers/etcd-cluster.js';
import { runCli } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

// A real etcd with client-certificate TLS (certificates made by scripts/etcd-certs.mjs with openssl),
// real node processes, a coordinator and the cluster commands, all given --etcd-ca/--etcd-cert/--etcd-key.
const ROOT = resolve(import.meta.dirname, '../..');
let dir: TempDir | undefined;
let etcd: ChildProcess | undefined;
const processes: CliProcess[] = [];
afterEach(async () => {
  await Promise.all(processes.splice(0).map((p) => p.kill()));
  if (etcd && etcd.exitCode === null && etcd.signalCode === null) {
    const exited = once(etcd, 'exit');
    etcd.kill('SIGKILL');
    await exited;
  }
  etcd = undefined;
  await dir?.remove();
  dir = undefined;
});

/** Starts etcd on free loopback ports, TLS only, requiring client certificates; resolves once it answers an authenticated health check. */
async function startTlsEtcd(d: TempDir, certs: string): Promise<string> {
  const [client, peer] = [await findFreePort(), await findFreePort()];
  const url = `https://127.0.0.1:${client}`;
  etcd = spawn('etcd', [
    '--name', 'tls', '--data-dir', d.sub('etcd'),
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`, '--initial-cluster', `tls=http://127.0.0.1:${peer}`,
    '--cert-file', join(certs, 'server.pem'), '--key-file', join(certs, 'server.key'), '--client-cert-auth', '--trusted-ca-file', join(certs, 'ca.pem'),
    '--heartbeat-interval', '50', '--election-timeout', '500', '--log-level', 'warn', '--logger', 'zap',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  etcd.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const deadline = Date.now() + 15_000;
  for (;;) {
    const health = await healthy(url, certs);
    if (health) return url;
    if (etcd.exitCode !== null || Date.now() > deadline) throw new Error(`TLS etcd did not become healthy: ${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** etcd's /health over TLS with the client certificate. */
async function healthy(url: string, certs: string): Promise<boolean> {
  const [ca, cert, key] = await Promise.all(['ca.pem', 'client.pem', 'client.key'].map((f) => readFile(join(certs, f))));
  return new Promise((done) => {
    const req = request(`${url}/health`, { ca, cert, key, timeout: 1000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => done(res.statusCode === 200 && body.includes('"health":"true"')));
    });
    req.on('error', () => done(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

describe('etcd with client-certificate TLS', () => {
  it('nodes, a coordinator and cluster init/status reach it with --etcd-ca/--etcd-cert/--etcd-key and serve a replicated cluster; without a client certificate a node is refused with a clear error', async () => {
    dir = await makeTempDir('shardpipe-etcd-tls-');
    const certs = dir.sub('certs');
    await promisify(execFile)(process.execPath, [join(ROOT, 'scripts/etcd-certs.mjs'), certs]);
    const url = await startTlsEtcd(dir, certs);
    const tls = ['--etcd-ca', join(certs, 'ca.pem'), '--etcd-cert', join(certs, 'client.pem'), '--etcd-key', join(certs, 'client.key')];

    const nodes = await Promise.all([1, 2].map(async (i) => {
      const address = `127.0.0.1:${await findFreePort()}`;
      const node = new CliProcess(['store', 'start', '--etcd', url, ...tls, '--node', address, '--data', dir!.sub(`node-${i}`), '--lease', '1s']).start();
      processes.push(node);
      await node.event('registered');
      return address;
    }));
    const coordinator = new CliProcess(['coordinator', '--etcd', url, ...tls, '--lease', '1s']).start();
    processes.push(coordinator);
    await coordinator.event('ready');
    const init = await runCli(['cluster', 'init', '--etcd', url, ...tls, '--partitions', '2', '--replicas', '2']);
    expect(init.code, init.stderr).toBe(0);
    await Promise.all(processes.filter((p) => p.args[0] === 'store').map((p) => p.event('ready')));

    const env = { SHARDPIPE_SEEDS: nodes.join(','), SHARDPIPE_TOKEN: '' };
    expect((await runCli(['kv', 'put', 'tls-key', 'over chains'], env)).code).toBe(0);
    const get = await runCli(['kv', 'get', 'tls-key'], env);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout).toContain('over chains');
    const status = await runCli(['cluster', 'status', '--etcd', url, ...tls, '--json']);
    expect(status.code, status.stderr).toBe(0);
    const map = JSON.parse(status.stdout) as { replicas: number; partitions: Array<{ chain: Array<{ node: string; state: string; live: boolean }> }> };
    expect(map.replicas).toBe(2);
    for (const p of map.partitions) {
      expect(p.chain.map((r) => r.node).sort()).toEqual([...nodes].sort());
      expect(p.chain.every((r) => r.state === 'serving' && r.live)).toBe(true);
    }
    const check = await runCli(['cluster', 'check', '--seeds', nodes.join(','), '--json']);
    expect(check.code, check.stdout).toBe(0);

    // The same etcd without a client certificate (CA only): refused, the node does not start, and says where.
    const bare = await runCli(['store', 'start', '--etcd', url, '--etcd-ca', join(certs, 'ca.pem'), '--node', `127.0.0.1:${await findFreePort()}`, '--data', dir.sub('node-bare'), '--log-format', 'json']);
    expect(bare.code).toBe(1);
    expect(bare.stderr).toMatch(/STORE_ETCD_(UNAVAILABLE|UNAUTHENTICATED)/);
    expect(bare.stderr).toContain(url);
  }, 90_000);
});
