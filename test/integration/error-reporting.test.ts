import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateRedis } from '../../jobs/index.js';
import { writeSparkDrop } from '../helpers/spark-drop.js';
import { NodeProcess, StoreCluster, runCli } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

/** One Sentry envelope as received: its raw text (to look for secrets) and its event items. */
interface Envelope {
  raw: string;
  events: Array<{ tags?: Record<string, string>; contexts?: Record<string, Record<string, unknown>>; exception?: { values: Array<{ type: string; value: string }> }; release?: string }>;
}

/**
 * A Sentry-compatible endpoint: takes envelopes at /api/PROJECT/envelope/ (gzip or plain) and
 * decodes them (newline-separated: envelope header, then item header and payload pairs).
 */
class EnvelopeReceiver {
  readonly envelopes: Envelope[] = [];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<EnvelopeReceiver> {
    const receiver: EnvelopeReceiver = new EnvelopeReceiver(
      createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          if (req.method === 'POST' && /^\/api\/\d+\/envelope\/?/.test(req.url ?? '')) {
            const body = Buffer.concat(chunks);
            receiver.add(req.headers['content-encoding'] === 'gzip' ? gunzipSync(body).toString('utf8') : body.toString('utf8'));
          }
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
      }),
    );
    receiver.server.listen(0, '127.0.0.1');
    await once(receiver.server, 'listening');
    return receiver;
  }

  get dsn(): string {
    return `http://0123456789abcdef0123456789abcdef@127.0.0.1:${(this.server.address() as AddressInfo).port}/42`;
  }

  /** Every event received, flattened. */
  get events(): Envelope['events'] {
    return this.envelopes.flatMap((e) => e.events);
  }

  private add(raw: string): void {
    const lines = raw.split('\n').filter((l) => l !== '');
    const events: Envelope['events'] = [];
    for (let i = 1; i + 1 < lines.length; i += 2) {
      const header = JSON.parse(lines[i]!) as { type: string };
      if (header.type === 'event') events.push(JSON.parse(lines[i + 1]!) as Envelope['events'][number]);
    }
    this.envelopes.push({ raw, events });
  }

  async close(): Promise<void> {
    this.server.close();
    await once(this.server, 'close');
  }
}

describe('error reporting to a Sentry-compatible endpoint (SENTRY_DSN)', { timeout: 120_000 }, () => {
  const TOKENS = { admin: 'sentry-admin-token-3c9e51aa', write: 'sentry-write-token-7d20b4ee', read: 'sentry-read-token-0fa6c812' };
  let tmp: TempDir;
  let receiver: EnvelopeReceiver;
  let cluster: StoreCluster;
  let redis: PrivateRedis;
  let env: Record<string, string>;
  let secrets: string[];
  let tokenFile: string;

  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-sentry-');
    receiver = await EnvelopeReceiver.start();
    tokenFile = tmp.sub('tokens');
    await writeFile(tokenFile, Object.entries(TOKENS).map(([role, token]) => `${role} ${token}`).join('\n') + '\n', { mode: 0o600 });
    // Node processes (started and restarted by StoreCluster) inherit the DSN from this test file's process.
    process.env.SENTRY_DSN = receiver.dsn;
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2, extraArgs: ['--auth-token-file', tokenFile] });
    redis = await PrivateRedis.start({ dataDir: tmp.sub('redis') });
    env = { SENTRY_DSN: receiver.dsn, SHARDPIPE_SEEDS: cluster.seeds.join(','), SHARDPIPE_REDIS_URL: redis.url, SHARDPIPE_TOKEN: TOKENS.admin };
    secrets = [...Object.values(TOKENS), new URL(redis.url).password];
  });

  afterAll(async () => {
    delete process.env.SENTRY_DSN;
    await cluster?.close();
    await redis?.stop();
    await receiver?.close();
    await tmp?.remove();
  });

  const cli = (args: string[], extraEnv: Record<string, string> = {}) => runCli([...args, '--log-format', 'json', '--log-level', 'warn'], { ...env, ...extraEnv });

  it('without SENTRY_DSN the Sentry SDK is never loaded; with it, it is', async () => {
    // An ESM resolve hook that notes every @sentry/ module the CLI asks for.
    const hook = tmp.sub('sentry-hook.mjs');
    const resolveHook = "import { writeSync } from 'node:fs'; export async function resolve(s, c, n) { if (s.startsWith('@sentry/')) writeSync(2, 'LOADED ' + s + '\\n'); return n(s, c); }";
    await writeFile(hook, `import { register } from 'node:module';\nregister('data:text/javascript,' + encodeURIComponent(${JSON.stringify(resolveHook)}));\n`);
    const without = await runCli(['config', 'print', '--json'], { ...process.env, SENTRY_DSN: '', NODE_OPTIONS: `--import ${hook}` });
    expect(without.code, without.stderr).toBe(0);
    expect(without.stderr).not.toContain('LOADED @sentry/');
    const withDsn = await runCli(['config', 'print', '--json'], { SENTRY_DSN: receiver.dsn, NODE_OPTIONS: `--import ${hook}` });
    expect(withDsn.code, withDsn.stderr).toBe(0);
    expect(withDsn.stderr).toContain('LOADED @sentry/node-core');
    // config print shows the DSN without its key.
    const dsn = (JSON.parse(withDsn.stdout) as { settings: Array<{ env: string; value: string }> }).settings.find((x) => x.env === 'SENTRY_DSN')!;
    expect(dsn.value).toBe(receiver.dsn.replace(/\/\/[^@]+@/, '//***@'));
    expect(receiver.envelopes).toEqual([]);
  });

  it('a user error with a stable code reports nothing', async () => {
    const drop = await writeSparkDrop(tmp.sub('unfinished-drop'), { files: 1, rowsPerFile: 10, success: false, prefix: 'u-' });
    const r = await cli(['ingest', drop.dir, '--key-column', 'id', '--data-dir', tmp.sub('cli-ingest')]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('INGEST_INCOMPLETE_DROP');
    // The command flushed its reports before it exited: anything it sent has arrived.
    expect(receiver.envelopes).toEqual([]);
  });

  it('fault injection: an unreadable record planted in LevelDB makes kv get and a backup fail; the CLI, the node and the backup job report it with their context and no secret', async () => {
    const node = cluster.nodes[0]!;
    await node.stop();
    // A record whose format version byte no version of the store writes: reading it is STORE_INTERNAL.
    const db = new ClassicLevel<Buffer, Buffer>(join(node.dataDir, 'partition-0'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    await db.put(Buffer.from('dcrash-key'), Buffer.from([99, 0, 1, 2, 3]));
    await db.close();
    await node.start();

    const get = await cli(['kv', 'get', 'crash-key']);
    expect(get.code, get.stderr).toBe(1);
    expect(get.stderr).toContain('STORE_INTERNAL');
    const fromCli = receiver.events.filter((e) => e.tags?.command === 'kv get');
    expect(fromCli).toHaveLength(1);
    expect(fromCli[0]!.tags).toMatchObject({ code: 'STORE_INTERNAL' });
    expect(fromCli[0]!.exception!.values.at(-1)!.value).toContain('unreadable record');
    expect(fromCli[0]!.release).toBe('shardpipe@0.1.0');
    // The node reports the same failure from its side, naming itself and the call.
    await expect.poll(() => receiver.events.filter((e) => e.tags?.command === 'store start').length, { timeout: 10_000 }).toBeGreaterThanOrEqual(1);
    const fromNode = receiver.events.find((e) => e.tags?.command === 'store start')!;
    expect(fromNode.tags).toMatchObject({ node: node.address, method: 'Get', code: 'STORE_INTERNAL' });

    await mkdir(tmp.sub('backups'));
    const before = receiver.events.length;
    const backup = await cli(['backup', 'run', '--target', `file://${tmp.sub('backups')}`, '--data-dir', tmp.sub('cli-backup'), '--json']);
    expect(backup.code, backup.stderr.slice(-2000)).toBe(1);
    expect(backup.stderr).toContain('BACKUP_SHARD_FAILED');
    const fromJob = receiver.events.slice(before).filter((e) => e.tags?.command === 'backup run');
    expect(fromJob.length).toBeGreaterThanOrEqual(1);
    // The shard job fails with the scan's STORE_INTERNAL, naming the partition and the key (once: not retried).
    expect(fromJob[0]!.tags).toMatchObject({ queue: 'shardpipe-backup-shard', module: 'backup-worker' });
    expect(fromJob[0]!.exception!.values.at(-1)!.value).toContain(`partition 0: unreadable record`);
    expect(fromJob[0]!.exception!.values.at(-1)!.value).toContain(Buffer.from('crash-key').toString('hex'));
    expect(backup.stderr).toContain('STORE_INTERNAL');
    expect(fromJob[0]!.tags!.jobId).toBeTruthy();
    expect(fromJob[0]!.tags!.backupId).toMatch(/^\d{8}T\d{6}Z-/);
    expect(fromJob[0]!.tags!.shard).toMatch(/^\d+$/);
    // The job's trace (the CLI's operation span, carried in the job data), as on its log lines.
    expect(fromJob[0]!.tags!.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(fromJob[0]!.tags!.traceId).not.toMatch(/^0+$/);
    // BACKUP_SHARD_FAILED, the command's own outcome, is a stable code: not reported.
    expect(receiver.events.some((e) => e.tags?.code === 'BACKUP_SHARD_FAILED')).toBe(false);

    for (const envelope of receiver.envelopes) for (const secret of secrets) expect(envelope.raw).not.toContain(secret);
  });

  it('a node run with --log-level silent still reports an unexpected error (reports do not depend on the log level), and logs nothing', async () => {
    // Follows the previous test: the unreadable record is still in partition 0.
    const node = cluster.nodes[0]!;
    await node.stop();
    const quiet = new NodeProcess(node.address, node.dataDir, undefined, ['--auth-token-file', tokenFile, '--log-level', 'silent']);
    await quiet.start();
    try {
      const before = receiver.events.length;
      const get = await cli(['kv', 'get', 'crash-key']);
      expect(get.code, get.stderr).toBe(1);
      expect(get.stderr).toContain('STORE_INTERNAL');
      await expect.poll(() => receiver.events.slice(before).filter((e) => e.tags?.command === 'store start').length, { timeout: 10_000 }).toBeGreaterThanOrEqual(1);
      const fromNode = receiver.events.slice(before).find((e) => e.tags?.command === 'store start')!;
      expect(fromNode.tags).toMatchObject({ node: node.address, method: 'Get', code: 'STORE_INTERNAL' });
      expect(fromNode.exception!.values.at(-1)!.value).toContain('unreadable record');
      // Silent: the error line that carried the report was not written.
      expect(quiet.stderr.split('\n').filter((l) => l.startsWith('{'))).toEqual([]);
      for (const envelope of receiver.envelopes) for (const secret of secrets) expect(envelope.raw).not.toContain(secret);
    } finally {
      await quiet.stop();
      await node.start();
    }
  });
});
