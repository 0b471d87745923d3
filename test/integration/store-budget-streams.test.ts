import { once } from 'node:events';
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeConnection } from '../../store/index.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';
import { StoreCluster } from '../helpers/store-cluster.js';

/**
 * How the in-flight budget meets HTTP/2 streams, seen from a raw HTTP/2 client on a real node:
 * a call is admitted by the length its first DATA frame announces (a Multi no longer reserves the
 * receive limit), and a refused call's stream is reset after its status so the rest of its body
 * is never sent. (Also the check that grpc-js still shows the budget interceptor its HTTP/2 stream.)
 */

const MiB = 1024 * 1024;
// Receive limit 1 MiB + 1 MiB framing = 2 MiB; the smallest budget allowed is twice that.
const BUDGET = 4 * MiB;
const BULK_PATH = '/shardpipe.store.v1.Store/BulkInsert';

let cluster: StoreCluster;
let session: http2.ClientHttp2Session;

beforeAll(async () => {
  cluster = await StoreCluster.start({
    nodes: 1,
    partitions: 1,
    extraArgs: ['--no-sync', '--max-batch-bytes', String(MiB), '--max-inflight-bytes', String(BUDGET), '--inflight-wait', '200ms', '--metrics-port', '0'],
  });
  session = http2.connect(`http://${cluster.seeds[0]}`);
  await once(session, 'remoteSettings');
});

afterAll(async () => {
  session?.destroy();
  await cluster?.close();
});

async function inflightBytes(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${String(cluster.nodes[0]!.ready.metricsPort)}/metrics`)).text();
  return parsePrometheusText(text).get('shardpipe_store_inflight_bytes')?.samples[0]?.value ?? Number.NaN;
}

/** Waits until the node's budget holds `bytes` (its gauge), polling its /metrics. */
async function budgetHolds(predicate: (bytes: number) => boolean, what: string): Promise<number> {
  const until = Date.now() + 10_000;
  for (;;) {
    const bytes = await inflightBytes();
    if (predicate(bytes)) return bytes;
    if (Date.now() > until) throw new Error(`the node's budget never held ${what} (last ${bytes} bytes)`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** A BulkInsert stream whose message announces `announced` bytes, of which it sends `sent`, and never ends. */
function openBulkInsert(announced: number, sent: number): http2.ClientHttp2Stream {
  const stream = session.request({ ':method': 'POST', ':path': BULK_PATH, 'content-type': 'application/grpc', te: 'trailers' });
  const frame = Buffer.alloc(5 + sent);
  frame.writeUInt32BE(announced, 1);
  stream.write(frame);
  stream.on('error', () => {});
  return stream;
}

describe('the in-flight budget on HTTP/2 streams', () => {
  it('admits a BulkInsert by the length it announces, and a small Multi beside it (not at the receive limit)', async () => {
    // 256 KiB announced: charged 4 × 256 KiB = 1 MiB of the 4 MiB, not the whole receive limit twice over.
    const held = openBulkInsert(256 * 1024, 1024);
    try {
      const bytes = await budgetHolds((b) => b > 0, 'the open BulkInsert');
      expect(bytes).toBeLessThanOrEqual(4 * (256 * 1024 + 5));
      expect(bytes).toBeGreaterThanOrEqual(4 * 256 * 1024);
      const conn = new NodeConnection(cluster.seeds[0]!);
      try {
        const response = await conn.unary('multi', { ops: [{ put: { mapVersion: 1, key: Buffer.from('m'), value: Buffer.from('v'), ttlMs: 0 } }] }, { deadline: Date.now() + 10_000 });
        expect(response.results).toHaveLength(1);
        expect(response.results[0]!.code).toBe(0);
      } finally {
        conn.close();
      }
    } finally {
      held.close(http2.constants.NGHTTP2_CANCEL);
    }
    await budgetHolds((b) => b === 0, 'nothing once the BulkInsert is cancelled');
  });

  it('a refused call gets RESOURCE_EXHAUSTED / STORE_OVERLOADED and then RST_STREAM NO_ERROR: the rest of its body is never sent', async () => {
    // 1.5 MiB announced: 4 × 1.5 MiB, capped at the budget, holds all of it.
    const held = openBulkInsert(1536 * 1024, 1024);
    try {
      await budgetHolds((b) => b === BUDGET, 'the whole budget');
      const refused = openBulkInsert(MiB, 64 * 1024);
      const [headers] = (await once(refused, 'response')) as [http2.IncomingHttpHeaders];
      expect(headers['grpc-status']).toBe('8');
      expect(headers['shardpipe-error-code']).toBe('STORE_OVERLOADED');
      // The client never ends its request: only the node's reset closes the stream.
      await once(refused, 'close');
      expect(refused.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      held.close(http2.constants.NGHTTP2_CANCEL);
    }
  });
});
