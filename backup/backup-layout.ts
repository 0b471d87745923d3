/** The manifest's name inside a backup folder. Its presence marks the backup complete (FORMAT.md). */
export const MANIFEST_FILE = 'manifest.json';

/** `shard-00007.parquet`: the file of shard `index` (5-digit zero padding, wider past 99,999). */
export function shardFileName(index: number): string {
  if (!Number.isInteger(index) || index < 0) throw new RangeError(`a shard index is a whole number ≥ 0, got ${index}`);
  return `shard-${String(index).padStart(5, '0')}.parquet`;
}
