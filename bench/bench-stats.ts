// Pure arithmetic of the bench suite: medians and spreads over repeated runs, ratios to baselines,
// and the comparison of two recorded runs. No I/O here, so a unit test can pin it down.

/** Which way is good for a figure. */
export type Better = 'higher' | 'lower';

/** One figure of a suite run as recorded in bench/history/*.json. */
export interface Figure {
  /** Stable id, e.g. `ingest.e2e.rowsPerSec`: what `bench:compare` matches runs by. */
  id: string;
  label: string;
  unit: string;
  better: Better;
  /** One value per repetition, in run order. */
  samples: number[];
  median: number;
  /** max − min of the samples (0 with one sample). */
  spread: number;
  /** spread / median. */
  spreadRatio: number;
  /** Id of the figure this one is measured against in the same run (limit, peer or no-delay run). */
  baseline?: string;
  /** median / the baseline's median. */
  ratio?: number;
  /** The process the figure belongs to, for RSS and CPU figures. */
  process?: string;
}

export interface FigureSpec {
  id: string;
  label: string;
  unit: string;
  better: Better;
  baseline?: string;
  process?: string;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The value at fraction `q` of the sorted values (q = 0.99: the p99; 1: the largest); NaN when there are none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** Medians, spreads and ratios of the figures; samples that are not finite numbers are dropped. */
export function summarize(specs: readonly FigureSpec[], samples: ReadonlyMap<string, readonly number[]>): Figure[] {
  const figures = specs.map((spec): Figure => {
    const values = (samples.get(spec.id) ?? []).filter((v) => Number.isFinite(v));
    const m = median(values);
    const spread = values.length === 0 ? Number.NaN : Math.max(...values) - Math.min(...values);
    return { ...spec, samples: values, median: m, spread, spreadRatio: m === 0 ? 0 : spread / m };
  });
  const byId = new Map(figures.map((f) => [f.id, f]));
  for (const f of figures) {
    if (f.baseline === undefined) continue;
    const base = byId.get(f.baseline);
    if (base !== undefined && Number.isFinite(base.median) && base.median !== 0) f.ratio = f.median / base.median;
  }
  return figures;
}

export type Verdict = 'better' | 'worse' | 'within spread' | 'new' | 'gone';

export interface FigureChange {
  id: string;
  label: string;
  unit: string;
  previous: number | undefined;
  current: number | undefined;
  /** current / previous − 1. */
  change: number | undefined;
  /** The band the change must leave to count: the larger of the two runs' spreads, as a fraction of the previous median. */
  tolerance: number | undefined;
  verdict: Verdict;
}

/**
 * Figure by figure, whether the newer run moved beyond what the runs themselves measured as noise:
 * a change counts when |current − previous| exceeds the larger of the two spreads (max − min over
 * repetitions), and at least `minChange` of the previous median (default 0.05), so a lucky run of
 * identical samples does not flag a 1% wobble.
 */
export function compareRuns(previous: readonly Figure[], current: readonly Figure[], minChange = 0.05): FigureChange[] {
  const before = new Map(previous.map((f) => [f.id, f]));
  const now = new Map(current.map((f) => [f.id, f]));
  const out: FigureChange[] = [];
  for (const cur of current) {
    const prev = before.get(cur.id);
    if (prev === undefined || !Number.isFinite(prev.median) || !Number.isFinite(cur.median) || prev.median === 0) {
      out.push({ id: cur.id, label: cur.label, unit: cur.unit, previous: prev?.median, current: cur.median, change: undefined, tolerance: undefined, verdict: 'new' });
      continue;
    }
    const delta = cur.median - prev.median;
    const band = Math.max(prev.spread, cur.spread, Math.abs(prev.median) * minChange);
    let verdict: Verdict = 'within spread';
    if (Math.abs(delta) > band) verdict = (delta > 0) === (cur.better === 'higher') ? 'better' : 'worse';
    out.push({ id: cur.id, label: cur.label, unit: cur.unit, previous: prev.median, current: cur.median, change: delta / prev.median, tolerance: band / Math.abs(prev.median), verdict });
  }
  for (const prev of previous) {
    if (!now.has(prev.id)) out.push({ id: prev.id, label: prev.label, unit: prev.unit, previous: prev.median, current: undefined, change: undefined, tolerance: undefined, verdict: 'gone' });
  }
  return out;
}
