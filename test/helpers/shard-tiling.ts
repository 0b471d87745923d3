import { expect } from 'vitest';
import type { StoreClient } from '../../store/index.js';

/** A shard's key range as manifests and /api/shards give it: hex, '' = open end. */
export interface HexRange {
  start: string;
  end: string;
}

/**
 * Asserts that `ranges` tile the keyspace (the first starts at −∞, the last ends at +∞, each starts
 * where the one before ends), then scans the whole store once and counts the keys that fall in each.
 */
export async function keysPerShard(client: StoreClient, ranges: readonly HexRange[]): Promise<{ counts: number[]; seen: number }> {
  expect(ranges[0]!.start).toBe('');
  expect(ranges.at(-1)!.end).toBe('');
  const bounds = ranges.map((r) => ({ start: Buffer.from(r.start, 'hex'), end: Buffer.from(r.end, 'hex') }));
  for (let i = 1; i < bounds.length; i++) expect(bounds[i]!.start.equals(bounds[i - 1]!.end), `shard ${i} starts where ${i - 1} ends`).toBe(true);
  const counts = bounds.map(() => 0);
  let at = 0;
  let seen = 0;
  for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) {
    for (const e of batch) {
      while (bounds[at]!.end.length > 0 && Buffer.compare(e.key, bounds[at]!.end) >= 0) at++;
      counts[at]!++;
      seen++;
    }
  }
  return { counts, seen };
}
