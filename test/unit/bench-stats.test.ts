import { describe, expect, it } from 'vitest';
import { compareRuns, median, summarize, type Figure, type FigureSpec } from '../../bench/bench-stats.js';

const specs: FigureSpec[] = [
  { id: 'limit', label: 'limit', unit: 'rows/s', better: 'higher' },
  { id: 'e2e', label: 'end to end', unit: 'rows/s', better: 'higher', baseline: 'limit' },
  { id: 'rss', label: 'peak RSS', unit: 'MiB', better: 'lower', process: 'ingest child' },
];

function figure(id: string, better: 'higher' | 'lower', samples: number[]): Figure {
  return summarize([{ id, label: id, unit: 'x', better }], new Map([[id, samples]]))[0]!;
}

describe('bench suite statistics', () => {
  it('takes the median of odd and even counts', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it('summarizes samples into median, spread and the ratio to the baseline of the same run', () => {
    const figures = summarize(specs, new Map([['limit', [500, 400, 600]], ['e2e', [100, 120, 110, Number.NaN]], ['rss', [200]]]));
    const [limit, e2e, rss] = figures;
    expect(limit).toMatchObject({ median: 500, spread: 200, spreadRatio: 0.4 });
    expect(e2e).toMatchObject({ samples: [100, 120, 110], median: 110, spread: 20, baseline: 'limit' });
    expect(e2e!.ratio).toBeCloseTo(0.22, 10);
    expect(rss).toMatchObject({ median: 200, spread: 0, process: 'ingest child' });
    expect(rss!.ratio).toBeUndefined();
  });

  it('flags only moves beyond the larger spread of the two runs, in the direction that is good or bad for the figure', () => {
    const previous = [figure('tput', 'higher', [100, 110, 90]), figure('rss', 'lower', [200, 210, 190]), figure('steady', 'higher', [100, 101, 99]), figure('dropped', 'higher', [1])];
    const current = [figure('tput', 'higher', [70, 72, 71]), figure('rss', 'lower', [150, 151, 152]), figure('steady', 'higher', [115, 90, 100]), figure('added', 'higher', [5])];
    const byId = new Map(compareRuns(previous, current).map((c) => [c.id, c]));
    expect(byId.get('tput')).toMatchObject({ verdict: 'worse', previous: 100, current: 71 });
    expect(byId.get('tput')!.change).toBeCloseTo(-0.29, 10);
    expect(byId.get('rss')!.verdict).toBe('better');
    // Same median, wide spread now: inside the band.
    expect(byId.get('steady')!.verdict).toBe('within spread');
    expect(byId.get('added')!.verdict).toBe('new');
    expect(byId.get('dropped')!.verdict).toBe('gone');
  });

  it('needs a minimum relative change when both runs had no spread at all', () => {
    const previous = [figure('a', 'higher', [100]), figure('b', 'higher', [100])];
    const current = [figure('a', 'higher', [104]), figure('b', 'higher', [90])];
    const byId = new Map(compareRuns(previous, current, 0.05).map((c) => [c.id, c]));
    expect(byId.get('a')!.verdict).toBe('within spread');
    expect(byId.get('b')!.verdict).toBe('worse');
    expect(byId.get('b')!.tolerance).toBeCloseTo(0.05, 10);
  });
});
