import { constants } from 'node:os';
import type { Logger } from '../common/index.js';
import { CliUsageError } from './cli-env.js';

/** The part of `process` the lifecycle uses; tests pass a stand-in to send signals without killing the runner. */
export interface SignalSource {
  on(signal: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
  off(signal: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
}

/** Options of `CliLifecycle`. */
export interface CliLifecycleOptions {
  /** Where logs go; a function because the root logger exists only once the global flags are read. */
  logger: () => Logger;
  /** Default: `process`. */
  signals?: SignalSource;
  /** Ends the process at once on a second signal. Default: `process.exit(128 + signal number)` (130 for SIGINT, 143 for SIGTERM). */
  forceExit?: (signal: NodeJS.Signals) => void;
  /** Where the second-signal notice goes. Default: stderr. */
  notice?: (line: string) => void;
}

const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

interface Component {
  name: string;
  close: () => unknown;
}

/**
 * One process, one signal handler: the first SIGINT/SIGTERM aborts the root signal (work in flight
 * stops with "interrupted", long-running commands return from `untilSignal()`), `close()` then stops
 * every registered component in reverse start order, each even when an earlier one failed, each
 * failure logged once. The same signal a second time ends the process at once.
 *
 * The handler is installed by `start()` (or the first `add()`), so short commands that never ask
 * keep Node's default: Ctrl-C ends them immediately.
 */
export class CliLifecycle {
  readonly #controller = new AbortController();
  readonly #components: Component[] = [];
  readonly #options: CliLifecycleOptions;
  #installed = false;
  #closing: Promise<boolean> | undefined;
  #signalled: NodeJS.Signals | undefined;

  constructor(options: CliLifecycleOptions) {
    this.#options = options;
  }

  /** Takes over SIGINT/SIGTERM (idempotent) and returns the root signal every long call gets. */
  start(): AbortSignal {
    if (!this.#installed && this.#closing === undefined) {
      this.#installed = true;
      for (const s of SIGNALS) (this.#options.signals ?? process).on(s, this.#onSignal);
    }
    return this.#controller.signal;
  }

  /**
   * Registers a started component; `close()` stops it before everything registered earlier.
   * Returns `component` so a start reads `const x = lifecycle.add('x', await X.start(...), (x) => x.close())`.
   */
  add<T>(name: string, component: T, close: (component: T) => unknown): T {
    if (this.#closing !== undefined) throw new Error(`${name} started after the CLI began to close`);
    this.start();
    this.#components.push({ name, close: () => close(component) });
    return component;
  }

  /**
   * `err` as the interruption it is: after a signal, an AbortError (timers, fetch and streams wrap the
   * root signal's reason in one) or the reason itself becomes the reason, so every interrupted command
   * ends the same way ("interrupted", exit 64) wherever the abort caught it. Other errors stay.
   */
  interruption(err: unknown): unknown {
    const reason: unknown = this.#controller.signal.reason;
    if (this.#signalled === undefined) return err;
    if (err === reason || (err instanceof Error && (err.name === 'AbortError' || err.cause === reason))) return reason;
    return err;
  }

  /** Resolves on the first SIGINT/SIGTERM (at once if one came already). */
  untilSignal(): Promise<NodeJS.Signals> {
    const signal = this.start();
    if (signal.aborted) return Promise.resolve(this.#signalled ?? 'SIGTERM');
    return new Promise((resolve) => signal.addEventListener('abort', () => resolve(this.#signalled ?? 'SIGTERM'), { once: true }));
  }

  /**
   * Closes every component in reverse start order, then hands the signals back to Node. Resolves
   * true when all closed cleanly; a failure is logged (once, here) and the rest still close.
   * Idempotent: later calls get the first call's outcome.
   */
  close(): Promise<boolean> {
    this.#closing ??= this.#closeAll();
    return this.#closing;
  }

  async #closeAll(): Promise<boolean> {
    let clean = true;
    for (const component of this.#components.splice(0).reverse()) {
      try {
        await component.close();
      } catch (err) {
        clean = false;
        this.#options.logger().error({ err, component: component.name }, `${component.name} did not close cleanly`);
      }
    }
    this.#uninstall();
    return clean;
  }

  #uninstall(): void {
    if (!this.#installed) return;
    this.#installed = false;
    for (const s of SIGNALS) (this.#options.signals ?? process).off(s, this.#onSignal);
  }

  readonly #onSignal = (signal: NodeJS.Signals): void => {
    if (this.#signalled !== undefined) {
      // Only the same signal again forces: after a Ctrl-C reached the whole process group, the
      // parent's SIGTERM to its children (`up`, `demo`) must not cut their drain short.
      if (signal !== this.#signalled) return;
      (this.#options.notice ?? ((line) => process.stderr.write(line)))(`shardpipe: second ${signal}: exiting without finishing cleanup\n`);
      (this.#options.forceExit ?? ((s) => process.exit(128 + constants.signals[s])))(signal);
      return;
    }
    this.#signalled = signal;
    this.#options.logger().info({ signal }, 'stopping');
    this.#controller.abort(new CliUsageError('interrupted'));
  };
}
