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

/** Scans, reads the footer, reads and maps every batch: the rows it got, or the IngestError it refused with. */
async function ingestAll(path: string): Promise<number | IngestError> {
  try {
    const { files } = await scanDrop(path);
    const footer = await readFileFooter(files[0]!, 'id');
    const mapper = createRowMapper({ keyColumn: 'id' });
    let rows = 0;
    for await (const { rowGroup, rowOffset, batch } of readRecordBatches(files[0]!, { stallTimeoutMs: 10_000 })) {
      const mapped = mapper.mapBatch(batch, { file: path, rowGroup, rowOffset });
      rows += mapped.rows.length + mapped.rejects.length;
    }
    expect(rows).toBe(footer.rows);
    return rows;
  } catch (err) {
    if (err instanceof IngestError) return err;
    throw err;
  }
}

describe('damaged files are read consistently or refused, never crash or hang', () => {
  let dir: TempDir;
  const originals = new Map<string, Buffer>();

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

  afterAll(async () => {
    await dir.remove();
  });

  it.each(['ok.parquet', 'ok.arrow', 'ok.arrows'])('%s with random bytes overwritten or cut off', async (name) => {
    const original = originals.get(name)!;
    const next = random(name.length * 7919);
    const outcomes = { read: 0, refused: 0 };
    for (let round = 0; round < 12; round++) {
      const damaged = Buffer.from(original);
      const extension = name.slice(name.indexOf('.'));
      const path = dir.sub(`damaged-${round}${extension}`);
      if (round % 4 === 3) {
        // Cut off inside the body but keep the magic at both ends, as a torn copy with a lucky end would.
        const cut = Math.floor(8 + next() * (damaged.byteLength - 16));
        await writeFile(path, Buffer.concat([damaged.subarray(0, cut), damaged.subarray(damaged.byteLength - 6)]));
      } else {
        // Overwrite a few bytes anywhere between the leading and trailing magic.
        for (let k = 0; k < 1 + round; k++) damaged[Math.floor(6 + next() * (damaged.byteLength - 12))] = Math.floor(next() * 256);
        await writeFile(path, damaged);
      }
      const outcome = await ingestAll(path);
      if (outcome instanceof IngestError) {
        outcomes.refused++;
        expect(outcome.message).toContain(`damaged-${round}`);
        expect(outcome.context.file).toBe(path);
      } else {
        outcomes.read++;
      }
    }
    expect(outcomes.read + outcomes.refused).toBe(12);
  }, 60_000);
});
