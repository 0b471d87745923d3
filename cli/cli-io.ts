import { CliUsageError } from './cli-env.js';

// Light on purpose: every command imports it while the command tree is built. What needs store/
// is in store-io.ts, which commands load in their actions.

/** Exit codes scripts can rely on (README: "Exit codes"). */
export const EXIT = { ok: 0, failed: 1, incomplete: 2, notFound: 3, conflict: 4, usage: 64 } as const;

export type Encoding = 'utf8' | 'base64';

export function parseEncoding(value: string): Encoding {
  if (value !== 'utf8' && value !== 'base64') throw new CliUsageError(`--encoding must be utf8 or base64, got "${value}"`);
  return value;
}

export function decodeArg(text: string, encoding: Encoding, what: string): Buffer {
  if (encoding === 'base64') {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new CliUsageError(`${what} is not valid base64: "${text.slice(0, 40)}"`);
    return Buffer.from(text, 'base64');
  }
  return Buffer.from(text, 'utf8');
}

export function encodeOut(bytes: Buffer, encoding: Encoding): string {
  return encoding === 'base64' ? bytes.toString('base64') : bytes.toString('utf8');
}

export function parseSeeds(flag: string | undefined, env: string | undefined): string[] {
  const text = flag ?? env;
  if (!text) throw new CliUsageError('no store nodes given: pass --seeds HOST:PORT[,HOST:PORT...] or set SHARDPIPE_SEEDS');
  const seeds = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const seed of seeds) {
    if (!/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(seed)) throw new CliUsageError(`--seeds: "${seed}" is not HOST:PORT`);
  }
  return seeds;
}

export function parsePositiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new CliUsageError(`${flag} must be a whole number ≥ 0, got "${value}"`);
  return n;
}


/** Plain left-aligned text table. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
