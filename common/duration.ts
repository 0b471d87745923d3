const UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Bounds of a duration, and the name used in messages (e.g. "--ttl"). */
export interface DurationRange {
  /** Smallest allowed, in ms. Default 0. */
  minMs?: number;
  /** Largest allowed, in ms. Default Number.MAX_SAFE_INTEGER. */
  maxMs?: number;
  /** What the duration is, for messages. Default "duration". */
  name?: string;
}

/**
 * Parses "250ms", "30s", "5m", "2h", "1d" or a bare number of milliseconds, and checks it lies in
 * `range` (by default any whole number of ms JavaScript holds exactly); throws RangeError naming
 * the allowed range otherwise.
 */
export function parseDurationMs(text: string, range: DurationRange = {}): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) {
    throw new RangeError(`invalid duration "${text}": use a number with a unit, e.g. 500ms, 30s, 5m, 2h, 1d`);
  }
  const value = Math.round(Number(match[1]) * (UNITS_MS[match[2] ?? 'ms'] ?? 1));
  const minMs = range.minMs ?? 0;
  const maxMs = range.maxMs ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isSafeInteger(value) || value < minMs || value > maxMs) {
    const shown = Number.isSafeInteger(value) ? `${value} ms` : 'too long';
    throw new RangeError(`${range.name ?? 'duration'} "${text.trim()}" is ${shown}, out of range: allowed ${formatDurationMs(minMs)}–${formatDurationMs(maxMs)}`);
  }
  return value;
}

/** A duration in the largest whole unit that fits it exactly, e.g. "36500d", "90s", "250ms". */
export function formatDurationMs(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNITS_MS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
