#!/usr/bin/env node
// Certificates for etcd with client-certificate TLS (README "Replicated clusters", docker-compose.yml):
// a CA, etcd's server certificate and one client certificate for shardpipe's nodes, coordinators and
// `cluster` commands, made with openssl. Usage: node scripts/etcd-certs.mjs DIR [--host NAME ...] [--days N]
// DIR gets ca.pem, server.pem, server.key, client.pem, client.key (keys mode 0600; ca.key is deleted).
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
if (args.length === 0 || args.includes('--help')) {
  process.stderr.write('usage: node scripts/etcd-certs.mjs DIR [--host NAME ...] [--days N]\n  the server certificate names 127.0.0.1, localhost, etcd and every --host\n');
  process.exit(args.length === 0 ? 2 : 0);
}
const dir = args[0];
const hosts = ['localhost', 'etcd'];
let days = '825';
for (let i = 1; i < args.length; i++) {
  if (args[i] === '--host' && args[i + 1]) hosts.push(args[++i]);
  else if (args[i] === '--days' && /^\d+$/.test(args[i + 1] ?? '')) days = args[++i];
  else {
    process.stderr.write(`etcd-certs: unknown argument ${args[i]} (see --help)\n`);
    process.exit(2);
  }
}
mkdirSync(dir, { recursive: true, mode: 0o700 });
const p = (name) => join(dir, name);
// openssl's progress dots stay quiet; a failure throws with its stderr.
const openssl = (...a) => execFileSync('openssl', a, { stdio: ['ignore', 'ignore', 'pipe'] });
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', days, '-subj', '/CN=shardpipe etcd CA', '-keyout', p('ca.key'), '-out', p('ca.pem'));
const san = ['IP:127.0.0.1', ...hosts.map((h) => (/^[\d.]+$/.test(h) ? `IP:${h}` : `DNS:${h}`))].join(',');
for (const [name, cn, ext] of [
  ['server', 'etcd', `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\n`],
  ['client', 'shardpipe', 'extendedKeyUsage=clientAuth\n'],
]) {
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`));
  writeFileSync(p(`${name}.ext`), ext);
  openssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', days, '-extfile', p(`${name}.ext`), '-out', p(`${name}.pem`));
  chmodSync(p(`${name}.key`), 0o600);
  rmSync(p(`${name}.csr`));
  rmSync(p(`${name}.ext`));
}
// Nothing else is signed with it: without the CA key no one can mint another client certificate.
rmSync(p('ca.key'));
rmSync(p('ca.srl'), { force: true });
process.stderr.write(`wrote ${['ca.pem', 'server.pem', 'server.key', 'client.pem', 'client.key'].map((f) => p(f)).join(', ')} (server names: ${san})\n`);
