import { z } from 'zod';

const envSchema = z.object({
  SHARDPIPE_SEEDS: z.string().optional(),
  SHARDPIPE_REDIS_URL: z.string().optional(),
  SHARDPIPE_DATA_DIR: z.string().optional(),
  SHARDPIPE_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional(),
  SHARDPIPE_LOG_FORMAT: z.enum(['json', 'pretty']).optional(),
  /** Credentials for `ingest az://CONTAINER/PREFIX` drops. */
  AZURE_STORAGE_CONNECTION_STRING: z.string().optional(),
});

/** The environment variables the CLI reads, validated once at start. */
export type CliEnv = z.infer<typeof envSchema>;

export function readCliEnv(env: NodeJS.ProcessEnv): CliEnv {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new CliUsageError(`environment variable ${issue.path.join('.')}: ${issue.message}`);
  }
  return parsed.data;
}

/** A mistake in what the user typed or configured: exit code 64 (EX_USAGE). */
export class CliUsageError extends Error {
  override readonly name = 'CliUsageError';
}
