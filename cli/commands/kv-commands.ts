import type { Command } from 'commander';
import { parseDurationMs } from '../../common/index.js';
import { MAX_TTL_MS, StoreError, type StoredRecord } from '../../store/index.js';
import { EXIT, decodeArg, encodeOut, parseEncoding, parseKey, parsePositiveInt, withClient, type Encoding } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { SEEDS_HELP } from '../common-options.js';

interface CommonOptions {
  seeds?: string;
  json?: boolean;
  encoding: string;
}

/** Reported when a kv command ends without the outcome asked for (missing key, failed CAS). */
export class KvOutcomeError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.exitCode = exitCode;
  }
}

export function registerKvCommands(program: Command, ctx: CliContext): void {
  const kv = program.command('kv').description('read and write single keys');
  const common = (cmd: Command): Command =>
    cmd
      .option('--seeds <list>', SEEDS_HELP)
      .option('--json', 'machine-readable output')
      .option('--encoding <enc>', 'how keys and values are given and shown: utf8 or base64', 'utf8');

  common(kv.command('get <key>').description('print a key\'s value (exit 3 when absent)')).action(async (keyText: string, opts: CommonOptions) => {
    const encoding = parseEncoding(opts.encoding);
    const key = parseKey(keyText, encoding);
    const record = await withClient(ctx.seeds(opts.seeds), ctx, (c) => c.get(key));
    if (record === undefined) throw new KvOutcomeError(`key "${keyText}" not found`, EXIT.notFound);
    ctx.print(opts.json ? JSON.stringify(entryJson(key.bytes, record, encoding)) : encodeOut(record.value, encoding));
  });

  common(kv.command('put <key> <value>').description('write a value (with --etag: only if the key\'s etag still matches; exit 4 otherwise)'))
    .option('--ttl <duration>', 'expire after this long, e.g. 30s, 5m, 1h (at most 36500d)')
    .option('--etag <n>', 'compare-and-set: the current etag (0 = the key must not exist)')
    .action(async (keyText: string, valueText: string, opts: CommonOptions & { ttl?: string; etag?: string }) => {
      const encoding = parseEncoding(opts.encoding);
      const key = parseKey(keyText, encoding);
      const value = decodeArg(valueText, encoding, 'value');
      // Checked before anything is sent: a bad flag must not leave a write behind.
      const ttlMs = opts.ttl === undefined ? undefined : parseDurationMs(opts.ttl, { name: '--ttl', maxMs: MAX_TTL_MS });
      const expectedEtag = opts.etag === undefined ? undefined : parsePositiveInt(opts.etag, '--etag');
      const record = await withClient(ctx.seeds(opts.seeds), ctx, (c) =>
        c.put(key, value, { ttlMs, expectedEtag }),
      ).catch(conflictToOutcome);
      ctx.print(opts.json ? JSON.stringify(entryJson(key.bytes, record, encoding)) : `etag ${record.etag}`);
    });

  common(kv.command('del <key>').description('delete a key (exit 3 when absent; with --etag, exit 4 on mismatch)'))
    .option('--etag <n>', 'delete only if the key\'s etag still matches')
    .action(async (keyText: string, opts: CommonOptions & { etag?: string }) => {
      const encoding = parseEncoding(opts.encoding);
      const key = parseKey(keyText, encoding);
      const deleted = await withClient(ctx.seeds(opts.seeds), ctx, (c) =>
        c.delete(key, { expectedEtag: opts.etag === undefined ? undefined : parsePositiveInt(opts.etag, '--etag') }),
      ).catch(conflictToOutcome);
      if (!deleted) throw new KvOutcomeError(`key "${keyText}" not found`, EXIT.notFound);
      ctx.print(opts.json ? JSON.stringify({ key: keyText, deleted }) : 'deleted');
    });

  common(kv.command('scan').description('list entries in key order across partitions (--json: one object per line)'))
    .option('--start <key>', 'first key (inclusive); default: the beginning')
    .option('--end <key>', 'end key (exclusive); default: the end')
    .option('--limit <n>', 'most entries to print (0 = all)', '100')
    .action(async (opts: CommonOptions & { start?: string; end?: string; limit: string }) => {
      const encoding = parseEncoding(opts.encoding);
      const start = opts.start === undefined ? Buffer.alloc(0) : parseKey(opts.start, encoding).bytes;
      const end = opts.end === undefined ? Buffer.alloc(0) : parseKey(opts.end, encoding).bytes;
      const limit = parsePositiveInt(opts.limit, '--limit');
      await withClient(ctx.seeds(opts.seeds), ctx, async (c) => {
        for await (const batch of c.scanAll(start, end, { limit })) {
          for (const e of batch) {
            ctx.print(opts.json ? JSON.stringify(entryJson(e.key, e, encoding)) : `${encodeOut(e.key, encoding)}\t${encodeOut(e.value, encoding)}`);
          }
        }
      });
    });
}

function entryJson(key: Buffer, record: StoredRecord, encoding: Encoding): Record<string, unknown> {
  return {
    key: encodeOut(key, encoding),
    value: encodeOut(record.value, encoding),
    etag: record.etag,
    updatedAt: new Date(record.updatedAtMs).toISOString(),
    expiresAt: record.expiresAtMs > 0 ? new Date(record.expiresAtMs).toISOString() : null,
  };
}

function conflictToOutcome(err: unknown): never {
  if (err instanceof StoreError && err.code === 'STORE_ETAG_MISMATCH') {
    throw new KvOutcomeError(`etag mismatch: the key's current etag is ${err.currentEtag ?? 'unknown'}`, EXIT.conflict);
  }
  throw err;
}

