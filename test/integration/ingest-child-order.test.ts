import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Job, Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { INGEST_FILE_QUEUE, childJobId, connectionFromUrl } from '../../jobs/index.js';
import { runCli } from '../helpers/store-cluster.js';
import { toParquet } from '../helpers/spark-drop.js';
import { useStack } from '../helpers/stack.js';

// A sorted drop's neighbouring files write to the same partitions. The ingest queues its children so
// that the files a worker runs at once write to different nodes (jobs/child-order.ts); ids, rejects
// files and the report keep the plan order.

describe('shardpipe ingest: children queued apart over the nodes', () => {
  // 6 partitions split evenly on the first two key bytes, 3 nodes round-robin: keys starting with
  // 'B'/'C' (0x42, 0x43) are in partition 1 (node 1), 'x'/'y' (0x78, 0x79) in partition 2 (node 2).
  const stack = useStack({ prefix: 'shardpipe-child-order-', nodes: 3, partitions: 6 });

  it('the two files running first write to different nodes, and every row lands', async () => {
    const map = await stack.client.map();
    const nodeOf = (prefix: string): string => map.lookup(Buffer.from(prefix)).node;
    const prefixes = ['B-', 'C-', 'x-', 'y-'];
    expect(nodeOf('B-')).toBe(nodeOf('C-'));
    expect(nodeOf('x-')).toBe(nodeOf('y-'));
    expect(nodeOf('B-')).not.toBe(nodeOf('x-'));
    const dir = stack.sub('drop');
    await mkdir(dir, { recursive: true });
    const rowsPerFile = 2000;
    for (const [f, prefix] of prefixes.entries()) {
      const ids = Array.from({ length: rowsPerFile }, (_, i) => `${prefix}${String(i).padStart(6, '0')}`);
      await writeFile(join(dir, `part-${String(f).padStart(5, '0')}-c000.snappy.parquet`), toParquet({ id: ids, payload: ids.map((id) => `value of ${id}`) }, 'SNAPPY', 1000));
    }
    await writeFile(join(dir, '_SUCCESS'), '');

    const r = await runCli(['ingest', dir, '--key-column', 'id', '--value-column', 'payload', ...stack.cliArgs, '--data-dir', stack.sub('data'), '--concurrency', '2', '--json', '--log-level', 'warn']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { id: string; rowsIngested: number; files: Array<{ file: string }> };
    expect(report.rowsIngested).toBe(prefixes.length * rowsPerFile);
    // The report lists the files in plan order, as before.
    expect(report.files.map((f) => f.file)).toEqual(prefixes.map((_, f) => `part-${String(f).padStart(5, '0')}-c000.snappy.parquet`));

    const queue = new Queue(INGEST_FILE_QUEUE, { connection: connectionFromUrl(stack.redis.url) });
    try {
      const started = await Promise.all(prefixes.map(async (_, f) => (await Job.fromId(queue, childJobId(report.id, f)))!.processedOn!));
      // With 2 at once the first two children start together, the others only when one of them ends.
      const firstTwo = prefixes.map((p, f) => ({ p, at: started[f]! })).sort((a, b) => a.at - b.at).slice(0, 2).map((c) => c.p);
      expect(new Set(firstTwo.map(nodeOf)).size, `first two started: ${firstTwo.join(', ')}`).toBe(2);
    } finally {
      await queue.close();
    }
    for (const prefix of prefixes) {
      const stored = await stack.client.checksum(Buffer.from(prefix), Buffer.from(prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)));
      expect(stored.count).toBe(rowsPerFile);
    }
  });
});
