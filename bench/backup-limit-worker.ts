import { createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { parquetShardStream, type ShardStreamStats } from '../backup/index.js';
import { PartitionStore, RangeDigest } from '../store/index.js';

// One lane of the backup bench's in-process limit (a worker thread): partitions handed over by the
// bench, each scanned from its LevelDB (classic-level `nextv`) into the backup's Parquet shard
// stream (zstd, checksum) and a local file — the work of one backup shard job, store side included.

export interface LimitTask {
  /** The partition's LevelDB folder; absent = no more work. */
  location?: string;
  /** Output file; absent = scan only. */
  out?: string;
  shard: number;
}

export interface LimitDone {
  rows: number;
  fileBytes: number;
}

const port = parentPort!;
const { batchSize } = workerData as { batchSize: number };

// Loaded and compiled before the clock starts (modules, parquet-wasm, JIT on a few rows): the limit
// is the work, not a thread's start-up.
await warmUp();
port.postMessage({ ready: true });

port.on('message', (task: LimitTask) => {
  if (task.location === undefined) {
    port.close();
    return;
  }
  run(task).then(
    (done) => port.postMessage(done),
    (err: unknown) => port.postMessage({ error: err instanceof Error ? err.stack : String(err) }),
  );
});

async function warmUp(): Promise<void> {
  const rows = Array.from({ length: 1000 }, (_, i) => ({ key: Buffer.from(`warm-up-${String(i).padStart(6, '0')}`), value: Buffer.alloc(100, i), etag: i + 1, updatedAtMs: 1, expiresAtMs: 0 }));
  const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
  async function* source(): AsyncGenerator<typeof rows> {
    yield rows;
  }
  for await (const bytes of parquetShardStream(source(), { backupId: '20260101T000000Z-000000', shard: 0, rangeStart: Buffer.alloc(0), rangeEnd: Buffer.alloc(0) }, stats)) void bytes;
}

async function run(task: LimitTask): Promise<LimitDone> {
  const store = await PartitionStore.open(task.location!);
  try {
    const scan = store.scan(Buffer.alloc(0), Buffer.alloc(0), { batchSize });
    if (task.out === undefined) {
      let rows = 0;
      for await (const batch of scan) rows += batch.length;
      return { rows, fileBytes: 0 };
    }
    const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
    await pipeline(Readable.from(parquetShardStream(scan, { backupId: '20260101T000000Z-000000', shard: task.shard, rangeStart: Buffer.alloc(0), rangeEnd: Buffer.alloc(0) }, stats)), createWriteStream(task.out));
    return { rows: stats.rows, fileBytes: (await stat(task.out)).size };
  } finally {
    await store.close();
  }
}
