import { describe, expect, it } from 'vitest';
import { parseDurationMs } from '../../common/duration.js';

describe('parseDurationMs', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['2h', 7_200_000],
    ['1d', 86_400_000],
    ['250', 250],
    ['0', 0],
    ['0s', 0],
    ['1.5s', 1500],
    ['0.5m', 30_000],
    [' 10 s ', 10_000],
    ['1.0004ms', 1], // rounded to whole milliseconds
  ])('parses %j as %d ms', (text, expected) => {
    expect(parseDurationMs(text)).toBe(expected);
  });

  it.each(['', '   ', 'abc', '5x', '5sec', '-1s', '1e3', '.5s', '5.s', 's', '1h30m', '5 m s', 'NaN'])(
    'rejects %j with a RangeError',
    (text) => {
      expect(() => parseDurationMs(text)).toThrow(RangeError);
      expect(() => parseDurationMs(text)).toThrow(`invalid duration "${text}"`);
    },
  );
});
