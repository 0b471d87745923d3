import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * `parseArgs` for a bench script, with `-h, --help`: prints `usage: USAGE` on stdout and exits 0
 * before any work starts; an unknown or malformed option prints the error and the usage on stderr
 * and exits 2 (instead of a stack trace).
 */
export function parseBenchArgs<T extends ParseArgsConfig>(usage: string, config: T): ReturnType<typeof parseArgs<T>> {
  const withHelp = { ...config, options: { ...config.options, help: { type: 'boolean', short: 'h' } } } as T;
  let parsed: ReturnType<typeof parseArgs<T>>;
  try {
    parsed = parseArgs(withHelp);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\nusage: ${usage}\n`);
    process.exit(2);
  }
  if ((parsed.values as { help?: boolean }).help === true) {
    process.stdout.write(`usage: ${usage}\n`);
    process.exit(0);
  }
  return parsed;
}
