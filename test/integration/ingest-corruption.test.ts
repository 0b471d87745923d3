import { readFile, writeFile } from 'node:fs/promises';
import { Int32, Table, Utf8, vectorFromArray } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IngestError, createRowMapper, readFileFooter, readRecordBatches, scanDrop } from '../../ingest/index.js';
import { writeArrowFile, writeParquetFile } from '../helpers/ingest-files.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

/** Deterministic PRNG (mulberry32), so a failure reproduces. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The rows of the table every file is written from. */
const TABLE_ROWS = 400;

interface ReadOutcome {
  /** Each mapped row as `keyhex:valuehex`, in file order. */
  rows: string[];
  rejects: number;
}

/** Scans, reads the footer, reads and maps every batch: the rows it got, or the IngestError it refused with. */
async function ingestAll(path: string): Promise<ReadOutcome | IngestError> {
  try {
    const { files } = await scanDrop(path);
    const footer = await readFileFooter(files[0]!, 'id');
    const mapper = createRowMapper({ keyColumn: 'id' });
    const out: ReadOutcome = { rows: [], rejects: 0 };
    for await (const { rowGroup, rowOffset, batch } of readRecordBatches(files[0]!, { stallTimeoutMs: 10_000 })) {
      const mapped = mapper.mapBatch(batch, { file: path, rowGroup, rowOffset });
      for (const r of mapped.rows) out.rows.push(`${r.key.toString('hex')}:${r.value.toString('hex')}`);
      for (const reject of mapped.rejects) expect(reject.file).toBe(path);
      out.rejects += mapped.rejects.length;
    }
    expect(out.rows.length + out.rejects).toBe(footer.rows);
    return out;
  } catch (err) {
    if (err instanceof IngestError) return err;
    throw err;
  }
}

/** Rows at the same position whose key or value differ. */
function rowsDiffering(a: readonly string[], b: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) n++;
  return n;
}

describe('damaged files are read consistently or refused, never crash or hang', () => {
  let dir: TempDir;
  const originals = new Map<string, Buffer>();
  const originalRows = new Map<string, string[]>();

  beforeAll(async () => {
    dir = await makeTempDir('shardpipe-ingest-corrupt-');
    const table = new Table({
      id: vectorFromArray(Int32Array.from({ length: 400 }, (_, i) => i)),
      name: vectorFromArray(Array.from({ length: 400 }, (_, i) => `name-${i}-${'x'.repeat(i % 17)}`), new Utf8()),
      n: vectorFromArray(Array.from({ length: 400 }, (_, i) => (i % 3 === 0 ? null : i * 7)), new Int32()),
    });
    await writeParquetFile(dir.sub('ok.parquet'), table, { codec: 'snappy', rowGroupRows: 100 });
    await writeArrowFile(dir.sub('ok.arrow'), table, 'file');
    await writeArrowFile(dir.sub('ok.arrows'), table, 'stream');
    for (const name of ['ok.parquet', 'ok.arrow', 'ok.arrows']) originals.set(name, await readFile(dir.sub(name)));
  });

  it.each(['ok.parquet', 'ok.arrow', 'ok.arrows'])('%s undamaged reads every row of the table, in order, with its values', async (name) => {
    const outcome = await ingestAll(dir.sub(name));
    if (outcome instanceof IngestError) throw outcome;
    expect(outcome.rejects).toBe(0);
    expect(outcome.rows).toHaveLength(TABLE_ROWS);
    const decoded = outcome.rows.map((r) => {
      const [key, value] = r.split(':') as [string, string];
      return { key, doc: JSON.parse(Buffer.from(value, 'hex').toString('utf8')) as { name: string; n: number | null } };
    });
    decoded.forEach(({ key, doc }, i) => {
      if (i > 0) expect(key > decoded[i - 1]!.key, `row ${i} sorts after row ${i - 1}`).toBe(true);
      expect(doc).toEqual({ name: `name-${i}-${'x'.repeat(i % 17)}`, n: i % 3 === 0 ? null : i * 7 });
    });
    originalRows.set(name, outcome.rows);
  });

  afterAll(async () => {
    await dir.remove();
  });

  it.each(['ok.parquet', 'ok.arrow', 'ok.arrows'])('%s with random bytes overwritten or cut off', async (name) => {
    const original = originals.get(name)!;
    const next = random(name.length * 7919);
    const outcomes = { read: 0, refused: 0 };
    // Read again here: the test stands alone when run by name.
    const expected = originalRows.get(name) ?? ((await ingestAll(dir.sub(name))) as ReadOutcome).rows;
    expect(expected).toHaveLength(TABLE_ROWS);
    for (let round = 0; round < 12; round++) {
      const damaged = Buffer.from(original);
      const extension = name.slice(name.indexOf('.'));
      const path = dir.sub(`damaged-${round}${extension}`);
      const truncated = round % 4 === 3;
      const overwritten = 1 + round;
      if (truncated) {
        // Cut off inside the body but keep the magic at both ends, as a torn copy with a lucky end would.
        const cut = Math.floor(8 + next() * (damaged.byteLength - 16));
        await writeFile(path, Buffer.concat([damaged.subarray(0, cut), damaged.subarray(damaged.byteLength - 6)]));
      } else {
        // Overwrite a few bytes anywhere between the leading and trailing magic.
        for (let k = 0; k < overwritten; k++) damaged[Math.floor(6 + next() * (damaged.byteLength - 12))] = Math.floor(next() * 256);
        await writeFile(path, damaged);
      }
      const outcome = await ingestAll(path);
      if (outcome instanceof IngestError) {
        outcomes.refused++;
        expect(outcome.message).toContain(`damaged-${round}`);
        expect(outcome.context.file).toBe(path);
        // Damage is reported as damage; a mangled type or codec field may read as a feature ingest lacks.
        expect(truncated ? ['INGEST_CORRUPT_FILE'] : ['INGEST_CORRUPT_FILE', 'INGEST_UNSUPPORTED_FORMAT'], `round ${round}`).toContain(outcome.code);
      } else {
        outcomes.read++;
        // A torn file lacks data: it must never read as a shorter table.
        expect(truncated, `round ${round}: a truncated file was read`).toBe(false);
        // What reads is the whole table: every row, as a row or a located reject — not garbage of
        // another length. The formats carry no checksum of their data, so a byte overwritten inside a
        // data buffer changes values unseen; one byte reaches at most 8 rows (a validity bitmap byte).
        expect(outcome.rows.length + outcome.rejects, `round ${round}`).toBe(TABLE_ROWS);
        expect(rowsDiffering(outcome.rows, expected), `round ${round}: rows changed by ${overwritten} overwritten byte(s)`).toBeLessThanOrEqual(8 * overwritten);
      }
    }
    expect(outcomes.read + outcomes.refused).toBe(12);
  }, 60_000);
});
