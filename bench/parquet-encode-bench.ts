/**
 * Backup shard file encoding, with and without dictionaries on the high-cardinality columns (a
 * measurement, not a test).
 *
 * Encodes N rows (default 1,000,000: sorted 16-byte keys, 100-byte values cut from a random base64
 * pool at distinct offsets, etags in the millions, update times repeating per 1,024 rows, every
 * third row with a TTL a day out) with backup's writer (packedParquetShardStream: zstd, 65,536-row
 * row groups, from 8,192-row packed batches as a scan hands them over) on this thread, twice per
 * repetition, after one unmeasured run of each, in ABBA order (neither always runs first):
 *   - now: PLAIN_SHARD_COLUMNS (key, value, etag) without a dictionary;
 *   - before: a dictionary on every column (`dictionaryEverywhere`), as files were written before.
 * Then reads each file back with restore's reader (readShardColumns: the decoder thread, every
 * key's order and range checked). Per variant: encode rows/s and CPU s per 1M rows, file MB,
 * decode rows/s and CPU s per 1M rows (process CPU: this thread and the decoder thread); medians
 * over the repetitions, and the ratio now ÷ before from the same run.
 *
 * Run after `npx tsc -p tsconfig.json`: node dist/bench/parquet-encode-bench.js [--rows N] [--reps N]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packedParquetShardStream, readShardColumns, type ShardStreamStats } from '../backup/index.js';
import { statDataFile } from '../files/index.js';
import { PACKED_ROWS_FORMAT, PackedRows, RangeDigest } from '../store/index.js';
import { parseBenchArgs } from './bench-args.js';
import { fixed, int, roundNumbers, table } from './bench-format.js';
import { selfCpuSeconds } from './bench-processes.js';
import { median } from './bench-stats.js';

const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const BATCH_ROWS = 8192;
const VALUE_POOL = Buffer.from(randomBytes(768 * 1024).toString('base64'), 'latin1');

interface Sample {
  encodeMs: number;
  encodeCpuS: number;
  bytes: number;
  decodeMs: number;
  decodeCpuS: number;
}

const VARIANTS = [
  { name: 'now: no dictionary on key, value, etag', dictionaryEverywhere: false },
  { name: 'before: a dictionary on every column', dictionaryEverywhere: true },
] as const;

async function main(): Promise<void> {
  const { values } = parseBenchArgs('node dist/bench/parquet-encode-bench.js [--rows N] [--reps N]', { options: { rows: { type: 'string', default: '1000000' }, reps: { type: 'string', default: '3' } } });
  const rows = Number(values.rows);
  const reps = Number(values.reps);
  if (!Number.isSafeInteger(rows) || rows < 1) throw new RangeError(`--rows must be a whole number ≥ 1, got ${values.rows}`);
  if (!Number.isSafeInteger(reps) || reps < 1) throw new RangeError(`--reps must be a whole number ≥ 1, got ${values.reps}`);
  const batches = makeBatches(rows);
  const dir = await mkdtemp(join(tmpdir(), 'shardpipe-parquet-encode-bench-'));
  const samples = VARIANTS.map(() => [] as Sample[]);
  try {
    // Unmeasured: wasm instantiation, the decoder thread's start and JIT warm-up, for both writers.
    for (const variant of VARIANTS) await measure(batches.slice(0, 8), variant.dictionaryEverywhere, join(dir, 'warm-up.parquet'));
    for (let r = 0; r < reps; r++) {
      // ABBA: neither writer always runs first.
      const order = r % 2 === 0 ? [0, 1] : [1, 0];
      for (const v of order) {
        const variant = VARIANTS[v]!;
        process.stderr.write(`repetition ${r + 1} of ${reps}: ${variant.name}…\n`);
        samples[v]!.push(await measure(batches, variant.dictionaryEverywhere, join(dir, `shard-${v}.parquet`)));
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  printReport(rows, reps, samples);
}

/** Packed batches of BATCH_ROWS rows, with etag, update time and expiry per row. */
function makeBatches(rows: number): PackedRows[] {
  const now = Date.now();
  const out: PackedRows[] = [];
  for (let from = 0; from < rows; from += BATCH_ROWS) {
    const count = Math.min(BATCH_ROWS, rows - from);
    const lengths = Buffer.alloc(count * 8);
    const data = Buffer.alloc(count * (KEY_BYTES + VALUE_BYTES));
    const meta = Buffer.alloc(count * 24);
    for (let j = 0; j < count; j++) {
      const i = from + j;
      lengths.writeUInt32LE(KEY_BYTES, j * 8);
      lengths.writeUInt32LE(VALUE_BYTES, j * 8 + 4);
      const at = j * (KEY_BYTES + VALUE_BYTES);
      data.write(`k${String(i).padStart(KEY_BYTES - 1, '0')}`, at, 'latin1');
      // 97 is prime to the pool's length: a million rows get a million distinct values.
      const slot = (i * 97) % (VALUE_POOL.length - VALUE_BYTES);
      VALUE_POOL.copy(data, at + KEY_BYTES, slot, slot + VALUE_BYTES);
      meta.writeBigUInt64LE(BigInt(3_000_000 + i), j * 24);
      meta.writeBigUInt64LE(BigInt(now - 3_600_000 + (i >> 10)), j * 24 + 8);
      meta.writeBigUInt64LE(BigInt(i % 3 === 0 ? now + 86_400_000 + i : 0), j * 24 + 16);
    }
    out.push(PackedRows.fromMessage({ format: PACKED_ROWS_FORMAT, count, lengths, data, meta }));
  }
  return out;
}

async function measure(batches: readonly PackedRows[], dictionaryEverywhere: boolean, path: string): Promise<Sample> {
  async function* source(): AsyncGenerator<PackedRows> {
    yield* batches;
  }
  const stats: ShardStreamStats = { rows: 0, digest: new RangeDigest() };
  const chunks: Uint8Array[] = [];
  let cpu = selfCpuSeconds();
  let started = performance.now();
  for await (const chunk of packedParquetShardStream(source(), { backupId: 'bench', shard: 0, rangeStart: Buffer.alloc(0), rangeEnd: Buffer.alloc(0) }, stats, { dictionaryEverywhere })) chunks.push(chunk);
  const encodeMs = performance.now() - started;
  const encodeCpuS = selfCpuSeconds() - cpu;
  const file = Buffer.concat(chunks);
  await writeFile(path, file);
  const rows = batches.reduce((n, b) => n + b.count, 0);
  if (stats.rows !== rows) throw new Error(`encoded ${stats.rows} rows, expected ${rows}`);

  cpu = selfCpuSeconds();
  started = performance.now();
  let read = 0;
  for await (const chunk of readShardColumns(await statDataFile(path, 'parquet'), { range: { start: Buffer.alloc(0), end: Buffer.alloc(0) }, chunkRows: 8192 })) read += chunk.to - chunk.from;
  const decodeMs = performance.now() - started;
  const decodeCpuS = selfCpuSeconds() - cpu;
  if (read !== rows) throw new Error(`read back ${read} rows, expected ${rows}`);
  return { encodeMs, encodeCpuS, bytes: file.length, decodeMs, decodeCpuS };
}

function printReport(rows: number, reps: number, samples: Sample[][]): void {
  const figures = samples.map((s) => ({
    encodeRowsPerSec: median(s.map((x) => (rows / x.encodeMs) * 1000)),
    encodeCpuPer1M: median(s.map((x) => (x.encodeCpuS * 1e6) / rows)),
    fileMb: median(s.map((x) => x.bytes / 1e6)),
    decodeRowsPerSec: median(s.map((x) => (rows / x.decodeMs) * 1000)),
    decodeCpuPer1M: median(s.map((x) => (x.decodeCpuS * 1e6) / rows)),
  }));
  const [now, before] = figures as [(typeof figures)[0], (typeof figures)[0]];
  const out: string[] = [];
  out.push(`backup shard encoding: ${int(rows)} rows × (${KEY_BYTES} B key + ${VALUE_BYTES} B value + etag, update time, expiry), zstd, 65,536-row row groups; medians of ${reps}, alternating`);
  out.push('');
  out.push(
    table(
      ['writer', 'encode rows/s', 'encode CPU s/1M', 'file MB', 'decode rows/s', 'decode CPU s/1M'],
      VARIANTS.map((v, i) => [v.name, int(figures[i]!.encodeRowsPerSec), fixed(figures[i]!.encodeCpuPer1M, 2), fixed(figures[i]!.fileMb, 1), int(figures[i]!.decodeRowsPerSec), fixed(figures[i]!.decodeCpuPer1M, 2)]),
    ),
  );
  const ratios = {
    encodeRowsPerSec: now.encodeRowsPerSec / before.encodeRowsPerSec,
    encodeCpu: now.encodeCpuPer1M / before.encodeCpuPer1M,
    fileBytes: now.fileMb / before.fileMb,
    decodeRowsPerSec: now.decodeRowsPerSec / before.decodeRowsPerSec,
    decodeCpu: now.decodeCpuPer1M / before.decodeCpuPer1M,
  };
  out.push('');
  out.push(`now ÷ before: encode rows/s ${fixed(ratios.encodeRowsPerSec, 2)}×, encode CPU ${fixed(ratios.encodeCpu, 2)}×, file size ${fixed(ratios.fileBytes, 3)}×, decode rows/s ${fixed(ratios.decodeRowsPerSec, 2)}×, decode CPU ${fixed(ratios.decodeCpu, 2)}×`);
  out.push(JSON.stringify({ bench: 'parquet-encode', rows, reps, now, before, ratios, samples }, roundNumbers));
  process.stdout.write(out.join('\n') + '\n');
}

await main();
