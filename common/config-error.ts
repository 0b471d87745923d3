import { ShardpipeError } from './shardpipe-error.js';

/** Every code a ConfigError can carry. None is retryable: the configuration must change. */
export const CONFIG_ERROR_CODES = {
  CONFIG_TOKEN_FILE_INVALID: { retryable: false },
  CONFIG_TLS_INVALID: { retryable: false },
  CONFIG_INSECURE_BIND: { retryable: false },
} as const;

export type ConfigErrorCode = keyof typeof CONFIG_ERROR_CODES;

/**
 * A server cannot start as configured: a bad token file, unreadable TLS files, or a non-loopback
 * bind without credentials. The CLI exits 64 (usage) with the message.
 */
export class ConfigError extends ShardpipeError {
  override readonly code: ConfigErrorCode;

  constructor(code: ConfigErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { ...options, retryable: false });
    this.name = 'ConfigError';
    this.code = code;
  }
}
