// Output formatting shared by the benchmarks: aligned tables and rounded JSON.

/** Plain text table: text columns left-aligned, figures right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  // Text columns left-aligned, figures right-aligned.
  const isText = header.map((_, c) => rows.some((r) => /[a-z]/i.test(r[c]!) && !/^[\d.,×-]+$/.test(r[c]!)));
  const line = (cells: string[]): string => cells.map((cell, c) => (isText[c] ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function int(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function fixed(n: number, digits: number): string {
  return n.toFixed(digits);
}

/** JSON.stringify replacer: fractions to 3 decimals. */
export function roundNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value;
}
