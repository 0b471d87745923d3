/**
 * A strict parser of the Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/), for tests: no parser package is
 * installed here, and prom-client can only write the format. Grammar, one item per line:
 *
 *   line        = blank | "#" comment | sample
 *   comment     = " HELP " name " " docstring | " TYPE " name " " type | any other text
 *   sample      = name [ "{" [ label { "," label } [ "," ] ] "}" ] spaces value [ spaces timestamp ]
 *   label       = labelname "=" '"' { char | "\\\\" | '\\"' | "\\n" } '"'
 *   name        = [a-zA-Z_:][a-zA-Z0-9_:]*       labelname = [a-zA-Z_][a-zA-Z0-9_]*
 *   value       = a Go ParseFloat number | NaN | +Inf | -Inf (any case, as ParseFloat takes them; prom-client writes "Nan")      timestamp = integer ms
 *   type        = counter | gauge | histogram | summary | untyped
 *
 * Beyond the grammar it checks what Prometheus checks on ingestion: at most one HELP and TYPE per
 * family, TYPE before the family's samples, a family's lines contiguous, no duplicate series,
 * non-negative counters, and histograms whose buckets are cumulative with a `+Inf` bucket equal
 * to `_count`. Any violation throws with the line number.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  timestampMs?: number;
}

export interface MetricFamily {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help?: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const FLOAT = /^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export class PrometheusParseError extends Error {}

/** Parses `text`; the families in order of appearance, by name. */
export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const closed = new Set<string>();
  const series = new Set<string>();
  let current: string | undefined;
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();

  const fail = (n: number, why: string): never => {
    throw new PrometheusParseError(`line ${n + 1}: ${why}: ${JSON.stringify(lines[n]?.slice(0, 120))}`);
  };
  const enter = (n: number, family: string): MetricFamily => {
    if (current !== family) {
      if (current !== undefined) closed.add(current);
      if (closed.has(family)) fail(n, `lines of family ${family} are not contiguous`);
      current = family;
    }
    let f = families.get(family);
    if (!f) {
      f = { name: family, type: 'untyped', samples: [] };
      families.set(family, f);
    }
    return f;
  };

  lines.forEach((line, n) => {
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ''] = m;
      if (!NAME.test(name!) || NAME.exec(name!)![0] !== name) fail(n, `invalid metric name in ${kind}`);
      const family = enter(n, name!);
      if (kind === 'HELP') {
        if (family.help !== undefined) fail(n, `second HELP for ${name}`);
        family.help = unescapeHelp(rest, () => fail(n, 'invalid escape in HELP'));
      } else {
        if (family.samples.length > 0) fail(n, `TYPE of ${name} after its samples`);
        if ((family as { typed?: boolean }).typed) fail(n, `second TYPE for ${name}`);
        if (!TYPES.has(rest.trim())) fail(n, `unknown type "${rest.trim()}"`);
        family.type = rest.trim() as MetricFamily['type'];
        (family as { typed?: boolean }).typed = true;
      }
      return;
    }
    const sample = parseSample(line, (why) => fail(n, why));
    const family = enter(n, familyOf(sample.name, families));
    const key = `${sample.name}{${Object.entries(sample.labels).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}}`;
    if (series.has(key)) fail(n, `duplicate series ${key}`);
    series.add(key);
    if (family.type === 'counter' && !(sample.value >= 0)) fail(n, 'a counter must be ≥ 0');
    if (family.type === 'histogram' && sample.name === `${family.name}_bucket` && sample.labels.le === undefined) fail(n, 'histogram bucket without le');
    family.samples.push(sample);
  });
  for (const family of families.values()) {
    delete (family as { typed?: boolean }).typed;
    if (family.type === 'histogram') checkHistogram(family);
  }
  return families;
}

/** The value of the one sample of `name` whose labels include `labels`; undefined if none. */
export function sampleValue(families: Map<string, MetricFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const family of families.values()) {
    for (const s of family.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}

function parseSample(line: string, fail: (why: string) => never): Sample {
  const nameMatch = NAME.exec(line);
  if (!nameMatch) fail('expected a metric name');
  const name = nameMatch![0];
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      if (line[i] === '}') {
        i++;
        break;
      }
      const ln = LABEL_NAME.exec(line.slice(i));
      if (!ln) fail(`expected a label name at column ${i + 1}`);
      const labelName = ln![0];
      i += labelName.length;
      if (line[i] !== '=' || line[i + 1] !== '"') fail(`expected ="…" after label ${labelName}`);
      i += 2;
      let value = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) fail(`unterminated value of label ${labelName}`);
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i + 1];
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else fail(`invalid escape \\${e ?? ''} in label ${labelName}`);
          i += 2;
        } else {
          value += c;
          i++;
        }
      }
      i++;
      if (labelName in labels) fail(`label ${labelName} given twice`);
      labels[labelName] = value;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') fail(`expected , or } after label ${labelName}`);
    }
  }
  const rest = line.slice(i);
  const m = /^[ \t]+(\S+)(?:[ \t]+(\S+))?[ \t]*$/.exec(rest);
  if (!m) fail('expected spaces, a value and an optional timestamp after the series');
  const value = parseValue(m![1]!, fail);
  let timestampMs: number | undefined;
  if (m![2] !== undefined) {
    if (!/^-?\d+$/.test(m![2])) fail(`invalid timestamp "${m![2]}"`);
    timestampMs = Number(m![2]);
  }
  return { name, labels, value, ...(timestampMs === undefined ? {} : { timestampMs }) };
}

function parseValue(text: string, fail: (why: string) => never): number {
  const lower = text.toLowerCase();
  if (lower === 'nan') return NaN;
  if (lower === '+inf' || lower === 'inf') return Infinity;
  if (lower === '-inf') return -Infinity;
  if (!FLOAT.test(text)) fail(`invalid value "${text}"`);
  return Number(text);
}

function unescapeHelp(text: string, fail: () => never): string {
  return text.replace(/\\(.?)/g, (_, c: string) => (c === '\\' ? '\\' : c === 'n' ? '\n' : fail()));
}

/** The family a sample belongs to: histogram/summary suffixes map to the family the TYPE named. */
function familyOf(name: string, families: Map<string, MetricFamily>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const family = families.get(base);
    if (family && (family.type === 'histogram' || family.type === 'summary') && (suffix !== '_bucket' || family.type === 'histogram')) return base;
  }
  return name;
}

function checkHistogram(family: MetricFamily): void {
  const groups = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const group = groups.get(key) ?? { buckets: [] };
    groups.set(key, group);
    if (s.name === `${family.name}_bucket`) group.buckets.push([parseValue(le!, (why) => { throw new PrometheusParseError(`${family.name}: ${why}`); }), s.value]);
    else if (s.name === `${family.name}_count`) group.count = s.value;
    else if (s.name === `${family.name}_sum`) group.sum = s.value;
    else throw new PrometheusParseError(`histogram ${family.name} has a sample ${s.name}`);
  }
  for (const [labels, g] of groups) {
    const sorted = [...g.buckets].sort((a, b) => a[0] - b[0]);
    if (sorted.length === 0 || sorted[sorted.length - 1]![0] !== Infinity) throw new PrometheusParseError(`histogram ${family.name}${labels} has no +Inf bucket`);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]![1] < sorted[i - 1]![1]) throw new PrometheusParseError(`histogram ${family.name}${labels}: bucket le=${sorted[i]![0]} is below the previous one`);
    }
    if (g.count === undefined || g.sum === undefined) throw new PrometheusParseError(`histogram ${family.name}${labels} lacks _count or _sum`);
    if (g.count !== sorted[sorted.length - 1]![1]) throw new PrometheusParseError(`histogram ${family.name}${labels}: _count ${g.count} differs from the +Inf bucket ${sorted[sorted.length - 1]![1]}`);
  }
}
