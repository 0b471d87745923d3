import type { Http2Server, Http2Session } from 'node:http2';
import type { Server } from '@grpc/grpc-js';
import { DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES, type Logger } from '../common/index.js';

/**
 * HTTP/2 flow-control window (per stream and per connection) clients advertise toward nodes: 16 MiB,
 * so scan pages and Multi answers are not throttled to 64 KiB per round trip.
 */
export const DEFAULT_FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024;

/** The window a node advertises by default: 16 MiB, as clients (common/store-node-defaults.ts says why). */
export { DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES };
/** HTTP/2's largest window (RFC 9113 §6.9.1). */
const MAX_WINDOW_BYTES = 2 ** 31 - 1;
/** The RFC's initial window. */
const MIN_WINDOW_BYTES = 65_535;

/** grpc-js's channel option for the window; clients honour it, servers from grpc-node PR #3058 on. */
export const FLOW_CONTROL_WINDOW_OPTION = 'grpc-node.flow_control_window';

/** Checks a window size in bytes: 65,535 – 2^31 − 1. */
export function checkFlowControlWindow(bytes: number, name = 'flowControlWindowBytes'): number {
  if (!Number.isSafeInteger(bytes) || bytes < MIN_WINDOW_BYTES || bytes > MAX_WINDOW_BYTES) throw new RangeError(`${name} must be ${MIN_WINDOW_BYTES}–${MAX_WINDOW_BYTES} bytes, got ${bytes}`);
  return bytes;
}

/** What of grpc-js 1.14's Server this reaches into: the options every http2 server is made with, and the servers. */
interface ServerInternals {
  commonServerOptions?: { settings?: Record<string, unknown> };
  http2Servers?: Map<Http2Server, unknown>;
}

/**
 * Before `bindAsync`: the per-stream window (SETTINGS_INITIAL_WINDOW_SIZE) of every http2 server
 * the grpc-js Server makes. grpc-js 1.14 reads `grpc-node.flow_control_window` only on the client,
 * so the server's http2 options are set where it keeps them; returns false (and logs) when that
 * shape is not there, so a grpc-js upgrade shows in the window test instead of failing nodes.
 */
export function setServerStreamWindow(server: Server, bytes: number, logger: Logger): boolean {
  const internals = server as unknown as ServerInternals;
  const common = internals.commonServerOptions;
  if (common === undefined || typeof common !== 'object') {
    logger.warn({ windowBytes: bytes }, 'grpc-js Server has no commonServerOptions: the HTTP/2 stream window stays at its default');
    return false;
  }
  common.settings = { ...common.settings, initialWindowSize: bytes };
  return true;
}

/**
 * After `bindAsync`: every new HTTP/2 session of the server gets a connection window of `bytes`
 * (Node's http2 sessions start at 64 KiB and have no server option for it).
 */
export function setServerConnectionWindow(server: Server, bytes: number, logger: Logger): boolean {
  const servers = (server as unknown as ServerInternals).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) {
    logger.warn({ windowBytes: bytes }, 'grpc-js Server has no http2Servers: the HTTP/2 connection window stays at its default');
    return false;
  }
  for (const http2Server of servers.keys()) {
    http2Server.on('session', (session: Http2Session) => {
      try {
        session.setLocalWindowSize(bytes);
      } catch (err) {
        // A session torn down before its first frame: nothing to widen.
        logger.debug({ err }, 'HTTP/2 connection window not set');
      }
    });
  }
  return true;
}
