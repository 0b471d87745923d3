import type { Command } from 'commander';
import { parseDurationMs } from '../../common/index.js';
import type { StoreError, StoredRecord } from '../../store/index.js';
import { EXIT, decodeArg, encodeOut, parseEncoding, parsePositiveInt, type Encoding } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { CliUsageError } from '../cli-env.js';
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

  common(kv.command('get <key>').description('print a key\'s value (exit 3 when absent); --fields: only those parts of its JSON document'))
    .option('--fields <list>', 'partial get of a JSON document: comma-separated fields, dotted (b.c = /b/c, tags.0 = /tags/0) or JSON Pointers (/b/c); repeatable', collect, [])
    .option('--field <pointer>', 'one JSON Pointer taken as is, for names holding "," or "." (/a.b is member "a.b"); repeatable', collect, [])
    .action(async (keyText: string, opts: CommonOptions & { fields: string[]; field: string[] }) => {
    const { parseKey, withClient } = await storeApi();
    const encoding = parseEncoding(opts.encoding);
    const key = parseKey(keyText, encoding);
    const fields = [...opts.fields.flatMap((list) => list.split(',')).map(fieldToPointer), ...opts.field.map(checkedPointer)];
    const record = await withClient(ctx.seeds(opts.seeds), ctx, (c) => c.get(key, fields.length > 0 ? { fields } : {}));
    if (record === undefined) throw new KvOutcomeError(`key "${keyText}" not found`, EXIT.notFound);
    ctx.print(opts.json ? JSON.stringify(entryJson(key.bytes, record, encoding)) : encodeOut(record.value, encoding));
  });

  common(kv.command('put <key> <value>').description('write a value (with --etag: only if the key\'s etag still matches; exit 4 otherwise)'))
    .option('--ttl <duration>', 'expire after this long, e.g. 30s, 5m, 1h (at most 36500d)')
    .option('--etag <n>', 'compare-and-set: the current etag (0 = the key must not exist)')
    .action(async (keyText: string, valueText: string, opts: CommonOptions & { ttl?: string; etag?: string }) => {
      const { MAX_TTL_MS, StoreError, parseKey, withClient } = await storeApi();
      const encoding = parseEncoding(opts.encoding);
      const key = parseKey(keyText, encoding);
      const value = decodeArg(valueText, encoding, 'value');
      // Checked before anything is sent: a bad flag must not leave a write behind.
      const ttlMs = opts.ttl === undefined ? undefined : parseDurationMs(opts.ttl, { name: '--ttl', maxMs: MAX_TTL_MS });
      const expectedEtag = opts.etag === undefined ? undefined : parsePositiveInt(opts.etag, '--etag');
      const record = await withClient(ctx.seeds(opts.seeds), ctx, (c) =>
        c.put(key, value, { ttlMs, expectedEtag }),
      ).catch((err: unknown) => conflictToOutcome(err, StoreError));
      ctx.print(opts.json ? JSON.stringify(entryJson(key.bytes, record, encoding)) : `etag ${record.etag}`);
    });

  common(kv.command('patch <key> <patch>').description('change part of a key\'s JSON document on its node, atomically: a JSON Merge Patch (default) or a JSON Patch (--json-patch); exit 3 when absent, 4 on an etag mismatch or a failed JSON Patch test'))
    .option('--json-patch', 'the patch is a JSON Patch (RFC 6902): an array of operations; default: a JSON Merge Patch (RFC 7396)')
    .option('--if-etag <n>', 'compare-and-set: patch only if the document\'s current etag is this')
    .option('--ttl <duration>', 'expire this long from now, e.g. 30s, 5m, 1h (0 = never; at most 36500d); default: keep the document\'s expiry')
    .action(async (keyText: string, patchText: string, opts: CommonOptions & { jsonPatch?: boolean; ifEtag?: string; ttl?: string }) => {
      const { MAX_TTL_MS, StoreError, parseKey, withClient } = await storeApi();
      const encoding = parseEncoding(opts.encoding);
      const key = parseKey(keyText, encoding);
      // Checked before anything is sent: a bad flag or patch must not reach the node.
      let patch: unknown;
      try {
        patch = JSON.parse(patchText);
      } catch (err) {
        throw new CliUsageError(`<patch> is not JSON: ${(err as Error).message}`);
      }
      if (opts.jsonPatch && !Array.isArray(patch)) throw new CliUsageError('with --json-patch, <patch> must be a JSON array of operations, e.g. \'[{"op":"add","path":"/a","value":1}]\'');
      const ttlMs = opts.ttl === undefined ? undefined : parseDurationMs(opts.ttl, { name: '--ttl', maxMs: MAX_TTL_MS });
      const ifEtag = opts.ifEtag === undefined ? undefined : parsePositiveInt(opts.ifEtag, '--if-etag');
      const result = await withClient(ctx.seeds(opts.seeds), ctx, (c) =>
        c.patch(key, Buffer.from(patchText), { mode: opts.jsonPatch ? 'json-patch' : 'merge', ifEtag, ttlMs, returnDocument: opts.json === true }),
      ).catch((err: unknown) => {
        if (err instanceof StoreError && err.code === 'STORE_NOT_FOUND') throw new KvOutcomeError(`key "${keyText}" not found`, EXIT.notFound);
        if (err instanceof StoreError && err.code === 'STORE_PATCH_TEST_FAILED') throw new KvOutcomeError(err.message, EXIT.conflict);
        return conflictToOutcome(err, StoreError);
      });
      if (!opts.json) {
        ctx.print(`etag ${result.etag}`);
        return;
      }
      ctx.print(
        JSON.stringify({
          key: encodeOut(key.bytes, encoding),
          etag: result.etag,
          updatedAt: new Date(result.updatedAtMs).toISOString(),
          expiresAt: result.expiresAtMs > 0 ? new Date(result.expiresAtMs).toISOString() : null,
          document: JSON.parse(result.document!.toString('utf8')) as unknown,
        }),
      );
    });

  common(kv.command('del <key>').description('delete a key (exit 3 when absent; with --etag, exit 4 on mismatch)'))
    .option('--etag <n>', 'delete only if the key\'s etag still matches')
    .action(async (keyText: string, opts: CommonOptions & { etag?: string }) => {
      const { StoreError, parseKey, withClient } = await storeApi();
      const encoding = parseEncoding(opts.encoding);
      const key = parseKey(keyText, encoding);
      const deleted = await withClient(ctx.seeds(opts.seeds), ctx, (c) =>
        c.delete(key, { expectedEtag: opts.etag === undefined ? undefined : parsePositiveInt(opts.etag, '--etag') }),
      ).catch((err: unknown) => conflictToOutcome(err, StoreError));
      if (!deleted) throw new KvOutcomeError(`key "${keyText}" not found`, EXIT.notFound);
      ctx.print(opts.json ? JSON.stringify({ key: keyText, deleted }) : 'deleted');
    });

  common(kv.command('scan').description('list entries in key order across partitions (--json: one object per line)'))
    .option('--start <key>', 'first key (inclusive); default: the beginning')
    .option('--end <key>', 'end key (exclusive); default: the end')
    .option('--limit <n>', 'most entries to print (0 = all)', '100')
    .action(async (opts: CommonOptions & { start?: string; end?: string; limit: string }) => {
      const { parseKey, withClient } = await storeApi();
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

/** store/ and the CLI's helpers on it, loaded by the kv action that runs, not when the command tree is built. */
async function storeApi(): Promise<typeof import('../../store/index.js') & typeof import('../store-io.js')> {
  const [store, io] = await Promise.all([import('../../store/index.js'), import('../store-io.js')]);
  return { ...store, ...io };
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * A --fields item as a JSON Pointer: one starting with "/" is a pointer as is; otherwise dots
 * separate names (`b.c` → `/b/c`), with "~" escaped as "~0".
 */
export function fieldToPointer(field: string): string {
  const f = field.trim();
  if (f.startsWith('/')) return checkedPointer(f);
  if (f.includes('/')) throw new CliUsageError(`--fields item "${f}" holds "/": write a JSON Pointer starting with "/" (e.g. /${f}), or use --field`);
  const names = f.split('.');
  if (names.some((n) => n === '')) throw new CliUsageError(`--fields item "${f}" has an empty name: use dotted names (a.b.c) or a JSON Pointer (/a/b)`);
  return names.map((n) => `/${n.replace(/~/g, '~0')}`).join('');
}

function checkedPointer(pointer: string): string {
  if (pointer !== '' && !pointer.startsWith('/')) throw new CliUsageError(`--field "${pointer}" is not a JSON Pointer: start it with "/" (RFC 6901)`);
  if (/~(?![01])/.test(pointer)) throw new CliUsageError(`JSON Pointer "${pointer}" has a "~" not followed by 0 or 1: write "~" as "~0" and "/" inside a name as "~1"`);
  return pointer;
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

function conflictToOutcome(err: unknown, storeError: typeof StoreError): never {
  if (err instanceof storeError && err.code === 'STORE_ETAG_MISMATCH') {
    throw new KvOutcomeError(`etag mismatch: the key's current etag is ${err.currentEtag ?? 'unknown'}`, EXIT.conflict);
  }
  throw err;
}

