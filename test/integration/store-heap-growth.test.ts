import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STORE_HEAP_GROWING_PERCENT, findFreePort, heapGrowthFlagGiven } from '../../common/index.js';
import { PartitionMap } from '../../store/index.js';

// `shardpipe store start` widens V8's old-generation growth (common/old-generation.ts) unless node's
// command line sets it. Seen in the real CLI child: a preload records every V8 flag the process
// sets (passing each on to V8) and writes them out when the drained node exits.

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin', 'shardpipe.js');
const WIDENED = `--heap-growing-percent=${STORE_HEAP_GROWING_PERCENT}`;

let dir: string;
let preload: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'store-heap-growth-'));
  preload = join(dir, 'record-v8-flags.cjs');
  await writeFile(
    preload,
    `const v8 = require('node:v8');
const fs = require('node:fs');
const set = v8.setFlagsFromString;
const seen = [];
v8.setFlagsFromString = (flags) => { seen.push(flags); set(flags); };
require('node:module').syncBuiltinESMExports();
process.on('exit', () => fs.writeFileSync(process.env.V8_FLAGS_OUT, JSON.stringify(seen)));
`,
  );
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The V8 flags a store node set from its start until it drained after SIGTERM. */
async function flagsSetByStoreNode(nodeArgs: string[], name: string): Promise<string[]> {
  const address = `127.0.0.1:${await findFreePort()}`;
  const mapFile = join(dir, `${name}-map.json`);
  await writeFile(mapFile, JSON.stringify(PartitionMap.evenlySplit(1, [address], 1).toJson()));
  const out = join(dir, `${name}.json`);
  const child = spawn(process.execPath, [...nodeArgs, '--require', preload, BIN, 'store', 'start', '--map', mapFile, '--node', address, '--data', join(dir, `${name}-data`), '--log-level', 'error'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, V8_FLAGS_OUT: out },
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit');
  for await (const line of createInterface({ input: child.stdout })) {
    if (line.includes('"event":"ready"')) break;
  }
  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  expect(code, stderr).toBe(0);
  return JSON.parse(await readFile(out, 'utf8')) as string[];
}

describe('a store node widens V8 old-generation growth', { timeout: 60_000 }, () => {
  it(`sets ${WIDENED} in the store start process; a growth factor on node's command line wins`, async () => {
    expect(await flagsSetByStoreNode([], 'default')).toContain(WIDENED);
    const given = await flagsSetByStoreNode(['--heap-growing-percent=50'], 'given');
    expect(given.filter((f) => f.includes('heap-growing-percent'))).toEqual([]);
  });

  it('recognises the flag in either spelling and nothing else', () => {
    expect(heapGrowthFlagGiven(['--heap-growing-percent=50'])).toBe(true);
    expect(heapGrowthFlagGiven(['--heap_growing_percent=50', '--cpu-prof'])).toBe(true);
    expect(heapGrowthFlagGiven(['--max-old-space-size=512', '--cpu-prof'])).toBe(false);
    expect(heapGrowthFlagGiven([])).toBe(false);
  });
});
