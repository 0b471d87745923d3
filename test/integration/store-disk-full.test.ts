import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { NodeConnection, PartitionMap, StoreClient, StoreError, checkHealth, partitionHealthService } from '../../store/index.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';
import { NodeProcess } from '../helpers/store-cluster.js';

const run = promisify(execFile);
const ROWS_PER_CALL = 100;
const VALUE_BYTES = 10_000;
const FILLER_BYTES = 10 * 1024 * 1024;
const RECOVERY_TIMEOUT_MS = 30_000;

let dir: string | undefined;
let mountPoint: string | undefined;
let mounted = false;
let skipReason = '';
let node: NodeProcess | undefined;
let client: StoreClient | undefined;
let conn: NodeConnection | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shardpipe-diskfull-'));
  mountPoint = join(dir, 'tmpfs');
  await mkdir(mountPoint);
  if (process.getuid?.() !== 0) {
    skipReason = 'needs root to mount a 20 MiB tmpfs (run as root to fill a real disk)';
    return;
  }
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=20m', 'tmpfs', mountPoint]);
    mounted = true;
  } catch (err) {
    skipReason = `mount -t tmpfs failed (${(err as Error).message.trim()}): a container without CAP_SYS_ADMIN cannot run this test`;
  }
});

afterAll(async () => {
  client?.close();
  conn?.close();
  await node?.kill();
  if (mounted) await run('umount', ['-l', mountPoint!]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

function rowOf(call: number, row: number): { key: Buffer; value: Buffer; etag: number; updatedAtMs: number; expiresAtMs: number } {
  const key = Buffer.alloc(6);
  key.writeUInt32BE(call, 0);
  key.writeUInt16BE(row, 4);
  const value = Buffer.alloc(VALUE_BYTES, (call * 13 + row) & 0xff);
  value.writeUInt32BE(call, 0);
  value.writeUInt16BE(row, 4);
  return { key, value, etag: 0, updatedAtMs: 0, expiresAtMs: 0 };
}

async function metrics(): Promise<ReturnType<typeof parsePrometheusText>> {
  return parsePrometheusText(await (await fetch(`http://127.0.0.1:${String(node!.ready.metricsPort)}/metrics`)).text());
}

describe('real fault: a full disk heals without a restart', () => {
  it('on a 20 MiB tmpfs, writes fail with STORE_PARTITION_UNAVAILABLE and health says NOT_SERVING; after space is freed the partition recovers by itself, health says SERVING again, and every acknowledged row is readable', async (ctx) => {
    if (!mounted) {
      process.stdout.write(`skipping the real disk-full test: ${skipReason}\n`);
      ctx.skip(skipReason);
    }
    // Room to free later: the node cannot write once this and its data fill the tmpfs.
    await writeFile(join(mountPoint!, 'filler'), Buffer.alloc(FILLER_BYTES, 1));
    const address = `127.0.0.1:${await findFreePort()}`;
    const map = PartitionMap.evenlySplit(1, [address], 1);
    const partitionId = map.partitions[0]!.id;
    const mapFile = join(dir!, 'map.json');
    await writeFile(mapFile, JSON.stringify(map.toJson()));
    // LevelDB's own 4 MiB memtable: reopening needs about the log's size free, and the default
    // (8 MiB) log is most of what this 20 MiB disk can give back.
    node = new NodeProcess(address, join(mountPoint!, 'node'), mapFile, ['--metrics-port', '0', '--write-buffer-bytes', String(4 * 1024 * 1024)]);
    await node.start();
    const pid = node.child!.pid;
    conn = new NodeConnection(address);
    expect(await checkHealth(address, 2000, partitionHealthService(partitionId))).toBe('SERVING');

    // Fill the disk: every call either is acknowledged or fails; remember which.
    const acknowledged: number[] = [];
    const failed: number[] = [];
    let firstFailure: StoreError | undefined;
    for (let call = 0; firstFailure === undefined; call++) {
      expect(call, 'the tmpfs never filled up').toBeLessThan(1000);
      const rows = Array.from({ length: ROWS_PER_CALL }, (_, r) => rowOf(call, r));
      try {
        await conn.unary('bulkInsert', { mapVersion: map.version, rows }, { deadline: Date.now() + 30_000 });
        acknowledged.push(call);
      } catch (err) {
        firstFailure = err as StoreError;
        failed.push(call);
      }
    }
    expect(firstFailure.code, firstFailure.message).toBe('STORE_PARTITION_UNAVAILABLE');
    expect((firstFailure.cause as ServiceError).code).toBe(status.UNAVAILABLE);
    expect(firstFailure.retryable).toBe(true);
    expect(firstFailure.message).toContain(`partition ${partitionId}`);
    expect(firstFailure.message).toContain('No space left on device');
    expect(acknowledged.length).toBeGreaterThan(0);

    // While it cannot write: health and /metrics say so, writes fail fast and retryably, reads work.
    expect(await checkHealth(address, 2000, partitionHealthService(partitionId))).toBe('NOT_SERVING');
    expect(await checkHealth(address, 2000)).toBe('NOT_SERVING');
    const down = await metrics();
    expect(sampleValue(down, 'shardpipe_partition_serving', { node: address, partition: String(partitionId) })).toBe(0);
    expect(sampleValue(down, 'shardpipe_partition_write_errors_total', { node: address, partition: String(partitionId) })).toBeGreaterThanOrEqual(1);
    const again = acknowledged.length + failed.length;
    const refused = await conn.unary('put', { mapVersion: map.version, key: rowOf(again, 0).key, value: Buffer.from('v'), expectedEtag: undefined, ttlMs: 0 }, { deadline: Date.now() + 5000 }).then(
      () => undefined,
      (err: unknown) => err as StoreError,
    );
    expect(refused?.code).toBe('STORE_PARTITION_UNAVAILABLE');
    const probe = rowOf(acknowledged[0]!, 7);
    const read = await conn.unary('get', { mapVersion: map.version, key: probe.key, fields: [] }, { deadline: Date.now() + 5000 });
    expect(read.found && read.entry!.value.equals(probe.value)).toBe(true);

    // Free the space; the partition recovers on its own (same process, no restart).
    await rm(join(mountPoint!, 'filler'));
    const deadline = Date.now() + RECOVERY_TIMEOUT_MS;
    let health = 'NOT_SERVING';
    while (health !== 'SERVING' && Date.now() < deadline) {
      health = await checkHealth(address, 2000, partitionHealthService(partitionId));
      if (health !== 'SERVING') await new Promise<void>((resolve) => setTimeout(resolve, 100));
    }
    expect(health).toBe('SERVING');
    expect(await checkHealth(address, 2000)).toBe('SERVING');
    expect(node.child?.pid).toBe(pid);
    const up = await metrics();
    expect(sampleValue(up, 'shardpipe_partition_serving', { node: address, partition: String(partitionId) })).toBe(1);

    // Writes work again, through the thick client too.
    client = new StoreClient({ seeds: [address] });
    const rows = Array.from({ length: ROWS_PER_CALL }, (_, r) => rowOf(again, r));
    await client.bulkPutAll([rows]);
    acknowledged.push(again);

    // Every acknowledged row is there with its value; a failed call is there wholly or not at all; counts are exact.
    const stored = new Map<string, Buffer>();
    for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) for (const e of batch) stored.set(e.key.toString('hex'), e.value);
    for (const call of acknowledged) {
      for (let r = 0; r < ROWS_PER_CALL; r++) {
        const row = rowOf(call, r);
        expect(stored.get(row.key.toString('hex'))?.equals(row.value), `acknowledged row ${call}/${r}`).toBe(true);
      }
    }
    for (const call of failed) {
      const present = Array.from({ length: ROWS_PER_CALL }, (_, r) => stored.has(rowOf(call, r).key.toString('hex')));
      expect(present.every((p) => p === present[0]), `failed call ${call} is half-applied`).toBe(true);
    }
    const [stats] = await client.stats();
    expect(stats!.result.ok && stats!.result.partitions[0]!.approxCount).toBe(stored.size);
  }, 120_000);
});
