import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export interface LoggerOptions {
  /** Minimum level. Default 'info'. */
  level?: LevelWithSilent;
  /** Human-readable output instead of JSON. Default: on when stderr is a terminal. */
  pretty?: boolean;
  /** Bound to every line, e.g. `{ module: 'store' }`. */
  base?: Record<string, unknown>;
  /**
   * Called for every line at level error or fatal that carries an `err`, with the line's bound
   * fields (module, partition, jobId, file…) and its other plain fields: where errors are handled,
   * they are logged, so this is where an error reporter hears of them. Default: none.
   */
  onError?: (err: unknown, fields: Record<string, string | number | boolean>) => void;
}

/**
 * Fields that may carry a secret, blanked in every line as a second line of defence: the code
 * never logs tokens or passwords on purpose.
 */
const REDACT = {
  paths: ['token', 'password', 'authorization', '*.token', '*.password', '*.authorization', 'headers.authorization', '*.headers.authorization', 'redisUrl', '*.redisUrl'],
  censor: '***',
};

const ERROR_LEVEL = 50;

/**
 * A pino hook that hands error lines with an `err` to `onError`, then logs them when `level` is at
 * least `outputLevel` (the level asked for: above error, the logger runs at error so that the hook
 * still hears of errors — `--log-level fatal|silent` quiets the output, not the error reports).
 */
function errorHook(onError: NonNullable<LoggerOptions['onError']>, outputLevel: number): pino.LoggerOptions['hooks'] {
  return {
    logMethod(args, method, level) {
      const first = args[0] as unknown;
      if (level >= ERROR_LEVEL && typeof first === 'object' && first !== null && 'err' in first) {
        const fields: Record<string, string | number | boolean> = {};
        for (const [k, v] of Object.entries({ ...this.bindings(), ...first })) {
          if (k !== 'err' && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')) fields[k] = v;
        }
        try {
          onError((first as { err: unknown }).err, fields);
        } catch (err) {
          // A failing reporter must not cost the log line; its own failure is logged without the hook.
          method.call(this, { reporterErr: err }, 'error reporter failed');
        }
      }
      if (level >= outputLevel) method.apply(this, args);
    },
  };
}

/** The root logger of a process: JSON lines on stderr, or pretty output on a terminal. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const pretty = options.pretty ?? process.stderr.isTTY === true;
  const base = { ...options.base };
  const asked = options.level ?? 'info';
  const askedValue = asked === 'silent' ? Infinity : pino.levels.values[asked]!;
  // With an error hook, lines at error and above always reach it, whatever level is asked for.
  const level = options.onError && askedValue > ERROR_LEVEL ? 'error' : asked;
  // pino takes `hooks: undefined` as "no hooks at all" and fails: pass the key only with a hook.
  const hooks = options.onError ? { hooks: errorHook(options.onError, askedValue) } : {};
  if (pretty) {
    return pino({
      level,
      base,
      redact: REDACT,
      ...hooks,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  return pino({ level, base, redact: REDACT, ...hooks }, pino.destination({ dest: 2, sync: true }));
}
