/**
 * Memory of a store node under a burst of large BulkInserts (a measurement, not a test).
 *
 * Starts one node (`store start --no-sync`, one partition, plus any extra flags given after `--`),
 * sends CALLS (default 40) BulkInserts of 15 rows × ~1 MiB at once, each on its own channel and
 * without retries, and prints the node's peak RSS (VmHWM) before and after, its RSS after, and how
 * many calls were admitted or refused (STORE_OVERLOADED).
 *
 * Run after `npx tsc -p tsconfig.json`:
 *   node dist/bench/store-burst-bench.js [--calls N] [-- --max-inflight-bytes 67108864 ...]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findFreePort } from '../common/index.js';
import { NodeConnection, PartitionMap, StoreError } from '../store/index.js';
import { MAIN_JS } from './bench-cluster.js';
import { readPeakRssMb, readRssMb, stopChild, waitForReady } from './bench-processes.js';
import { parseBenchArgs } from './bench-args.js';

const ROWS_PER_CALL = 15;
const VALUE_BYTES = 1024 * 1024 - 64;

const { values, positionals } = parseBenchArgs('node dist/bench/store-burst-bench.js [--calls N (default 40)] [-- extra `store start` options, e.g. --max-inflight-bytes 67108864]', { options: { calls: { type: 'string', default: '40' } }, allowPositionals: true });
const calls = Number(values.calls);
if (!Number.isInteger(calls) || calls < 1) throw new RangeError(`--calls must be a whole number ≥ 1, got ${values.calls}`);

const dir = await mkdtemp(join(tmpdir(), 'shardpipe-burst-'));
const address = `127.0.0.1:${await findFreePort()}`;
await writeFile(join(dir, 'map.json'), JSON.stringify(PartitionMap.evenlySplit(1, [address], 1).toJson()));
const child = spawn(process.execPath, [MAIN_JS, 'store', 'start', '--map', join(dir, 'map.json'), '--node', address, '--data', join(dir, 'data'), '--log-level', 'warn', '--no-sync', ...positionals], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const exited = once(child, 'exit').then(() => undefined);
try {
  await waitForReady(child);
  const before = await readPeakRssMb(child.pid!);
  const started = performance.now();
  const outcomes = await Promise.all(
    Array.from({ length: calls }, async (_, call) => {
      const rows = Array.from({ length: ROWS_PER_CALL }, (_, row) => ({ key: Buffer.from([call >> 8, call & 0xff, row]), value: Buffer.alloc(VALUE_BYTES, row), etag: 0, updatedAtMs: 0, expiresAtMs: 0 }));
      const conn = new NodeConnection(address);
      try {
        await conn.unary('bulkInsert', { mapVersion: 1, rows }, { deadline: Date.now() + 120_000 });
        return 'admitted';
      } catch (err) {
        return err instanceof StoreError ? err.code : String(err);
      } finally {
        conn.close();
      }
    }),
  );
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
  const result = {
    calls,
    flags: positionals,
    seconds: Math.round(performance.now() - started) / 1000,
    outcomes: counts,
    peakRssBeforeMiB: Math.round(before ?? NaN),
    peakRssAfterMiB: Math.round((await readPeakRssMb(child.pid!)) ?? NaN),
    rssAfterMiB: Math.round((await readRssMb(child.pid!)) ?? NaN),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await stopChild(child, exited);
  await rm(dir, { recursive: true, force: true });
}
