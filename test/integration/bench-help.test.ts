import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

// Every script a user can run from bench/ answers --help with its usage and exit code 0 before it
// starts any work (README rule: everything a user can type has --help). A script is a file no other
// bench file imports; worker-thread modules (they need a parent thread) are not scripts.

const BENCH = resolve(import.meta.dirname, '../../bench');
const DIST = resolve(import.meta.dirname, '../../dist/bench');

async function benchScripts(): Promise<string[]> {
  const files = (await readdir(BENCH)).filter((f) => f.endsWith('.ts'));
  const sources = new Map(await Promise.all(files.map(async (f) => [f, await readFile(join(BENCH, f), 'utf8')] as const)));
  const imported = new Set<string>();
  for (const text of sources.values()) for (const m of text.matchAll(/from '\.\/([a-z0-9-]+)\.js'/g)) imported.add(`${m[1]}.ts`);
  return files.filter((f) => !imported.has(f) && !/\bparentPort\b/.test(sources.get(f)!)).map((f) => f.replace(/\.ts$/, ''));
}

function run(script: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(DIST, `${script}.js`), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return once(child, 'exit').then(([code]) => ({ code: code as number | null, stdout, stderr }));
}

describe('bench scripts answer --help', { timeout: 120_000 }, () => {
  it('every bench/*.ts script prints a usage line naming itself and exits 0', async () => {
    const scripts = await benchScripts();
    // The suite and the benches it runs, at least: the list is what the folder holds, not a copy of it.
    expect(scripts).toEqual(expect.arrayContaining(['suite', 'store-bench', 'ingest-bench', 'backup-bench', 'restore-bench', 'compare']));
    // Three at a time: each start loads the modules its bench uses.
    const results = new Map<string, Awaited<ReturnType<typeof run>>>();
    const queue = [...scripts];
    await Promise.all(Array.from({ length: 3 }, async () => {
      for (let script = queue.shift(); script !== undefined; script = queue.shift()) results.set(script, await run(script, ['--help']));
    }));
    for (const script of scripts) {
      const r = results.get(script)!;
      expect(r.code, `${script} --help: ${r.stderr.slice(0, 500)}`).toBe(0);
      expect(r.stdout.split('\n')[0], script).toMatch(new RegExp(`^(usage: )?node dist/bench/${script}\\.js`));
    }
  });

  it('an unknown option gets the error and the usage on stderr and exit code 2, not a stack trace', async () => {
    for (const script of ['suite', 'store-bench', 'compare']) {
      const r = await run(script, ['--no-such-option']);
      expect(r.code, script).toBe(2);
      expect(r.stderr, script).toContain("Unknown option '--no-such-option'");
      expect(r.stderr, script).toContain(`usage: node dist/bench/${script}.js`);
      expect(r.stderr, script).not.toContain('    at ');
    }
  });
});
