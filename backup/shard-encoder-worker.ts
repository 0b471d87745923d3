import { parentPort } from 'node:worker_threads';
import { PACKED_ROWS_FORMAT, PackedRows, RangeDigest } from '../store/index.js';
import { loadParquetWasm, packedParquetShardStream, type ShardStreamStats } from './parquet-shard-stream.js';
import type { EncoderReply, EncoderRequest } from './shard-encoders.js';

// One thread of the backup's Parquet encoders (shard-encoders.ts): takes the packed scan batches of
// one shard at a time, digests them and encodes the shard file (zstd, parquet-wasm), and hands the
// file's bytes back. Every message names its session (one shard): anything of an older one is ignored.

const port = parentPort!;

/** Bytes handed back and not yet taken by the writer, beyond which encoding waits. */
const OUTPUT_WINDOW_BYTES = 16 * 1024 * 1024;

class Session {
  readonly queue: Array<{ rows: PackedRows; bytes: number } | 'end'> = [];
  aborted = false;
  unacked = 0;
  private wake: (() => void) | undefined;

  constructor(readonly id: number) {}

  notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  wait(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }

  async *source(): AsyncGenerator<PackedRows> {
    for (;;) {
      if (this.aborted) throw new Error('the shard was stopped by its writer');
      const item = this.queue.shift();
      if (item === undefined) {
        await this.wait();
        continue;
      }
      if (item === 'end') return;
      post({ op: 'taken', session: this.id, bytes: item.bytes });
      yield item.rows;
    }
  }
}

let current: Session | undefined;

function post(reply: EncoderReply, transfer?: ArrayBuffer[]): void {
  port.postMessage(reply, transfer);
}

port.on('message', (m: EncoderRequest) => {
  if (m.op === 'start') {
    if (current !== undefined) current.aborted = true;
    const session = new Session(m.session);
    current = session;
    void run(session, m);
    return;
  }
  const session = current;
  if (session === undefined || session.id !== m.session) return;
  if (m.op === 'batch') {
    const buffer = Buffer.from(m.buffer);
    const meta = buffer.subarray(0, m.metaBytes);
    const lengths = buffer.subarray(m.metaBytes, m.metaBytes + m.lengthsBytes);
    const data = buffer.subarray(m.metaBytes + m.lengthsBytes);
    session.queue.push({ rows: PackedRows.fromMessage({ format: PACKED_ROWS_FORMAT, count: m.count, lengths, data, meta }), bytes: m.buffer.byteLength });
  } else if (m.op === 'end') {
    session.queue.push('end');
  } else if (m.op === 'ack') {
    session.unacked -= m.bytes;
  } else {
    session.aborted = true;
  }
  session.notify();
});

async function run(session: Session, m: Extract<EncoderRequest, { op: 'start' }>): Promise<void> {
  const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
  try {
    const metadata = { backupId: m.backupId, shard: m.shard, rangeStart: Buffer.from(m.rangeStart, 'hex'), rangeEnd: Buffer.from(m.rangeEnd, 'hex') };
    for await (const chunk of packedParquetShardStream(session.source(), metadata, stats, { rowGroupRows: m.rowGroupRows })) {
      // parquet-wasm hands out views of its own copies; one that is not alone in its memory is copied to be sent.
      const own = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength && chunk.buffer instanceof ArrayBuffer ? chunk : new Uint8Array(chunk);
      session.unacked += own.byteLength;
      post({ op: 'chunk', session: session.id, buffer: own.buffer as ArrayBuffer }, [own.buffer as ArrayBuffer]);
      while (session.unacked > OUTPUT_WINDOW_BYTES && !session.aborted) await session.wait();
      if (session.aborted) throw new Error('the shard was stopped by its writer');
    }
    post({ op: 'done', session: session.id, rows: stats.rows, digest: stats.digest.toHex(), count: stats.digest.count, contentHash: stats.contentHash });
  } catch (err) {
    post({ op: 'error', session: session.id, message: err instanceof Error ? err.message : String(err), stack: err instanceof Error ? err.stack : undefined });
  } finally {
    if (current === session) current = undefined;
  }
}

// parquet-wasm is loaded and compiled once the thread starts, before its first shard: a prestarted
// thread (ShardEncoders.prestart) has it done by the time the backup's first scan batch comes.
loadParquetWasm();
post({ op: 'ready' });
