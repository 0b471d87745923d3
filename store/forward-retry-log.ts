import type { Logger } from '../common/index.js';
import { StoreError } from './store-errors.js';

/** Least time between two summary lines for one successor, ms. */
const SUMMARY_EVERY_MS = 5000;

interface Episode {
  /** Failures since the last line logged. */
  failures: number;
  lastError: string;
  loggedAtMs: number;
}

/**
 * The log of failed chain forwards of one node, per successor. While a successor is down every
 * partition's sender fails many times a second; logging each (with a stack) buried everything
 * else. One line at warn for the first failure of an episode, with the error, then at most one
 * summary line per successor every SUMMARY_EVERY_MS (failures since the last line, last error);
 * an answered forward ends the episode. A StoreError (timeout, unavailable, stale epoch, gap) is
 * expected here and logged by code and message; anything else keeps its stack.
 */
export class ForwardRetryLog {
  private readonly episodes = new Map<string, Episode>();

  constructor(
    private readonly logger: Logger | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  failed(successor: string, error: unknown, context: { partition: number; seq: number; writes: number }): void {
    const logger = this.logger;
    const text = error instanceof Error ? error.message.slice(0, 300) : String(error);
    const episode = this.episodes.get(successor);
    if (episode === undefined) {
      this.episodes.set(successor, { failures: 0, lastError: text, loggedAtMs: this.now() });
      logger?.warn({ ...context, successor, ...errorFields(error) }, 'forward failed; sending it again to the current successor');
      return;
    }
    episode.failures++;
    episode.lastError = text;
    if (this.now() - episode.loggedAtMs < SUMMARY_EVERY_MS) return;
    logger?.warn({ successor, failures: episode.failures, sinceMs: this.now() - episode.loggedAtMs, lastError: episode.lastError, lastPartition: context.partition }, 'forwards to this successor keep failing; sending them again');
    episode.failures = 0;
    episode.loggedAtMs = this.now();
  }

  /** A forward to `successor` was answered: the next failure starts a new episode (logged at once). */
  answered(successor: string): void {
    if (this.episodes.size > 0) this.episodes.delete(successor);
  }
}

function errorFields(error: unknown): Record<string, unknown> {
  if (error instanceof StoreError) return { code: error.code, error: error.message };
  return { err: error };
}
