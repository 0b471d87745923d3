const UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses "250ms", "30s", "5m", "2h", "1d" or a bare number of milliseconds. */
export function parseDurationMs(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) {
    throw new RangeError(`invalid duration "${text}": use a number with a unit, e.g. 500ms, 30s, 5m, 2h, 1d`);
  }
  const value = Number(match[1]) * (UNITS_MS[match[2] ?? 'ms'] ?? 1);
  return Math.round(value);
}
