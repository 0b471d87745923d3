export { ShardpipeError, isShardpipeError } from './shardpipe-error.js';
export type { ErrorContext, ShardpipeErrorOptions } from './shardpipe-error.js';
export { createLogger } from './logger.js';
export type { Logger, LoggerOptions } from './logger.js';
export { parseDurationMs } from './duration.js';
export { findFreePort } from './free-port.js';
export { acceptsConnections } from './port-check.js';
export { MetricsHttpServer } from './metrics-http.js';
export type { MetricsHttpServerOptions } from './metrics-http.js';
