import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export interface LoggerOptions {
  /** Minimum level. Default 'info'. */
  level?: LevelWithSilent;
  /** Human-readable output instead of JSON. Default: on when stderr is a terminal. */
  pretty?: boolean;
  /** Bound to every line, e.g. `{ module: 'store' }`. */
  base?: Record<string, unknown>;
}

/**
 * Fields that may carry a secret, blanked in every line as a second line of defence: the code
 * never logs tokens or passwords on purpose.
 */
const REDACT = {
  paths: ['token', 'password', 'authorization', '*.token', '*.password', '*.authorization', 'headers.authorization', '*.headers.authorization', 'redisUrl', '*.redisUrl'],
  censor: '***',
};

/** The root logger of a process: JSON lines on stderr, or pretty output on a terminal. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const pretty = options.pretty ?? process.stderr.isTTY === true;
  const base = { ...options.base };
  const level = options.level ?? 'info';
  if (pretty) {
    return pino({
      level,
      base,
      redact: REDACT,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  return pino({ level, base, redact: REDACT }, pino.destination({ dest: 2, sync: true }));
}
