import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const DIST = resolve(import.meta.dirname, '../../dist');

/** A loader hook that refuses to resolve the Azure SDK: importing a module that loads it then fails. */
const REFUSE_AZURE_HOOK = `export async function resolve(specifier, context, next) {
  if (specifier === '@azure/storage-blob' || specifier.startsWith('@azure/storage-blob/')) throw new Error('@azure/storage-blob was loaded');
  return next(specifier, context);
}`;

describe('the Azure SDK loads only for az:// URLs (built dist, a real Node process)', () => {
  it('importing every folder index does not load @azure/storage-blob; importing it directly does (the check works)', async () => {
    const modules = ['common', 'store', 'ingest', 'backup', 'restore', 'jobs', 'metrics-server'].map((f) => pathToFileURL(resolve(DIST, f, 'index.js')).href);
    const script = `
      import { register } from 'node:module';
      register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(REFUSE_AZURE_HOOK)}));
      const loaded = [];
      for (const m of ${JSON.stringify(modules)}) { await import(m); loaded.push(m); }
      let refused = false;
      try { await import('@azure/storage-blob'); } catch (err) { refused = String(err).includes('was loaded'); }
      console.log(JSON.stringify({ loaded: loaded.length, refused }));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: resolve(DIST, '..') });
    expect(JSON.parse(stdout)).toEqual({ loaded: modules.length, refused: true });
  }, 30_000);
});
