import { Server, ServerCredentials, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, findFreePort } from '../../common/index.js';
import { Key, MAX_KEPT_ETAG, MAX_TIME_MS, PackedRows, PackedRowsBuilder, PartitionMap, StoreClient, StoreNode, type BulkRowInput } from '../../store/index.js';
import { STORE_SERVICE_DEFINITION, createStoreHandlers } from '../../store/store-service.js';
import { BulkInsertRequest, BulkInsertResponse, type PackedRows as PackedRowsProto } from '../../store/proto/gen/shardpipe/store/v1/store.js';
import { RawStoreClient } from '../helpers/raw-store-call.js';
import { StoreCluster } from '../helpers/store-cluster.js';
import { makeTempDir } from '../helpers/temp-dir.js';

/**
 * Packed BulkInsert batches (store.proto PackedRows) against real nodes: round trips through the
 * client, the node's answers to malformed batches (sent raw), longest-prefix acceptance across
 * partitions, and old (per-row) and new (packed) clients leaving identical stored state.
 */

const ALL = Buffer.alloc(0);
const MAX_KEY_BYTES = 64;
const MAX_VALUE_BYTES = 1000;
const limits = ['--max-key-bytes', String(MAX_KEY_BYTES), '--max-value-bytes', String(MAX_VALUE_BYTES)];

/** `count` sorted rows over the whole keyspace (first two bytes spread, so every partition gets some), with metadata when asked. */
function rowsOf(count: number, seed: number, withMeta: boolean): BulkRowInput[] {
  const now = Date.now();
  return Array.from({ length: count }, (_, i) => {
    const key = Buffer.alloc(8);
    key.writeUInt16BE(Math.floor((i * 65536) / count), 0);
    key.writeUInt32BE(i, 4);
    const value = Buffer.from(`v${seed}-${i}-${'x'.repeat(i % 50)}`);
    if (!withMeta) return { key, value };
    return { key, value, etag: i % 3 === 0 ? 0 : 1000 + i, updatedAtMs: i % 4 === 0 ? 0 : now - i, expiresAtMs: i % 5 === 0 ? now + 3_600_000 : 0 };
  });
}

function packedOf(rows: readonly BulkRowInput[]): PackedRows {
  const builder = new PackedRowsBuilder();
  for (const r of rows) builder.add(r.key, r.value, r);
  return builder.finish();
}

function encode(mapVersion: number, packed: PackedRowsProto | undefined, rows: BulkInsertRequest['rows'] = []): Buffer {
  return Buffer.from(BulkInsertRequest.encode({ mapVersion, rows, packed }).finish());
}

async function storedCount(client: StoreClient): Promise<number> {
  let total = 0;
  for (const node of await client.stats()) {
    if (!node.result.ok) throw node.result.error;
    for (const p of node.result.partitions) total += p.approxCount;
  }
  return total;
}

describe('packed BulkInsert against one real node (2 partitions)', () => {
  let cluster: StoreCluster;
  let client: StoreClient;
  let raw: RawStoreClient;

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 2, extraArgs: limits });
    client = new StoreClient({ seeds: cluster.seeds });
    raw = new RawStoreClient(cluster.seeds[0]!);
  });

  afterAll(async () => {
    raw?.close();
    client?.close();
    await cluster?.close();
  });

  it('round trip: PackedRows input lands across both partitions with its etags, times and expiry', async () => {
    const rows = rowsOf(3000, 1, true);
    const before = await storedCount(client);
    // One chunk spanning both partitions: the client cuts it at the boundary, by views.
    const result = await client.bulkPutAll([packedOf(rows)], { batchMaxRows: 700 });
    expect(result.rows).toBe(3000);
    expect(result.partialAccepts).toBe(0);
    expect(await storedCount(client)).toBe(before + 3000);
    for (const i of [0, 1, 2, 4, 5, 1499, 1500, 2999]) {
      const row = rows[i]!;
      const got = await client.get(Key.fromBytes(row.key));
      expect(got?.value.equals(row.value)).toBe(true);
      if (row.etag! > 0) expect(got?.etag).toBe(row.etag);
      if (row.updatedAtMs! > 0) expect(got?.updatedAtMs).toBe(row.updatedAtMs);
      expect(got?.expiresAtMs).toBe(row.expiresAtMs);
    }
  });

  it('longest prefix: a raw packed batch across the boundary is accepted up to it, and the response names the next key', async () => {
    const rows = rowsOf(400, 2, false).map((r) => ({ ...r, key: Buffer.concat([r.key, Buffer.from('p')]) }));
    const firstOutside = rows.findIndex((r) => r.key[0]! >= 0x80);
    expect(firstOutside).toBeGreaterThan(0);
    const outcome = await raw.callBytes('BulkInsert', encode(1, packedOf(rows).toMessage()));
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    const response = BulkInsertResponse.decode(outcome.bytes);
    expect(response.accepted).toBe(firstOutside);
    expect(Buffer.from(response.nextKey).equals(rows[firstOutside]!.key)).toBe(true);
    expect(await client.get(Key.fromBytes(rows[firstOutside - 1]!.key))).toBeDefined();
    expect(await client.get(Key.fromBytes(rows[firstOutside]!.key))).toBeUndefined();
  });

  describe('malformed batches: INVALID_ARGUMENT naming what is wrong, and nothing written', () => {
    const good = (): { rows: BulkRowInput[]; message: PackedRowsProto } => {
      const rows = rowsOf(5, 3, true).map((r) => ({ ...r, key: Buffer.concat([Buffer.from([0x10]), r.key]) }));
      return { rows, message: packedOf(rows).toMessage() };
    };
    const withRow = (i: number, row: BulkRowInput): PackedRowsProto => {
      const rows = good().rows;
      rows[i] = row;
      return packedOf(rows).toMessage();
    };
    const metaWith = (row: number, field: number, value: bigint): PackedRowsProto => {
      const { message } = good();
      const meta = Buffer.from(message.meta);
      meta.writeBigUInt64LE(value, row * 24 + field * 8);
      return { ...message, meta };
    };
    const cases: Array<[string, () => Buffer, string, RegExp]> = [
      ['an unknown format', () => encode(1, { ...good().message, format: 2 }), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\.format is 2/],
      ['format 0 (unset)', () => encode(1, { ...good().message, format: 0 }), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\.format is 0/],
      ['lengths not count × 8', () => encode(1, { ...good().message, count: 6 }), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\.lengths is 40 bytes, but count 6 needs 48/],
      ['meta neither empty nor count × 24', () => encode(1, { ...good().message, meta: Buffer.alloc(24) }), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\.meta is 24 bytes, but must be empty or 120/],
      ['data shorter than the lengths', () => encode(1, { ...good().message, data: good().message.data.subarray(1) }), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\.data is \d+ bytes, but the lengths of its 5 rows add up to \d+/],
      ['data longer than the lengths', () => encode(1, { ...good().message, data: Buffer.concat([good().message.data, Buffer.from('z')]) }), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\.data is/],
      ['an empty key', () => encode(1, withRow(3, { key: Buffer.alloc(0), value: Buffer.from('v') })), 'STORE_INVALID_KEY', /^BulkInsertRequest\.packed\[3\]\.key: key is empty/],
      ['a key over --max-key-bytes', () => encode(1, withRow(2, { key: Buffer.alloc(MAX_KEY_BYTES + 1, 0x11), value: Buffer.from('v') })), 'STORE_INVALID_KEY', /^BulkInsertRequest\.packed\[2\]\.key: key is 65 bytes, over the limit of 64 bytes/],
      ['a value over --max-value-bytes', () => encode(1, withRow(4, { key: Buffer.from([0x10, 0xff]), value: Buffer.alloc(MAX_VALUE_BYTES + 1) })), 'STORE_VALUE_TOO_LARGE', /^BulkInsertRequest\.packed\[4\]\.value: value is 1001 bytes/],
      ['a kept etag over 2^52', () => encode(1, metaWith(1, 0, BigInt(MAX_KEPT_ETAG) + 1n)), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\[1\]\.etag is 4503599627370497, out of range/],
      ['an updated_at_ms of 2^64 − 1', () => encode(1, metaWith(0, 1, 2n ** 64n - 1n)), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\[0\]\.updated_at_ms is 18446744073709551615, out of range/],
      ['an expiry past 9999-12-31', () => encode(1, metaWith(4, 2, BigInt(MAX_TIME_MS) + 1n)), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.packed\[4\]\.expires_at_ms is 253402300800000, out of range/],
      ['rows and packed together', () => encode(1, good().message, [{ key: Buffer.from([0x10, 1]), value: Buffer.alloc(0), etag: 0, updatedAtMs: 0, expiresAtMs: 0 }]), 'STORE_INVALID_ARGUMENT', /^BulkInsertRequest\.rows \(1 rows\) and BulkInsertRequest\.packed are both set/],
    ];

    it.each(cases)('%s', async (_name, request, code, message) => {
      const before = await storedCount(client);
      const outcome = await raw.callBytes('BulkInsert', request());
      expect(outcome.ok).toBe(false);
      if (outcome.ok) return;
      expect(outcome.error.code).toBe(status.INVALID_ARGUMENT);
      expect(outcome.code).toBe(code);
      expect(outcome.error.details).toMatch(message);
      expect(await storedCount(client)).toBe(before);
      // Not even the valid rows before the bad one.
      for (const r of good().rows) expect(await client.get(Key.fromBytes(r.key))).toBeUndefined();
    });
  });
});

describe('old (per-row) and new (packed) clients', () => {
  let oldSide: StoreCluster;
  let newSide: StoreCluster;
  let oldClient: StoreClient;
  let newClient: StoreClient;

  beforeAll(async () => {
    [oldSide, newSide] = await Promise.all([StoreCluster.start({ nodes: 1, partitions: 3, extraArgs: limits }), StoreCluster.start({ nodes: 1, partitions: 3, extraArgs: limits })]);
    oldClient = new StoreClient({ seeds: oldSide.seeds });
    newClient = new StoreClient({ seeds: newSide.seeds });
  });

  afterAll(async () => {
    oldClient?.close();
    newClient?.close();
    await Promise.all([oldSide?.close(), newSide?.close()]);
  });

  it('leave identical stored state: entries, kept etags and times, expiry, counts and logical bytes, also after upserts', async () => {
    const first = rowsOf(4000, 4, true);
    // Upserts over part of the range, with other values and metadata, and rows beyond it.
    const second = rowsOf(6000, 5, true).filter((_, i) => i % 2 === 0);
    for (const rows of [first, second]) {
      const chunks = [rows.slice(0, 1234), rows.slice(1234)];
      const a = await oldClient.bulkPutAll(chunks, { perRowForm: true, batchMaxRows: 1000 });
      const b = await newClient.bulkPutAll(chunks.map((c) => PackedRows.fromRows(c)));
      expect(a.rows).toBe(rows.length);
      expect(b.rows).toBe(rows.length);
    }
    // Keys, values and expiries (assigned etags and update times depend on arrival order and the clock).
    const [oldDigest, newDigest] = await Promise.all([oldClient.checksum(ALL, ALL), newClient.checksum(ALL, ALL)]);
    expect(newDigest.count).toBe(oldDigest.count);
    expect(newDigest.toHex()).toBe(oldDigest.toHex());
    // Kept etags and update times are the rows' own on both sides.
    for (const row of second.filter((r) => r.etag! > 0 && r.updatedAtMs! > 0).slice(0, 50)) {
      const [a, b] = await Promise.all([oldClient.get(Key.fromBytes(row.key)), newClient.get(Key.fromBytes(row.key))]);
      expect([a?.etag, a?.updatedAtMs]).toEqual([row.etag, row.updatedAtMs]);
      expect([b?.etag, b?.updatedAtMs, b?.expiresAtMs]).toEqual([a?.etag, a?.updatedAtMs, a?.expiresAtMs]);
    }
    const statsOf = async (c: StoreClient): Promise<Array<[number, number]>> =>
      (await c.stats()).flatMap((n) => (n.result.ok ? n.result.partitions.map((p) => [p.approxCount, p.logicalBytes] as [number, number]) : []));
    const [oldStats, newStats] = await Promise.all([statsOf(oldClient), statsOf(newClient)]);
    expect(newStats).toEqual(oldStats);
    expect(newStats.reduce((n, [c]) => n + c, 0)).toBe(oldDigest.count);
  });
});

describe('a node that predates packed batches', () => {
  it('fault injection (a node whose decoder drops `packed`, as the code before it did): the client sees nothing accepted, sends the per-row form from then on, and every row lands once', async () => {
    const dir = await makeTempDir('shardpipe-old-node-');
    const address = `127.0.0.1:${await findFreePort()}`;
    const node = await StoreNode.open({ node: address, dataDir: dir.path, initialMap: PartitionMap.evenlySplit(1, [address], 2), syncWrites: false });
    // The real service, except that BulkInsert requests lose the field an old node does not know.
    const definition = {
      ...STORE_SERVICE_DEFINITION,
      bulkInsert: { ...STORE_SERVICE_DEFINITION.bulkInsert, requestDeserialize: (bytes: Buffer) => ({ ...BulkInsertRequest.decode(bytes), packed: undefined }) },
    };
    const server = new Server();
    server.addService(definition, createStoreHandlers(node, createLogger({ level: 'silent' })));
    await new Promise<void>((resolve, reject) => server.bindAsync(address, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
    const client = new StoreClient({ seeds: [address] });
    try {
      const rows = rowsOf(2500, 6, false);
      const result = await client.bulkPutAll([packedOf(rows)], { batchMaxRows: 500, maxInFlight: 1 });
      expect(result.rows).toBe(2500);
      // Six batches (500 rows each, cut at the partition boundary at row 1250); the first was sent
      // packed (nothing accepted) and again per row, the others per row only.
      expect(result.calls).toBe(1 + 6);
      expect((await client.checksum(ALL, ALL)).count).toBe(2500);
      expect((await client.get(Key.fromBytes(rows[1234]!.key)))?.value.equals(rows[1234]!.value)).toBe(true);
    } finally {
      client.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await node.close();
      await dir.remove();
    }
  });
});
