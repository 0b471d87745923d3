import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { PrometheusParseError, parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';

describe('the Prometheus text parser used by the metrics tests', () => {
  it('reads what prom-client writes: escaped labels, histograms, counters', async () => {
    const registry = new Registry();
    new Gauge({ name: 'g', help: 'a "gauge" with \\ and\nnewline', labelNames: ['k'], registers: [registry] }).set({ k: 'a"b\\c\nd' }, 1.5);
    new Counter({ name: 'c_total', help: 'c', registers: [registry] }).inc(3);
    const h = new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['m'], buckets: [0.1, 1], registers: [registry] });
    h.observe({ m: 'x' }, 0.05);
    h.observe({ m: 'x' }, 5);
    const families = parsePrometheusText(await registry.metrics());
    expect(families.get('g')).toMatchObject({ type: 'gauge', help: 'a "gauge" with \\ and\nnewline', samples: [{ labels: { k: 'a"b\\c\nd' }, value: 1.5 }] });
    expect(sampleValue(families, 'c_total')).toBe(3);
    expect(families.get('h_seconds')!.type).toBe('histogram');
    expect(sampleValue(families, 'h_seconds_bucket', { m: 'x', le: '0.1' })).toBe(1);
    expect(sampleValue(families, 'h_seconds_bucket', { m: 'x', le: '+Inf' })).toBe(2);
    expect(sampleValue(families, 'h_seconds_count', { m: 'x' })).toBe(2);
  });

  it.each([
    ['a value that is no number', 'm 1x\n'],
    ['no value', 'm{a="b"}\n'],
    ['an unknown escape in a label', 'm{a="\\t"} 1\n'],
    ['an unterminated label value', 'm{a="b} 1\n'],
    ['a label name starting with a digit', 'm{1a="b"} 1\n'],
    ['a duplicate series', 'm{a="b"} 1\nm{a="b"} 2\n'],
    ['a family split in two', 'a 1\nb 1\na{x="y"} 1\n'],
    ['TYPE after samples', 'm 1\n# TYPE m gauge\n'],
    ['an unknown type', '# TYPE m meter\nm 1\n'],
    ['a negative counter', '# TYPE m counter\nm -1\n'],
    ['histogram buckets that decrease', '# TYPE h histogram\nh_bucket{le="1"} 5\nh_bucket{le="+Inf"} 4\nh_sum 1\nh_count 4\n'],
    ['a histogram without +Inf', '# TYPE h histogram\nh_bucket{le="1"} 5\nh_sum 1\nh_count 5\n'],
    ['a histogram whose count differs from +Inf', '# TYPE h histogram\nh_bucket{le="+Inf"} 5\nh_sum 1\nh_count 6\n'],
  ])('rejects %s', (_, text) => {
    expect(() => parsePrometheusText(text)).toThrow(PrometheusParseError);
  });
});
