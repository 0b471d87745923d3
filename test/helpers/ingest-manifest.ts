import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

/** The real-world test files (apache/parquet-testing, arrow-testing, Spark output), kept in the repo with their licenses. */
export const REAL_DATA_DIR = resolve(import.meta.dirname, '../fixtures/real');

/** One row of MANIFEST.md's table. */
export interface ManifestEntry {
  /** Path relative to REAL_DATA_DIR, e.g. `parquet-testing/data/binary.parquet`. */
  file: string;
  /** `data` or `bad_data`. */
  folder: string;
  /** Row count, or undefined where the manifest says `?`. */
  rows: number | undefined;
  /** True when the DuckDB column starts with "reads". */
  duckdbReads: boolean;
  duckdb: string;
  /** A usable key column name, or undefined (empty, "(none; …)", "(map column)"). */
  keyColumn: string | undefined;
  /** True when the key candidate is annotated "(has nulls)". */
  keyHasNulls: boolean;
}

export function readManifest(): ManifestEntry[] {
  const text = readFileSync(resolve(REAL_DATA_DIR, 'MANIFEST.md'), 'utf8');
  const entries: ManifestEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('| parquet-testing/')) continue;
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    const [file, , , rows, duckdb, key] = cells as [string, string, string, string, string, string];
    const candidate = key.startsWith('(') || key === '' ? undefined : key.split(' (')[0]!.trim();
    entries.push({
      file,
      folder: file.split('/')[1]!,
      rows: /^\d+$/.test(rows) ? Number(rows) : undefined,
      duckdbReads: duckdb.startsWith('reads'),
      duckdb,
      keyColumn: candidate === '' ? undefined : candidate,
      keyHasNulls: key.includes('has nulls'),
    });
  }
  return entries;
}
