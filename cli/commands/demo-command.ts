import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { findFreePort } from '../../common/index.js';
import { Key, PartitionMap, RangeDigest, StoreClient, StoreServer, type BulkRowInput } from '../../store/index.js';
import { CliUsageError } from '../cli-env.js';
import { formatTable, parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';

const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const CHUNK_ROWS = 10_000;

/**
 * Until ingest, backup and restore exist, `demo` is the store smoke run: a local 3-node cluster,
 * a bulk load of sorted rows, reads, compare-and-set, and a checksum of everything read back.
 */
export function registerDemoCommand(program: Command, ctx: CliContext): void {
  program
    .command('demo')
    .description('smoke run on embedded defaults: start a local 3-node cluster, bulk-load rows, read and verify them, stop')
    .option('--rows <n>', 'rows to load', '200000')
    .option('--partitions <n>', 'partitions over the 3 nodes', '6')
    .option('--keep-data', 'keep the cluster\'s data folder afterwards')
    .action(async (opts: { rows: string; partitions: string; keepData?: boolean }) => {
      const rows = parsePositiveInt(opts.rows, '--rows');
      const partitions = parsePositiveInt(opts.partitions, '--partitions');
      if (rows < 1) throw new CliUsageError('--rows must be at least 1');
      const dataDir = await mkdtemp(join(tmpdir(), 'shardpipe-demo-'));
      const logger = ctx.logger.child({ module: 'demo' });
      const nodes = await Promise.all([0, 1, 2].map(async () => `127.0.0.1:${await findFreePort()}`));
      const map = PartitionMap.evenlySplit(1, nodes, partitions);
      const servers: StoreServer[] = [];
      let client: StoreClient | undefined;
      try {
        for (const [i, node] of nodes.entries()) {
          servers.push(await StoreServer.start({ node, dataDir: join(dataDir, `node-${i}`), initialMap: map, logger }));
        }
        ctx.print(`cluster: ${nodes.join(', ')} — ${partitions} partitions, data in ${dataDir}`);
        client = new StoreClient({ seeds: [nodes[0]!], logger });

        const expected = new RangeDigest();
        const loadStart = performance.now();
        const load = await client.bulkPutAll(generateRows(rows, expected), {
          onAck: (done) => {
            if (process.stderr.isTTY) process.stderr.write(`\rloading ${done}/${rows} rows`);
          },
        });
        const loadMs = performance.now() - loadStart;
        if (process.stderr.isTTY) process.stderr.write('\n');

        const scanStart = performance.now();
        const actual = new RangeDigest();
        for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) {
          for (const e of batch) actual.add(e.key, e.value, e.expiresAtMs);
        }
        const scanMs = performance.now() - scanStart;
        const checksum = await client.checksum(Buffer.alloc(0), Buffer.alloc(0));

        const probe = Key.fromUtf8('demo:counter');
        const first = await client.put(probe, Buffer.from('1'), { expectedEtag: 0 });
        const second = await client.put(probe, Buffer.from('2'), { expectedEtag: first.etag });
        const casRefused = await client.put(probe, Buffer.from('3'), { expectedEtag: first.etag }).then(
          () => false,
          () => true,
        );
        const stats = await client.stats();
        const counted = stats.reduce((sum, n) => sum + (n.result.ok ? n.result.partitions.reduce((s, p) => s + p.approxCount, 0) : 0), 0);

        const verified =
          load.rows === rows &&
          actual.count === rows &&
          actual.toHex() === expected.toHex() &&
          checksum.toHex() === expected.toHex() &&
          counted === rows + 1 &&
          second.etag > first.etag &&
          casRefused;
        ctx.print(
          formatTable(
            ['stage', 'rows', 'ms', 'rows/s'],
            [
              ['bulk load', String(load.rows), loadMs.toFixed(0), rate(load.rows, loadMs)],
              ['scan', String(actual.count), scanMs.toFixed(0), rate(actual.count, scanMs)],
            ],
          ),
        );
        ctx.print(`checksum ${checksum.toHex().slice(0, 16)}… over ${checksum.count} rows; expected ${expected.toHex().slice(0, 16)}… over ${expected.count}`);
        ctx.print(`partition counts total ${counted} (expected ${rows + 1}); compare-and-set ${casRefused ? 'refused a stale etag' : 'DID NOT refuse a stale etag'}`);
        ctx.print(verified ? 'VERIFIED: every row written was read back intact' : 'NOT VERIFIED: see the figures above');
        if (!verified) process.exitCode = 1;
      } finally {
        client?.close();
        for (const server of servers.reverse()) await server.shutdown();
        if (!opts.keepData) await rm(dataDir, { recursive: true, force: true });
      }
    });
}

/** Sorted rows spread over the whole keyspace, so every partition gets its share. */
function* generateRows(count: number, digest: RangeDigest): Generator<BulkRowInput[]> {
  const step = 2 ** 48 / count;
  for (let from = 0; from < count; from += CHUNK_ROWS) {
    const chunk: BulkRowInput[] = [];
    for (let i = from; i < Math.min(count, from + CHUNK_ROWS); i++) {
      const key = Buffer.alloc(KEY_BYTES);
      key.writeUIntBE(Math.floor(i * step), 0, 6);
      key.writeUInt32BE(i, 12);
      const value = Buffer.alloc(VALUE_BYTES, 97 + (i % 26));
      value.writeUInt32BE(i, 0);
      digest.add(key, value, 0);
      chunk.push({ key, value });
    }
    yield chunk;
  }
}

function rate(rows: number, ms: number): string {
  return ms > 0 ? Math.round((rows * 1000) / ms).toLocaleString('en-US') : '-';
}
