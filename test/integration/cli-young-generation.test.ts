import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// `shardpipe ingest` keeps V8's young generation small (common/young-generation.ts): the main
// thread's new space must not grow to V8's 2 × 16 MiB however much it allocates, also after it
// started its Parquet decoder thread (a worker's start sets V8's flags back). Measured in the
// real CLI child: a preload churns short-lived objects when the command is done, the way a busy
// worker does, and reports the new space's size.

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin', 'shardpipe.js');
const MIB = 1024 * 1024;

let dir: string;
let preload: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cli-young-generation-'));
  preload = join(dir, 'churn.cjs');
  await writeFile(
    preload,
    `const v8 = require('node:v8');
const fs = require('node:fs');
process.on('exit', () => {
  let window = [];
  for (let i = 0; i < 3e6; i++) { window.push({ i, s: 'x' + i }); if (window.length > 20000) window = []; }
  const space = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
  fs.writeFileSync(process.env.YOUNG_GENERATION_OUT, String(space.space_size));
});
`,
  );
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function newSpaceBytes(nodeArgs: string[], args: string[], name: string): Promise<number> {
  const out = join(dir, `${name}.txt`);
  const child = spawn(process.execPath, [...nodeArgs, '--require', preload, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, YOUNG_GENERATION_OUT: out } });
  child.stdout.resume();
  child.stderr.resume();
  await once(child, 'exit');
  return Number(await readFile(out, 'utf8'));
}

describe('shardpipe ingest caps V8 young generation', () => {
  it('an ingest (which starts its decoder thread) stays at most 16 MiB of new space; other commands, and an ingest given a young-generation flag, grow to V8 own 32 MiB', async () => {
    const ingest = ['ingest', join(dir, 'no-such-drop'), '--key-column', 'k', '--seeds', '127.0.0.1:1', '--redis', 'redis://127.0.0.1:1'];
    expect(await newSpaceBytes([], ingest, 'ingest')).toBeLessThanOrEqual(16 * MIB);
    expect(await newSpaceBytes([], ['--help'], 'help')).toBe(32 * MIB);
    // A young-generation flag given to node wins: then V8 grows it as it does without the cap.
    expect(await newSpaceBytes(['--max-semi-space-size=16'], ingest, 'flag')).toBe(32 * MIB);
  });
});
