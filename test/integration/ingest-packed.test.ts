import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Key } from '../../store/index.js';
import { toParquet } from '../helpers/spark-drop.js';
import { runCli } from '../helpers/store-cluster.js';
import { useStack } from '../helpers/stack.js';

// The packed path (record batches mapped straight into PackedRows) end to end through the CLI: rejects
// keep their file, row group and row across row groups and decoded batches (8192 rows each), keys out
// of order are counted (or refused with --strict-order), and the store holds exactly the input.

const ROWS = 30_000;
/** Row groups of 12,000 rows: groups 0 and 1 each decode as two batches (rows 0–8191 and 8192–11999). */
const ROW_GROUP_ROWS = 12_000;
/** Pairs of rows whose keys are swapped: inside a batch, across a batch boundary, across row groups. */
const SWAPS = [100, 8191, 11_999, 20_000];
/** Rows whose key repeats the row before's (the later row's value must win). */
const DUPLICATE = 25_000;
const EMPTY_KEY = 9_000;
const NULL_KEY = 13_000;
const NULL_VALUE = 27_000;

interface Input {
  ids: Array<string | null>;
  payloads: Array<string | null>;
}

function input(prefix: string): Input {
  const ids: Array<string | null> = Array.from({ length: ROWS }, (_, i) => `${prefix}${String(i).padStart(6, '0')}`);
  const payloads: Array<string | null> = Array.from({ length: ROWS }, (_, i) => `value-${i}`);
  for (const at of SWAPS) [ids[at], ids[at + 1]] = [ids[at + 1]!, ids[at]!];
  ids[DUPLICATE] = ids[DUPLICATE - 1]!;
  ids[EMPTY_KEY] = '';
  ids[NULL_KEY] = null;
  payloads[NULL_VALUE] = null;
  return { ids, payloads };
}

/** What the ingest must report and store, worked out from the input the plain way. */
function expected(rows: Input): { accepted: number; outOfOrder: number; stored: Map<string, string> } {
  let previous: string | undefined;
  let accepted = 0;
  let outOfOrder = 0;
  const stored = new Map<string, string>();
  rows.ids.forEach((id, i) => {
    const value = rows.payloads[i];
    if (id === null || id === '' || value === null) return;
    accepted++;
    if (previous !== undefined && Buffer.compare(Buffer.from(id), Buffer.from(previous)) < 0) outOfOrder++;
    previous = id;
    stored.set(id, value!);
  });
  return { accepted, outOfOrder, stored };
}

describe('shardpipe ingest: the packed path', () => {
  const stack = useStack({ prefix: 'shardpipe-ingest-packed-', nodes: 2, partitions: 4 });

  const writeDrop = async (name: string, rows: Input): Promise<string> => {
    const dir = join(stack.dir, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'part-00000-p.c000.snappy.parquet'), toParquet({ id: rows.ids, payload: rows.payloads }, 'SNAPPY', ROW_GROUP_ROWS));
    await writeFile(join(dir, '_SUCCESS'), '');
    return dir;
  };
  const ingest = (dir: string, ...extra: string[]) =>
    runCli(['ingest', dir, '--key-column', 'id', '--value-column', 'payload', ...stack.cliArgs, '--data-dir', join(stack.dir, 'data'), '--json', '--log-level', 'warn', ...extra]);

  it('rejects keep file, row group and row across row groups and batches; keys out of order are counted; the store holds exactly the input, a repeated key with its later value', async () => {
    const rows = input('p-');
    const want = expected(rows);
    const r = await ingest(await writeDrop('drop-p', rows));
    expect(r.code, r.stderr).toBe(2); // rows were rejected
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ rowsIngested: want.accepted, rowsRejected: 3, rowsOutOfOrder: want.outOfOrder, filesOk: 1, filesFailed: 0 });
    // One below the key before it per swapped pair (the duplicate is equal, not below).
    expect(want.outOfOrder).toBe(SWAPS.length);
    const rejects = (await readFile(report.rejectsPath, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { file: string; rowGroup: number; row: number; reason: string; key?: string });
    expect(rejects.map(({ file, rowGroup, row, reason }) => ({ file, rowGroup, row, reason })).sort((a, b) => a.rowGroup - b.rowGroup)).toEqual([
      { file: 'part-00000-p.c000.snappy.parquet', rowGroup: 0, row: EMPTY_KEY, reason: 'key is empty: keys must be 1 or more bytes' },
      { file: 'part-00000-p.c000.snappy.parquet', rowGroup: 1, row: NULL_KEY - ROW_GROUP_ROWS, reason: 'key column "id" is null' },
      { file: 'part-00000-p.c000.snappy.parquet', rowGroup: 2, row: NULL_VALUE - 2 * ROW_GROUP_ROWS, reason: 'value column "payload" is null' },
    ]);
    expect(rejects.find((l) => l.rowGroup === 2)!.key).toBe(Buffer.from(rows.ids[NULL_VALUE]!).toString('hex'));

    const digest = await stack.client.checksum(Buffer.from('p-'), Buffer.from('p.'));
    expect(digest.count).toBe(want.stored.size);
    const repeated = rows.ids[DUPLICATE]!;
    expect((await stack.client.get(Key.fromUtf8(repeated)))?.value.toString()).toBe(`value-${DUPLICATE}`);
    for (const at of [0, SWAPS[1]!, SWAPS[1]! + 1, SWAPS[2]! + 1, ROWS - 1]) {
      const id = rows.ids[at]!;
      expect((await stack.client.get(Key.fromUtf8(id)))?.value.toString(), id).toBe(want.stored.get(id));
    }
  });

  it('--strict-order: the first key below the key before it fails the file with INGEST_OUT_OF_ORDER naming both keys', async () => {
    const rows = input('s-');
    const r = await ingest(await writeDrop('drop-s', rows), '--strict-order');
    expect(r.code, r.stderr).toBe(2);
    const report = JSON.parse(r.stdout);
    expect(report.filesFailed).toBe(1);
    expect(report.failures[0].code).toBe('INGEST_OUT_OF_ORDER');
    const [first] = SWAPS;
    const below = Buffer.from(rows.ids[first! + 1]!).toString('hex');
    const before = Buffer.from(rows.ids[first!]!).toString('hex');
    expect(report.failures[0].reason).toContain(`key ${below} is below the previous key ${before}`);
    // Nothing of the failing batch was written: the rows before it (none, in the first batch) at most.
    expect(report.rowsIngested).toBe(0);
  });
});
