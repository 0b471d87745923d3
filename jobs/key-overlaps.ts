/** A file's key range as its footer bounds it; absent bounds: unknown. */
export interface FileKeyRange {
  file: string;
  /** Lowest key bound over the file's row groups (bytewise, as store keys compare). */
  keyMin?: Buffer;
  /** Highest key bound over the file's row groups. */
  keyMax?: Buffer;
}

/** Which files of a drop overlap in key range. */
export interface KeyOverlaps {
  /** Files whose key range overlaps at least one other file's. */
  filesOverlapping: number;
  /** Pairs of files whose key ranges overlap. */
  overlappingPairs: number;
  /** The overlapping files (at most `maxListed`), each with the files it overlaps (at most `maxListed`). */
  overlaps: Array<{ file: string; overlapsWith: string[] }>;
  /** Files with rows but no usable key statistics: whether they overlap is unknown. */
  filesWithoutKeyRange: number;
}

/**
 * Finds the files whose key ranges overlap (sharing even one key counts). Pure; footers only, so it
 * errs one way: statistics are bounds (writers may truncate them outwards), so files reported may
 * not share a key, but files not reported cannot. Sorted drops (Spark's `sortBy` output) have none.
 */
export function findKeyOverlaps(files: readonly FileKeyRange[], maxListed = 20): KeyOverlaps {
  const known = files
    .filter((f): f is Required<FileKeyRange> => f.keyMin !== undefined && f.keyMax !== undefined)
    .sort((a, b) => Buffer.compare(a.keyMin, b.keyMin) || a.file.localeCompare(b.file));
  const partners = new Map<string, string[]>();
  let overlappingPairs = 0;
  for (let i = 0; i < known.length; i++) {
    const a = known[i]!;
    // Sorted by start: every later file starting at or before a's end overlaps a; the first that starts after it ends the run.
    for (let j = i + 1; j < known.length && Buffer.compare(known[j]!.keyMin, a.keyMax) <= 0; j++) {
      const b = known[j]!;
      overlappingPairs++;
      for (const [x, y] of [[a.file, b.file], [b.file, a.file]] as const) {
        const list = partners.get(x) ?? [];
        list.push(y);
        partners.set(x, list);
      }
    }
  }
  const overlaps = [...partners.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .slice(0, maxListed)
    .map(([file, others]) => ({ file, overlapsWith: others.sort((a, b) => a.localeCompare(b)).slice(0, maxListed) }));
  return { filesOverlapping: partners.size, overlappingPairs, overlaps, filesWithoutKeyRange: files.length - known.length };
}

/** A file's key range from its row groups' bounds: unknown when any row group with rows has none. */
export function fileKeyRange(file: string, rowGroups: ReadonlyArray<{ rows: number; keyMin?: Buffer; keyMax?: Buffer }>): FileKeyRange {
  let keyMin: Buffer | undefined;
  let keyMax: Buffer | undefined;
  for (const g of rowGroups) {
    if (g.rows === 0) continue;
    if (g.keyMin === undefined || g.keyMax === undefined) return { file };
    if (keyMin === undefined || Buffer.compare(g.keyMin, keyMin) < 0) keyMin = g.keyMin;
    if (keyMax === undefined || Buffer.compare(g.keyMax, keyMax) > 0) keyMax = g.keyMax;
  }
  return { file, keyMin, keyMax };
}
