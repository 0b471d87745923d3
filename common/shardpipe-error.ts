/** Context attached to an error: where it happened (partition, file, row, key, job...). */
export type ErrorContext = Readonly<Record<string, string | number | boolean | undefined>>;

export interface ShardpipeErrorOptions {
  /** Whether repeating the same operation may succeed. Default false. */
  retryable?: boolean;
  cause?: unknown;
  context?: ErrorContext;
}

/**
 * Base of every error shardpipe raises on purpose. `code` is the stable contract (listed in
 * ERRORS.md); the message is for people and may change.
 */
export class ShardpipeError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  readonly context: ErrorContext;

  constructor(code: string, message: string, options: ShardpipeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ShardpipeError';
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.context = options.context ?? {};
  }
}

/** True when `err` is a ShardpipeError, optionally with the given code. */
export function isShardpipeError(err: unknown, code?: string): err is ShardpipeError {
  return err instanceof ShardpipeError && (code === undefined || err.code === code);
}
