import { describe, expect, it } from 'vitest';
import { contextOf, parseTraceparent, startRootSpan, traceparentOf, tracingActive, tracingWanted } from '../../common/index.js';
import { trace } from '@opentelemetry/api';

describe('tracing helpers (SDK not started)', () => {
  it('tracingWanted follows the standard OTEL_* variables', () => {
    expect(tracingWanted({})).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: '' })).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(true);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:4318/v1/traces' })).toBe(true);
    expect(tracingWanted({ OTEL_TRACES_EXPORTER: 'console' })).toBe(true);
    expect(tracingWanted({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(false);
    expect(tracingWanted({ OTEL_SDK_DISABLED: 'TRUE', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(false);
  });

  it('parses W3C traceparent version 00 and refuses malformed or all-zero ids', () => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    expect(parseTraceparent(tp)).toEqual({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', traceFlags: 1, isRemote: true });
    for (const bad of [undefined, '', 'garbage', tp.toUpperCase(), tp.replace(/^00/, '01'), '00-00000000000000000000000000000000-00f067aa0ba902b7-01', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', `${tp}-extra`]) {
      expect(parseTraceparent(bad), String(bad)).toBeUndefined();
    }
    expect(trace.getSpanContext(contextOf(tp))?.spanId).toBe('00f067aa0ba902b7');
    expect(trace.getSpanContext(contextOf('garbage'))).toBeUndefined();
  });

  it('without an exporter a root span still names a fresh random trace, which its traceparent carries', () => {
    expect(tracingActive()).toBe(false);
    const a = startRootSpan('op');
    const b = startRootSpan('op');
    expect(a.spanContext().traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(a.spanContext().traceId).not.toMatch(/^0+$/);
    expect(a.spanContext().traceId).not.toBe(b.spanContext().traceId);
    expect(a.isRecording()).toBe(false);
    expect(parseTraceparent(traceparentOf(a))?.traceId).toBe(a.spanContext().traceId);
  });
});
