import { status } from '@grpc/grpc-js';
import { ScalarType, type DescField, type DescMessage, type DescMethod } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalTarget, newBackupId, readShardFile, shardFileName, writeShard } from '../../backup/index.js';
import { FIELD_LIMITS, Key, MAX_ETAG, MAX_TIME_MS, STORE_SERVICE_DESC, StoreClient, StoreRouter, type FieldLimit } from '../../store/index.js';
import { StoreService } from '../../store/proto/gen/shardpipe/store/v1/store.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';
import { StoreCluster } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

/**
 * Walks every field of every Store RPC from the proto descriptor and sends random and extreme
 * values through a raw gRPC client (64-bit fields as bigint, so values the generated client cannot
 * even encode go out too). The generator knows from FIELD_LIMITS (the documented spec) whether it
 * made a value out of range; the node must then answer INVALID_ARGUMENT naming the message's field,
 * and otherwise anything but a field-range refusal. Never INTERNAL, UNKNOWN or a timeout; every
 * success decodes with the generated client code; and afterwards put, scan and a backup of the
 * partitions still work.
 */

const MAX_KEY_BYTES = 64;
const MAX_VALUE_BYTES = 256;
const RUNS_PER_RPC = 1000;
const UINT64_MAX = 2n ** 64n - 1n;
const UINT32_MAX = 2n ** 32n - 1n;

/** A generated value and whether the spec says it is out of range. */
interface Gen {
  value: unknown;
  bad: boolean;
}

const ok = (value: unknown): Gen => ({ value, bad: false });

/** Values of an integer field: the range's edges, just past them, and the wire type's extremes. */
function intArb(limit: Extract<FieldLimit, { kind: 'int' }>, wireMax: bigint, asBigint: boolean, hints: bigint[]): fc.Arbitrary<Gen> {
  const min = BigInt(limit.min);
  const max = BigInt(limit.max);
  const wrap = (n: bigint): Gen => ({ value: asBigint ? n : Number(n), bad: n < min || n > max });
  const edges = [min, max, 0n, 1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 52n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, UINT64_MAX, BigInt(MAX_TIME_MS), BigInt(MAX_TIME_MS) + 1n, ...hints];
  if (min > 0n) edges.push(min - 1n);
  if (max < wireMax) edges.push(max + 1n);
  const inWire = [...new Set(edges)].filter((n) => n >= 0n && n <= wireMax);
  return fc
    .oneof(
      { weight: 4, arbitrary: fc.constantFrom(...inWire) },
      { weight: 3, arbitrary: fc.bigInt(min, max) },
      { weight: 2, arbitrary: fc.bigInt(0n, wireMax) },
      { weight: 2, arbitrary: fc.bigInt(min, min + 2000n > max ? max : min + 2000n) },
    )
    .map(wrap);
}

/** Byte strings: mostly short keys near the partition split (0x80), and lengths at and past the limit. */
function bytesArb(limit: FieldLimit): fc.Arbitrary<Gen> {
  const cap = limit.kind === 'value' ? MAX_VALUE_BYTES : MAX_KEY_BYTES;
  const minLen = limit.kind === 'key' ? 1 : 0;
  const sized = (n: number): fc.Arbitrary<Gen> => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => ({ value: b, bad: n < minLen || n > cap }));
  return fc.oneof(
    { weight: 6, arbitrary: fc.uint8Array({ minLength: minLen, maxLength: 8 }).map(ok) },
    { weight: 2, arbitrary: fc.constantFrom(new Uint8Array([0x7f, 0xff]), new Uint8Array([0x80]), new Uint8Array([0x80, 0]), new Uint8Array([0xff, 0xff, 0xff])).map(ok) },
    { weight: 1, arbitrary: fc.constantFrom(0, cap, cap + 1, cap * 4).chain(sized) },
  );
}

/** Strings: short, a held-looking snapshot id, and lengths at and past the cap (up to 100 KB). */
function stringArb(limit: Extract<FieldLimit, { kind: 'string' }>): fc.Arbitrary<Gen> {
  const sized = (n: number): fc.Arbitrary<Gen> => fc.constant({ value: 'p'.repeat(n), bad: n > limit.maxBytes });
  return fc.oneof(
    { weight: 5, arbitrary: fc.string({ maxLength: 12 }).map(ok) },
    { weight: 2, arbitrary: fc.constantFrom('', 'p0-0123456789abcdef', '127.0.0.1:1', 'localhost:99999', '[::1]:7000').map(ok) },
    { weight: 1, arbitrary: fc.constantFrom(limit.maxBytes, limit.maxBytes + 1, 100_000).chain(sized) },
    // Multi-byte characters: the cap is in bytes, not characters.
    { weight: 1, arbitrary: fc.constant({ value: 'é'.repeat(limit.maxBytes), bad: true }) },
  );
}

/** A generator for one message type, field by field from the descriptor, ranges from FIELD_LIMITS. */
function messageArb(desc: DescMessage, hints: bigint[], depth = 0): fc.Arbitrary<Gen> {
  const fields = desc.fields.map((f) => [f.localName, fieldArb(desc, f, hints, depth)] as const);
  return fc.tuple(...fields.map(([, arb]) => arb)).map((gens) => {
    const value: Record<string, unknown> = {};
    let bad = false;
    gens.forEach((g, i) => {
      if (g.value !== undefined) value[fields[i]![0]] = g.value;
      bad ||= g.bad;
    });
    // A BulkInsert carries its rows one way: per-row rows or one packed batch.
    if (desc.name === 'BulkInsertRequest' && value.packed !== undefined && (value.rows as unknown[] | undefined)?.length) bad = true;
    return { value, bad };
  });
}

/**
 * Packed batches (PackedRows): rows whose keys, values and metadata come from BulkRow's ranges
 * (out of range ones make the batch bad), with or without metadata, and sometimes parts that do
 * not fit together (an unknown format, a count that is off, a byte too many in data or meta).
 */
function packedArb(hints: bigint[]): fc.Arbitrary<Gen> {
  const limits = FIELD_LIMITS.BulkRow!;
  const int = (name: string): Extract<FieldLimit, { kind: 'int' }> => limits[name] as Extract<FieldLimit, { kind: 'int' }>;
  const row = fc.tuple(bytesArb(limits.key!), bytesArb(limits.value!), intArb(int('etag'), UINT64_MAX, true, hints), intArb(int('updated_at_ms'), UINT64_MAX, true, hints), intArb(int('expires_at_ms'), UINT64_MAX, true, hints));
  const broken = fc.constantFrom('none', 'none', 'none', 'none', 'format', 'count', 'data', 'meta');
  return fc.tuple(fc.array(row, { maxLength: 6 }), fc.boolean(), broken, fc.integer({ min: 0, max: 2 ** 32 - 1 })).map(([rows, withMeta, breakage, format]) => {
    const lengths = Buffer.alloc(rows.length * 8);
    const meta = Buffer.alloc(withMeta ? rows.length * 24 : 0);
    let bad = false;
    rows.forEach(([key, value, ...fields], i) => {
      lengths.writeUInt32LE((key.value as Uint8Array).length, i * 8);
      lengths.writeUInt32LE((value.value as Uint8Array).length, i * 8 + 4);
      bad ||= key.bad || value.bad;
      if (!withMeta) return;
      fields.forEach((f, j) => meta.writeBigUInt64LE(f.value as bigint, i * 24 + j * 8));
      bad ||= fields.some((f) => f.bad);
    });
    const message = { format: 1, count: rows.length, lengths, data: Buffer.concat(rows.flatMap(([k, v]) => [k.value as Uint8Array, v.value as Uint8Array])), meta };
    if (breakage === 'format') message.format = format === 1 ? 2 : format;
    else if (breakage === 'count') message.count = rows.length + 1;
    else if (breakage === 'data') message.data = Buffer.concat([message.data, Buffer.from([0])]);
    else if (breakage === 'meta') message.meta = Buffer.concat([message.meta, Buffer.from([0])]);
    return { value: message, bad: bad || breakage !== 'none' };
  });
}

function fieldArb(desc: DescMessage, field: DescField, hints: bigint[], depth: number): fc.Arbitrary<Gen> {
  const limit = FIELD_LIMITS[desc.name]?.[field.name];
  if (limit === undefined) throw new Error(`no range for ${desc.name}.${field.name}`);
  if (field.fieldKind === 'list') {
    if (limit.kind !== 'list') throw new Error(`${desc.name}.${field.name}: list without a list range`);
    const item = field.listKind === 'message' ? messageArb(field.message, hints, depth + 1) : scalarArb(field.scalar!, limit.item, hints);
    const some = fc.array(item, { maxLength: depth > 0 ? 3 : 6 }).map((gens) => ({ value: gens.map((g) => g.value), bad: gens.some((g) => g.bad) || gens.length < (limit.minItems ?? 0) }));
    // Too many items, cheaply: one in-range item repeated. BulkInsert rows are bounded first by the
    // message size (a million rows do not fit in a BulkInsert the node receives), so not generated.
    if (limit.maxItems > 100_000) return some;
    const tooMany =
      field.listKind === 'message'
        ? fc.constant({ value: new Array(limit.maxItems + 1).fill({}), bad: true })
        : item.filter((g) => !g.bad).map((g) => ({ value: new Array(limit.maxItems + 1).fill(g.value), bad: true }));
    return fc.oneof({ weight: 40, arbitrary: some }, { weight: 1, arbitrary: tooMany });
  }
  if (field.fieldKind === 'message' && field.message.name === 'PackedRows') {
    return fc.oneof({ weight: 2, arbitrary: fc.constant(ok(undefined)) }, { weight: 1, arbitrary: packedArb(hints) });
  }
  if (field.fieldKind === 'message') {
    const present = messageArb(field.message, hints, depth + 1);
    const required = limit.kind === 'message' && limit.required;
    const arbs = [{ weight: 12, arbitrary: present }, { weight: 1, arbitrary: fc.constant({ value: undefined, bad: required }) }];
    // Random maps are almost never valid; half the maps are, so installs (and forced ones) happen too.
    if (field.message.name === 'PartitionMapProto') arbs.push({ weight: 12, arbitrary: validMapArb() });
    return fc.oneof(...arbs);
  }
  if (field.fieldKind !== 'scalar') throw new Error(`${desc.name}.${field.name}: ${field.fieldKind} fields are not generated`);
  const scalar = favoured(field.name, scalarArb(field.scalar, limit, hints));
  // proto3 `optional` fields (expected_etag) are also sent absent.
  return field.proto.proto3Optional ? fc.oneof(scalar, fc.constant(ok(undefined))) : scalar;
}

/**
 * Leans some fields towards values that get past the node's other checks (its map version, no
 * snapshot, an open range end), so that in-range requests also succeed and write or read data.
 */
function favoured(name: string, general: fc.Arbitrary<Gen>): fc.Arbitrary<Gen> {
  const lean: Record<string, unknown> = { map_version: 1n, snapshot_id: '', end: new Uint8Array(0) };
  if (!(name in lean)) return general;
  return fc.oneof({ weight: 3, arbitrary: fc.constant(ok(lean[name])) }, { weight: 2, arbitrary: general });
}

/** A valid map (one or two partitions on some address) at versions around and far from the node's. */
function validMapArb(): fc.Arbitrary<Gen> {
  const version = fc.constantFrom(1n, 2n, 1001n, 1002n, 5000n, 2n ** 53n - 1n);
  const node = fc.constantFrom('127.0.0.1:1', 'localhost:7001', '[::1]:9');
  return fc.tuple(version, node, fc.boolean()).map(([v, n, split]) => ({
    value: {
      version: v,
      partitions: split
        ? [{ id: 0, start: new Uint8Array(0), end: new Uint8Array([0x80]), node: n }, { id: 7, start: new Uint8Array([0x80]), end: new Uint8Array(0), node: n }]
        : [{ id: 3, start: new Uint8Array(0), end: new Uint8Array(0), node: n }],
    },
    bad: false,
  }));
}

function scalarArb(scalar: ScalarType, limit: FieldLimit, hints: bigint[]): fc.Arbitrary<Gen> {
  switch (scalar) {
    case ScalarType.BOOL:
      return fc.boolean().map(ok);
    case ScalarType.UINT64:
      if (limit.kind !== 'int') throw new Error('uint64 without an int range');
      return intArb(limit, UINT64_MAX, true, hints);
    case ScalarType.UINT32:
      if (limit.kind !== 'int') throw new Error('uint32 without an int range');
      return intArb(limit, UINT32_MAX, false, hints);
    case ScalarType.BYTES:
      return bytesArb(limit);
    case ScalarType.STRING:
      if (limit.kind !== 'string') throw new Error('string without a string range');
      return stringArb(limit);
    default:
      throw new Error(`scalar type ${scalar} is not generated`);
  }
}

/** Codes a node may answer a hostile request with: a refusal, never a crash or a hang. */
const ACCEPTABLE = new Set([status.OK, status.INVALID_ARGUMENT, status.FAILED_PRECONDITION, status.NOT_FOUND, status.ABORTED, status.RESOURCE_EXHAUSTED]);

describe('property: every field of every RPC, random and extreme values, against one real node', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  /** The client's routing core: its channels, for raw calls. */
  let router: StoreRouter;
  let raw: RawStoreClient;
  let dir: TempDir;
  const counts: Record<string, { ok: number; refused: number; outOfRange: number; rawBytes: number }> = {};

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2, extraArgs: ['--max-key-bytes', String(MAX_KEY_BYTES), '--max-value-bytes', String(MAX_VALUE_BYTES)] });
    router = new StoreRouter({ seeds: cluster.seeds });
    client = new StoreClient(router);
    raw = new RawStoreClient(cluster.seeds[0]!);
    dir = await makeTempDir();
  });

  afterAll(async () => {
    raw?.close();
    client?.close();
    await cluster?.close();
    await dir?.remove();
    // For the report: how many cases each RPC got and how they ended.
    console.log(JSON.stringify(counts));
  });

  /** Brings the node back to the test's map (version 1) if a case installed another one. */
  async function restoreMap(): Promise<void> {
    const current = await router.connection(cluster.seeds[0]!).unary('getPartitionMap', {}, { deadline: Date.now() + 5000 });
    if (current.version === 1 && current.partitions.length === cluster.map.partitions.length && current.partitions.every((p) => p.node === cluster.seeds[0])) return;
    const results = await client.installMap(cluster.map, { force: true });
    expect(results.every((r) => r.installed && r.error === undefined)).toBe(true);
  }

  /** Put, scan everything, and back up through the snapshot scan + shard writer: all must work. */
  async function partitionStillWorks(method: string): Promise<void> {
    const key = Key.fromUtf8(`after-${method}`);
    const put = await client.put(key, Buffer.from('ok'));
    expect(put.etag).toBeLessThanOrEqual(MAX_ETAG);
    let rows = 0;
    for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) rows += batch.length;
    expect(rows).toBeGreaterThan(0);
    const target = new LocalTarget(dir.path);
    const backupId = newBackupId();
    const snapshots = await client.openSnapshots({ leaseMs: 60_000 });
    try {
      const shard = await writeShard(client, target, { backupId, index: 0, start: Buffer.alloc(0), end: Buffer.alloc(0), leases: snapshots.leases });
      let read = 0;
      for await (const batch of readShardFile(target, backupId, shardFileName(0))) read += batch.length;
      expect(read).toBe(shard.rows);
      // Entries can expire between the scan above and the snapshot, never appear.
      expect(shard.rows).toBeLessThanOrEqual(rows + 1);
    } finally {
      await client.releaseSnapshots(snapshots.leases);
    }
  }

  const methods: DescMethod[] = STORE_SERVICE_DESC.methods;

  it('covers every RPC of the service', () => {
    expect(methods.map((m) => m.name).sort()).toEqual(Object.values(StoreService).map((m) => m.path.split('/').pop()!).sort());
  });

  it.each(methods.map((m) => [m.name, m] as const))(`%s: ${RUNS_PER_RPC} random and extreme requests, then the partitions still work`, async (name, method) => {
    const tally = (counts[name] = { ok: 0, refused: 0, outOfRange: 0, rawBytes: 0 });
    const generated = STORE_SERVICE_DEFINITION_BY_NAME(name);
    // Map versions the node has or is near, so in-range requests get past the version check.
    const hints = [1n, 2n, 1001n, 1002n];
    const request = fc.oneof(
      { weight: 19, arbitrary: messageArb(method.input, hints).map((g) => ({ kind: 'message' as const, ...g })) },
      // Arbitrary bytes as the request: malformed wire data.
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => ({ kind: 'bytes' as const, value: b, bad: false })) },
    );
    await fc.assert(
      fc.asyncProperty(request, async (req) => {
        const outcome = req.kind === 'bytes' ? await raw.callBytes(name, Buffer.from(req.value), 5000) : await raw.call(name, req.value as never, 5000);
        if (req.kind === 'bytes') tally.rawBytes++;
        if (outcome.ok) {
          tally.ok++;
          // Whatever the node answers, the generated client code decodes (no MAX_SAFE_INTEGER failures).
          const responses = outcome.messages.map((m) => generated.responseDeserialize(m) as Record<string, unknown>);
          if ((name === 'Multi' || name === 'MultiStream') && req.bad) {
            // A well-formed Multi answers an out-of-range op in that op's own slot, not for the whole call.
            const slots = responses[0]!.results as Array<{ code: number; errorCode: string }>;
            expect(slots.some((r) => r.code === status.INVALID_ARGUMENT && r.errorCode.startsWith('STORE_')), 'an out-of-range op got no INVALID_ARGUMENT slot').toBe(true);
            return;
          }
          expect(req.bad, 'an out-of-range request was accepted').toBe(false);
          if (name === 'OpenSnapshot') {
            const ids = (responses[0]!.snapshots as Array<{ snapshotId: string }>).map((s) => s.snapshotId);
            if (ids.length > 0) await raw.call('ReleaseSnapshot', { snapshotIds: ids });
          }
          if (name === 'SetPartitionMap') await restoreMap();
          return;
        }
        tally.refused++;
        const { error, code } = outcome;
        expect(ACCEPTABLE.has(error.code), `${name} answered ${status[error.code]}: ${error.details}`).toBe(true);
        expect(code, `${name}: no shardpipe-error-code in ${error.details}`).toMatch(/^STORE_/);
        expect(error.details.length).toBeLessThanOrEqual(2100);
        if (req.bad) {
          tally.outOfRange++;
          expect(error.code, `${name}: out of range but ${status[error.code]}: ${error.details}`).toBe(status.INVALID_ARGUMENT);
          expect(error.details).toContain(`${method.input.name}.`);
        } else if (req.kind === 'message') {
          // In range: whatever the node refuses, it is not the field check of this message.
          expect(error.details, `${name}: an in-range request was refused as out of range`).not.toMatch(new RegExp(`^${method.input.name}\\.\\S+ (is|has) .*out of range`));
        }
      }),
      { numRuns: RUNS_PER_RPC, endOnFailure: true },
    );
    await restoreMap();
    await partitionStillWorks(name);
  });
});

function STORE_SERVICE_DEFINITION_BY_NAME(name: string): { responseDeserialize: (b: Buffer) => unknown } {
  const found = Object.values(StoreService).find((m) => m.path.endsWith(`/${name}`));
  if (found === undefined) throw new Error(`no generated method ${name}`);
  return found as unknown as { responseDeserialize: (b: Buffer) => unknown };
}
