import { readFileSync } from 'node:fs';
import type { DescMessage } from '@bufbuild/protobuf';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatDurationMs, parseDurationMs } from '../../common/index.js';
import {
  FIELD_LIMITS,
  MAX_ETAG,
  MAX_KEPT_ETAG,
  MAX_TIME_MS,
  MAX_TTL_MS,
  PartitionStore,
  STORE_SERVICE_DESC,
  StoreError,
  checkRequest,
  decodeRecord,
  describeLimit,
  encodeRecord,
  requestDescOf,
} from '../../store/index.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';
import { thrownBy } from '../helpers/rejection.js';

const ctx = { maxKeyBytes: 64, maxValueBytes: 1000 };

/** Every message reachable from the request messages of every RPC. */
function requestMessages(): DescMessage[] {
  const seen = new Map<string, DescMessage>();
  const visit = (m: DescMessage): void => {
    if (seen.has(m.typeName)) return;
    seen.set(m.typeName, m);
    for (const f of m.fields) {
      if (f.fieldKind === 'message') visit(f.message);
      if (f.fieldKind === 'list' && f.listKind === 'message') visit(f.message);
    }
  };
  for (const method of STORE_SERVICE_DESC.methods) visit(method.input);
  return [...seen.values()];
}

const refusal = (fn: () => void): StoreError => thrownBy(fn, StoreError);

describe('FIELD_LIMITS', () => {
  it('documents a range for every field of every request message of store.proto, and nothing else', () => {
    const messages = requestMessages();
    expect(messages.length).toBeGreaterThanOrEqual(16);
    const fromProto = messages.flatMap((m) => m.fields.map((f) => `${m.name}.${f.name}`)).sort();
    const documented = Object.entries(FIELD_LIMITS).flatMap(([m, fields]) => Object.keys(fields).map((f) => `${m}.${f}`)).sort();
    expect(documented).toEqual(fromProto);
    expect(Object.keys(FIELD_LIMITS).sort()).toEqual(messages.map((m) => m.name).sort());
  });

  it('keeps every integer range inside exact JavaScript integers, with room after kept etags', () => {
    for (const fields of Object.values(FIELD_LIMITS)) {
      for (const limit of Object.values(fields)) {
        const int = limit.kind === 'list' ? limit.item : limit;
        if (int.kind === 'int') expect(Number.isSafeInteger(int.max)).toBe(true);
      }
    }
    expect(MAX_ETAG - MAX_KEPT_ETAG).toBeGreaterThanOrEqual(2 ** 52 - 1);
    expect(new Date(MAX_TIME_MS).toISOString()).toBe('9999-12-31T23:59:59.999Z');
    expect(Date.now() + MAX_TTL_MS).toBeLessThan(MAX_TIME_MS);
  });

  it('is the table in the README ("Field ranges"), row for row', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    for (const [message, fields] of Object.entries(FIELD_LIMITS)) {
      for (const [field, limit] of Object.entries(fields)) expect(readme).toContain(`| \`${message}.${field}\` | ${describeLimit(limit)} |`);
    }
  });

  it('describes ranges for messages', () => {
    expect(describeLimit(FIELD_LIMITS.PutRequest!.ttl_ms!)).toBe(`0–${MAX_TTL_MS} ms (0 = no expiry; now + ttl must not pass 9999-12-31)`);
    expect(describeLimit(FIELD_LIMITS.GetRequest!.key!, ctx)).toBe('1–64 bytes');
  });
});

describe('checkRequest', () => {
  it('accepts in-range requests, generated (number) and reflective (bigint) alike', () => {
    checkRequest(requestDescOf('Put'), { mapVersion: 1, key: Buffer.from('k'), value: Buffer.alloc(1000), ttlMs: MAX_TTL_MS }, ctx);
    checkRequest(requestDescOf('Put'), { mapVersion: 1n, key: Buffer.from('k'), value: Buffer.alloc(0), expectedEtag: BigInt(MAX_ETAG), ttlMs: 0n }, ctx);
    checkRequest(requestDescOf('GetPartitionMap'), {}, ctx);
  });

  it.each([
    ['Put', { mapVersion: 1, key: Buffer.from('k'), value: Buffer.alloc(0), ttlMs: MAX_TTL_MS + 1 }, 'STORE_INVALID_ARGUMENT', `PutRequest.ttl_ms is ${MAX_TTL_MS + 1}, out of range`],
    ['Put', { mapVersion: 1, key: Buffer.from('k'), value: Buffer.alloc(1001), ttlMs: 0 }, 'STORE_VALUE_TOO_LARGE', 'PutRequest.value: value is 1001 bytes, over the limit of 1000 bytes'],
    ['Get', { mapVersion: 2n ** 64n - 1n, key: Buffer.from('k') }, 'STORE_INVALID_ARGUMENT', 'GetRequest.map_version is 18446744073709551615, out of range'],
    ['Get', { mapVersion: 1, key: Buffer.alloc(0) }, 'STORE_INVALID_KEY', 'GetRequest.key: key is empty'],
    ['Scan', { mapVersion: 1, start: Buffer.alloc(0), end: Buffer.alloc(65), limit: 0, batchSize: 0, snapshotId: '' }, 'STORE_INVALID_KEY', 'ScanRequest.end: key is 65 bytes, over the limit of 64 bytes'],
    ['Scan', { mapVersion: 1, start: Buffer.alloc(0), end: Buffer.alloc(0), limit: 0, batchSize: 10_001, snapshotId: '' }, 'STORE_INVALID_ARGUMENT', 'ScanRequest.batch_size is 10001'],
    ['BulkInsert', { mapVersion: 1, rows: [{ key: Buffer.from('a'), value: Buffer.alloc(0), etag: MAX_KEPT_ETAG + 1, updatedAtMs: 0, expiresAtMs: 0 }] }, 'STORE_INVALID_ARGUMENT', 'BulkInsertRequest.rows[0].etag'],
    ['BulkInsert', { mapVersion: 1, rows: [{ key: Buffer.from('a'), value: Buffer.alloc(0), etag: 0, updatedAtMs: MAX_TIME_MS + 1, expiresAtMs: 0 }] }, 'STORE_INVALID_ARGUMENT', 'BulkInsertRequest.rows[0].updated_at_ms'],
    ['SetPartitionMap', { force: false }, 'STORE_INVALID_ARGUMENT', 'SetPartitionMapRequest.map is missing'],
    ['SetPartitionMap', { map: { version: 1, partitions: [] }, force: false }, 'STORE_INVALID_ARGUMENT', 'SetPartitionMapRequest.map.partitions has 0 items'],
    ['SetPartitionMap', { map: { version: 1, partitions: [{ id: 0, start: Buffer.alloc(0), end: Buffer.alloc(0), node: 'n'.repeat(301) }] }, force: false }, 'STORE_INVALID_ARGUMENT', 'SetPartitionMapRequest.map.partitions[0].node'],
    ['OpenSnapshot', { mapVersion: 1, partitionIds: [], leaseMs: 999 }, 'STORE_INVALID_ARGUMENT', 'OpenSnapshotRequest.lease_ms is 999'],
    ['PartitionStats', { partitionIds: new Array(65_537).fill(0) }, 'STORE_INVALID_ARGUMENT', 'PartitionStatsRequest.partition_ids has 65537 items'],
    ['SplitKeys', { mapVersion: 1, start: Buffer.alloc(0), end: Buffer.alloc(0), parts: 1001 }, 'STORE_INVALID_ARGUMENT', 'SplitKeysRequest.parts is 1001'],
  ] as const)('refuses a %s request out of range', (method, request, code, message) => {
    const err = refusal(() => checkRequest(requestDescOf(method), request, ctx));
    expect(err.code).toBe(code);
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(message);
    expect(err.context.field).toBeDefined();
  });
});

describe('decodeRecord clamps fields a record should never hold', () => {
  it('reads 2^64 − 1 etag and times as MAX_ETAG and MAX_TIME_MS', () => {
    const planted = Buffer.concat([Buffer.from([1, 1]), Buffer.alloc(24, 0xff), Buffer.from('v')]);
    expect(decodeRecord(planted)).toEqual({ etag: MAX_ETAG, updatedAtMs: MAX_TIME_MS, expiresAtMs: MAX_TIME_MS, value: Buffer.from('v') });
  });

  it('leaves in-range records exact', () => {
    const record = { value: Buffer.from('v'), etag: MAX_ETAG, updatedAtMs: MAX_TIME_MS, expiresAtMs: MAX_TIME_MS };
    expect(decodeRecord(encodeRecord(record))).toEqual(record);
  });
});

describe('parseDurationMs ranges', () => {
  it('refuses a duration above the range, naming it', () => {
    expect(() => parseDurationMs('104000000d', { name: '--ttl', maxMs: MAX_TTL_MS })).toThrow('--ttl "104000000d" is 8985600000000000 ms, out of range: allowed 0ms–36500d');
    expect(() => parseDurationMs('99999999999999999999d')).toThrow('is too long, out of range');
    expect(parseDurationMs('36500d', { maxMs: MAX_TTL_MS })).toBe(MAX_TTL_MS);
    expect(() => parseDurationMs('500ms', { minMs: 1000, name: '--lease' })).toThrow('--lease "500ms" is 500 ms, out of range: allowed 1s–');
  });

  it('formats durations in their largest exact unit', () => {
    expect(formatDurationMs(0)).toBe('0ms');
    expect(formatDurationMs(90_000)).toBe('90s');
    expect(formatDurationMs(86_400_000)).toBe('1d');
    expect(formatDurationMs(1500)).toBe('1500ms');
  });
});

describe('a partition refuses writes that would leave the ranges', () => {
  let tmp: TempDir;
  let store: PartitionStore | undefined;
  let now = Date.now();

  beforeEach(async () => {
    tmp = await makeTempDir('shardpipe-field-limits-');
  });

  afterEach(async () => {
    await store?.close();
    await tmp.remove();
  });

  it('a put whose expiry (now + ttl) would pass MAX_TIME_MS is refused and nothing is written', async () => {
    now = MAX_TIME_MS - 10_000;
    store = await PartitionStore.open(tmp.sub('p'), { sweepIntervalMs: 0, now: () => now });
    const err = await store.put(Buffer.from('k'), Buffer.from('v'), { ttlMs: 10_001 }).then(() => undefined, (e: unknown) => e as StoreError);
    expect(err?.code).toBe('STORE_INVALID_ARGUMENT');
    expect(err?.message).toContain('use a TTL of at most 10000 ms');
    expect(await store.get(Buffer.from('k'))).toBeUndefined();
    expect((await store.put(Buffer.from('k'), Buffer.from('v'), { ttlMs: 10_000 })).expiresAtMs).toBe(MAX_TIME_MS);
  });

  it('a partition whose etag sequence is used up refuses new etags with STORE_ETAG_EXHAUSTED, not a corrupt write', async () => {
    now = Date.now();
    store = await PartitionStore.open(tmp.sub('p'), { sweepIntervalMs: 0, now: () => now });
    // Below the service boundary on purpose: only a node without the range checks could do this.
    await store.bulkInsert([{ key: Buffer.from('top'), value: Buffer.from('v'), etag: MAX_ETAG }]);
    const err = await store.put(Buffer.from('k'), Buffer.from('v')).then(() => undefined, (e: unknown) => e as StoreError);
    expect(err?.code).toBe('STORE_ETAG_EXHAUSTED');
    expect(err?.retryable).toBe(false);
    expect(await store.get(Buffer.from('k'))).toBeUndefined();
    expect((await store.get(Buffer.from('top')))?.etag).toBe(MAX_ETAG);
  });

  it('fault injection: a partition whose etag sequence an older version pushed to 2^53 − 1 heals when opened', async () => {
    now = Date.now();
    const open = () => PartitionStore.open(tmp.sub('p'), { sweepIntervalMs: 0, now: () => now });
    store = await open();
    await store.put(Buffer.from('a'), Buffer.from('1'));
    await store.put(Buffer.from('b'), Buffer.from('2'));
    // What an older version accepted from a BulkInsert row (the service refuses it today).
    await store.bulkInsert([{ key: Buffer.from('poison'), value: Buffer.from('p'), etag: MAX_ETAG }]);
    expect(store.lastEtag).toBe(MAX_ETAG);
    await store.close();
    store = await open();
    expect(store.lastEtag).toBe(2);
    expect((await store.put(Buffer.from('c'), Buffer.from('3'))).etag).toBe(3);
    expect((await store.get(Buffer.from('poison')))?.etag).toBe(MAX_ETAG);
    // Overwriting the poisoned key gives it a fresh, in-range etag; the rebased sequence was persisted.
    expect((await store.put(Buffer.from('poison'), Buffer.from('q'))).etag).toBe(4);
    await store.close();
    store = await open();
    expect(store.lastEtag).toBe(4);
  });
});
