import { describe, expect, it } from 'vitest';
import { fileKeyRange, findKeyOverlaps } from '../../jobs/index.js';

const range = (file: string, min: string, max: string) => ({ file, keyMin: Buffer.from(min), keyMax: Buffer.from(max) });

describe('findKeyOverlaps', () => {
  it('finds none in a sorted drop, even where one file ends just below the next one starts', () => {
    expect(findKeyOverlaps([range('p0', 'a', 'f'), range('p1', 'g', 'm'), range('p2', 'n', 'z')])).toEqual({
      filesOverlapping: 0, overlappingPairs: 0, overlaps: [], filesWithoutKeyRange: 0,
    });
  });

  it('names every overlapping pair, a shared boundary key included, whatever the input order', () => {
    const result = findKeyOverlaps([range('p2', 'k', 'z'), range('p0', 'a', 'f'), range('p1', 'f', 'm'), range('p3', 'x', 'y')]);
    expect(result).toEqual({
      filesOverlapping: 4,
      overlappingPairs: 3,
      overlaps: [
        { file: 'p0', overlapsWith: ['p1'] },
        { file: 'p1', overlapsWith: ['p0', 'p2'] },
        { file: 'p2', overlapsWith: ['p1', 'p3'] },
        { file: 'p3', overlapsWith: ['p2'] },
      ],
      filesWithoutKeyRange: 0,
    });
  });

  it('caps the lists but counts everything; files without statistics are counted as unknown', () => {
    const files = Array.from({ length: 30 }, (_, i) => range(`p${String(i).padStart(2, '0')}`, 'a', 'z'));
    const result = findKeyOverlaps([...files, { file: 'nostats' }], 5);
    expect(result.filesOverlapping).toBe(30);
    expect(result.overlappingPairs).toBe((30 * 29) / 2);
    expect(result.overlaps).toHaveLength(5);
    expect(result.overlaps[0]).toEqual({ file: 'p00', overlapsWith: ['p01', 'p02', 'p03', 'p04', 'p05'] });
    expect(result.filesWithoutKeyRange).toBe(1);
  });
});

describe('fileKeyRange', () => {
  it('spans the row groups, skips empty ones, and is unknown when a row group has no bounds', () => {
    const b = (s: string) => Buffer.from(s);
    expect(fileKeyRange('f', [{ rows: 5, keyMin: b('m'), keyMax: b('p') }, { rows: 0 }, { rows: 3, keyMin: b('c'), keyMax: b('d') }])).toEqual({ file: 'f', keyMin: b('c'), keyMax: b('p') });
    expect(fileKeyRange('f', [{ rows: 5, keyMin: b('m'), keyMax: b('p') }, { rows: 2 }])).toEqual({ file: 'f' });
  });
});
