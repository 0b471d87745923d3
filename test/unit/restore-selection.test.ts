import { describe, expect, it } from 'vitest';
import { RestoreError, SortedRangeFilter, intersectRanges, normalizeRanges, parseKeyRange, partitionRanges, planRestore } from '../../restore/index.js';
import { PartitionMap } from '../../store/index.js';

const map = PartitionMap.fromJson({
  version: 4,
  partitions: [
    { id: 0, start: '', end: '4000', node: 'a:1' },
    { id: 1, start: '4000', end: '8000', node: 'b:1' },
    { id: 2, start: '8000', end: 'c000', node: 'c:1' },
    { id: 3, start: 'c000', end: '', node: 'a:1' },
  ],
});

describe('restore selection', () => {
  it('parses START:END in hex with open ends, and names a bad value', () => {
    expect(parseKeyRange('4000:8000')).toEqual({ start: '4000', end: '8000' });
    expect(parseKeyRange('C0:')).toEqual({ start: 'c0', end: '' });
    expect(parseKeyRange(':')).toEqual({ start: '', end: '' });
    for (const bad of ['4000', '40:30', 'zz:', '400:', '1:2:3', '40:40']) {
      expect(() => parseKeyRange(bad)).toThrow(RestoreError);
      expect(() => parseKeyRange(bad)).toThrow(`"${bad}"`);
    }
  });

  it('maps partition ids of the current map to their ranges; an unknown id lists the known ones', () => {
    expect(partitionRanges(map, [2, 0])).toEqual([{ start: '8000', end: 'c000' }, { start: '', end: '4000' }]);
    expect(() => partitionRanges(map, [7])).toThrow(/partition 7 .*version 4.*0, 1, 2, 3/);
  });

  it('normalizes (sorts, merges touching and overlapping) and intersects', () => {
    expect(normalizeRanges([{ start: 'c000', end: '' }, { start: '4000', end: '8000' }, { start: '7000', end: '9000' }, { start: '', end: '4000' }])).toEqual([
      { start: '', end: '9000' },
      { start: 'c000', end: '' },
    ]);
    expect(normalizeRanges([{ start: '10', end: '' }, { start: '20', end: '30' }])).toEqual([{ start: '10', end: '' }]);
    const selection = normalizeRanges([{ start: '3000', end: '5000' }, { start: '9000', end: '' }]);
    expect(intersectRanges({ start: '', end: '4000' }, selection)).toEqual([{ start: '3000', end: '4000' }]);
    expect(intersectRanges({ start: '4800', end: 'a000' }, selection)).toEqual([{ start: '4800', end: '5000' }, { start: '9000', end: 'a000' }]);
    expect(intersectRanges({ start: '5000', end: '9000' }, selection)).toEqual([]);
    expect(intersectRanges({ start: 'f0', end: '' }, selection)).toEqual([{ start: 'f0', end: '' }]);
  });

  it('filters ascending keys by piece with one cursor', () => {
    const filter = new SortedRangeFilter([{ start: '20', end: '30' }, { start: '50', end: '' }]);
    const keys = ['10', '20', '2fff', '30', '49', '50', 'ff'].map((h) => Buffer.from(h, 'hex'));
    expect(keys.map((k) => filter.pieceOf(k))).toEqual([-1, 0, 0, -1, -1, 1, 1]);
  });

  it('plans only the shards meeting the selection, with their pieces and target partitions', () => {
    const shard = (index: number, start: string, end: string) => ({ index, start, end, file: `shard-${index}.parquet`, rows: 100, bytes: 1000, checksum: '00' });
    const manifest = {
      backupId: 'b',
      mapVersion: 1,
      partitions: [],
      shards: [shard(0, '', '3000'), shard(1, '3000', '6000'), shard(2, '6000', 'a000'), shard(3, 'a000', '')],
      totals: { rows: 400, bytes: 4000 },
    };
    const plan = planRestore(manifest, map, partitionRanges(map, [1]));
    expect(plan.selection).toEqual([{ start: '4000', end: '8000' }]);
    expect(plan.shards.map((s) => [s.index, s.pieces, s.targetPartitions])).toEqual([
      [1, [{ start: '4000', end: '6000' }], [1]],
      [2, [{ start: '6000', end: '8000' }], [1]],
    ]);
    expect(plan).toMatchObject({ rows: 200, bytes: 2000, shardsSkipped: 2 });
    // The whole keyspace is a full restore.
    const full = planRestore(manifest, map, partitionRanges(map, [0, 1, 2, 3]));
    expect(full.selection).toBeUndefined();
    expect(full.shards).toHaveLength(4);
  });
});
