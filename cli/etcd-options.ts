import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { EtcdConnectionOptions } from '../store/index.js';

/** Help of `--etcd` wherever a command talks to the cluster's etcd. */
export const ETCD_HELP = 'etcd endpoints http(s)://HOST:PORT[,...] holding the partition map and node leases; a user in the URL (http://USER:PASSWORD@HOST:PORT) logs in with etcd user auth (never logged)';

/** The values of the options `withEtcdOptions` adds. */
export interface EtcdFlags {
  etcd?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
}

/** `--etcd-ca`, `--etcd-cert`, `--etcd-key` (and `--etcd URL` itself unless the command declares it): how to reach etcd. */
export function withEtcdOptions(cmd: Command, etcdHelp: string | false = ETCD_HELP): Command {
  if (etcdHelp !== false) cmd.option('--etcd <url>', etcdHelp);
  return cmd
    .option('--etcd-ca <file>', 'PEM CA that signed etcd\'s server certificate (https:// endpoints)')
    .option('--etcd-cert <file>', 'PEM client certificate for etcd\'s client-certificate auth (with --etcd-key)')
    .option('--etcd-key <file>', 'PEM private key of --etcd-cert');
}

/** The connection options of the flags, with the PEM files read. */
export async function etcdConnectionOf(url: string, flags: EtcdFlags): Promise<EtcdConnectionOptions> {
  if ((flags.etcdCert === undefined) !== (flags.etcdKey === undefined)) throw new RangeError('--etcd-cert and --etcd-key go together');
  const read = (file: string | undefined): Promise<Buffer | undefined> => (file === undefined ? Promise.resolve(undefined) : readFile(file));
  const [ca, cert, key] = await Promise.all([read(flags.etcdCa), read(flags.etcdCert), read(flags.etcdKey)]);
  return { url, ca, cert, key };
}
