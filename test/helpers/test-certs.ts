import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Paths of a throwaway CA and of a server and a client certificate it signed, plus their PEM bytes. */
export interface TestCerts {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  pem: { ca: Buffer; clientCert: Buffer; clientKey: Buffer };
}

/**
 * Makes a CA and two certificates with `openssl` in `dir`: the server's for 127.0.0.1 and
 * localhost, the client's for mutual TLS (the README's runbook, in code).
 */
export async function makeTestCerts(dir: string): Promise<TestCerts> {
  const p = (name: string): string => join(dir, name);
  const openssl = (...args: string[]) => run('openssl', args);
  await openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=shardpipe test CA', '-keyout', p('ca.key'), '-out', p('ca.pem'));
  for (const [name, cn, ext] of [
    ['server', '127.0.0.1', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n'],
    ['client', 'shardpipe test client', 'extendedKeyUsage=clientAuth\n'],
  ] as const) {
    await openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`));
    await writeFile(p(`${name}.ext`), ext);
    await openssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', p(`${name}.ext`), '-out', p(`${name}.pem`));
  }
  return {
    ca: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
    pem: { ca: await readFile(p('ca.pem')), clientCert: await readFile(p('client.pem')), clientKey: await readFile(p('client.key')) },
  };
}
