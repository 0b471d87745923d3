import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { CliLifecycle } from '../../cli/cli-lifecycle.js';
import { createLogger } from '../../common/index.js';

/** A stand-in for `process` that only delivers the signals a test emits. */
function signals(): EventEmitter & { send(signal: NodeJS.Signals): void } {
  const emitter = new EventEmitter() as EventEmitter & { send(signal: NodeJS.Signals): void };
  emitter.send = (signal) => emitter.emit(signal, signal);
  return emitter;
}

function recordingLogger(): { logger: ReturnType<typeof createLogger>; errors: Array<{ obj: Record<string, unknown>; msg: string }> } {
  const logger = createLogger({ level: 'silent', pretty: false });
  const errors: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  logger.error = ((obj: Record<string, unknown>, msg: string) => errors.push({ obj, msg })) as unknown as typeof logger.error;
  return { logger, errors };
}

describe('CliLifecycle', () => {
  it('installs one handler per signal only when asked, and hands the signals back after close', async () => {
    const source = signals();
    const lifecycle = new CliLifecycle({ logger: () => createLogger({ level: 'silent', pretty: false }), signals: source });
    expect(source.listenerCount('SIGINT')).toBe(0);
    // No signal yet: an AbortError is just an error.
    const early = Object.assign(new Error('aborted'), { name: 'AbortError' });
    expect(lifecycle.interruption(early)).toBe(early);
    lifecycle.start();
    lifecycle.add('a', 1, () => undefined);
    lifecycle.start();
    expect([source.listenerCount('SIGINT'), source.listenerCount('SIGTERM')]).toEqual([1, 1]);
    expect(await lifecycle.close()).toBe(true);
    expect([source.listenerCount('SIGINT'), source.listenerCount('SIGTERM')]).toEqual([0, 0]);
  });

  it('the first signal aborts the root signal with "interrupted" and ends untilSignal()', async () => {
    const source = signals();
    const lifecycle = new CliLifecycle({ logger: () => createLogger({ level: 'silent', pretty: false }), signals: source });
    const root = lifecycle.start();
    const waiting = lifecycle.untilSignal();
    source.send('SIGTERM');
    expect(await waiting).toBe('SIGTERM');
    expect(root.aborted).toBe(true);
    expect((root.reason as Error).message).toBe('interrupted');
    // However the abort reached the command (the reason, or an AbortError wrapping it), it is the interruption.
    const wrapped = new Error('The operation was aborted', { cause: root.reason });
    wrapped.name = 'AbortError';
    expect(lifecycle.interruption(wrapped)).toBe(root.reason);
    expect(lifecycle.interruption(root.reason)).toBe(root.reason);
    const other = new Error('disk full');
    expect(lifecycle.interruption(other)).toBe(other);
    // Asked again after the signal: at once.
    expect(await lifecycle.untilSignal()).toBe('SIGTERM');
    await lifecycle.close();
  });

  it('closes in reverse start order, runs every close when one fails, logs that failure once and reports it', async () => {
    const { logger, errors } = recordingLogger();
    const lifecycle = new CliLifecycle({ logger: () => logger, signals: signals() });
    const closed: string[] = [];
    lifecycle.add('redis', 'r', (name) => void closed.push(name));
    lifecycle.add('client', 'c', (name) => void closed.push(name));
    lifecycle.add('workers', 'w', async () => {
      closed.push('w');
      throw new Error('fault injection: a close that fails');
    });
    lifecycle.add('view', 'v', (name) => void closed.push(name));
    expect(await lifecycle.close()).toBe(false);
    expect(closed).toEqual(['v', 'w', 'c', 'r']);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ obj: { component: 'workers' }, msg: 'workers did not close cleanly' });
    // Idempotent: nothing closes twice, the outcome stays.
    expect(await lifecycle.close()).toBe(false);
    expect(closed).toHaveLength(4);
    expect(() => lifecycle.add('late', 1, () => undefined)).toThrow(/after the CLI began to close/);
  });

  it('the same signal a second time forces the exit; a different one does not', async () => {
    const source = signals();
    const forced: NodeJS.Signals[] = [];
    const notices: string[] = [];
    const lifecycle = new CliLifecycle({ logger: () => createLogger({ level: 'silent', pretty: false }), signals: source, forceExit: (s) => void forced.push(s), notice: (l) => void notices.push(l) });
    lifecycle.start();
    source.send('SIGINT');
    expect(forced).toEqual([]);
    // A SIGTERM after the SIGINT (a parent stopping its children after Ctrl-C hit them all) does not cut the close short.
    source.send('SIGTERM');
    expect(forced).toEqual([]);
    source.send('SIGINT');
    expect(forced).toEqual(['SIGINT']);
    expect(notices).toEqual(['shardpipe: second SIGINT: exiting without finishing cleanup\n']);
    await lifecycle.close();
  });
});
