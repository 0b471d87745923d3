import { status, type ServiceError } from '@grpc/grpc-js';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { NodeConnection, StoreClient, StoreError, StoreRouter } from '../../store/index.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';
import { StoreCluster, runCli } from '../helpers/store-cluster.js';

const MiB = 1024 * 1024;
const BUDGET = 64 * MiB;
const CALLS = 40;
/** Calls the thick client sends at once in the second phase: more than the budget admits. */
const CLIENT_CALLS = 12;
const ROWS_PER_CALL = 15;
const VALUE_BYTES = MiB - 64; // 15 rows: a ~15 MiB BulkInsert

let cluster: StoreCluster | undefined;
let client: StoreClient | undefined;
const connections: NodeConnection[] = [];

afterEach(async () => {
  client?.close();
  client = undefined;
  for (const c of connections.splice(0)) c.close();
  await cluster?.close();
  cluster = undefined;
});

/** Row `row` of burst call `call`: a key naming both, a value whose every byte depends on both. */
function rowOf(call: number, row: number): { key: Buffer; value: Buffer; etag: number; updatedAtMs: number; expiresAtMs: number } {
  const key = Buffer.from([call, row, 0x6b]);
  const value = Buffer.alloc(VALUE_BYTES, (call * 31 + row * 7) & 0xff);
  value.writeUInt16BE(call, 0);
  value.writeUInt16BE(row, 2);
  return { key, value, etag: 0, updatedAtMs: 0, expiresAtMs: 0 };
}

function callRows(call: number): ReturnType<typeof rowOf>[] {
  return Array.from({ length: ROWS_PER_CALL }, (_, row) => rowOf(call, row));
}

/** Peak resident set size (VmHWM) of a live process, in MiB. */
async function readPeakRssMb(pid: number): Promise<number | undefined> {
  const match = /^VmHWM:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : undefined;
}

async function overloadedTotal(metricsPort: unknown): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${String(metricsPort)}/metrics`)).text();
  const families = parsePrometheusText(text);
  return (families.get('shardpipe_store_overloaded_total')?.samples ?? []).reduce((sum, s) => sum + s.value, 0);
}

describe('a per-node budget of request bytes in flight', () => {
  it('a 40 × 15 MiB BulkInsert burst grows the node by at most budget + 150 MiB; refused calls get RESOURCE_EXHAUSTED with a retry hint, the thick client retries them, nothing is lost', async () => {
    cluster = await StoreCluster.start({
      nodes: 1,
      partitions: 1,
      extraArgs: ['--no-sync', '--max-inflight-bytes', String(BUDGET), '--inflight-wait', '200ms', '--metrics-port', '0'],
    });
    const node = cluster.nodes[0]!;
    const pid = node.child!.pid!;
    const before = await readPeakRssMb(pid);
    expect(before).toBeDefined();

    // Phase 1: raw calls, no retries, each on its own channel so they really run at once.
    const results = await Promise.all(
      Array.from({ length: CALLS }, async (_, call) => {
        const conn = new NodeConnection(node.address);
        connections.push(conn);
        try {
          const response = await conn.unary('bulkInsert', { mapVersion: 1, rows: callRows(call) }, { deadline: Date.now() + 60_000 });
          return { call, ok: true as const, accepted: response.accepted };
        } catch (err) {
          return { call, ok: false as const, error: err as StoreError };
        }
      }),
    );
    const refused = results.filter((r) => !r.ok);
    const admitted = results.filter((r) => r.ok);
    for (const r of refused) {
      expect(r.error.code, r.error.message).toBe('STORE_OVERLOADED');
      expect((r.error.cause as ServiceError).code).toBe(status.RESOURCE_EXHAUSTED);
      expect(r.error.retryAfterMs).toBeGreaterThan(0);
      expect(r.error.retryable).toBe(true);
    }
    for (const r of admitted) expect(r.accepted).toBe(ROWS_PER_CALL);
    // With room for about four 15 MiB calls and a 200 ms wait, a burst of 40 cannot all be admitted.
    expect(refused.length).toBeGreaterThan(0);
    expect(admitted.length).toBeGreaterThan(0);
    const afterRaw = (await readPeakRssMb(pid))!;
    // The idle node already holds ~140 MiB (the CLI's modules), so the bound is on what the burst adds.
    expect(afterRaw - before!).toBeLessThanOrEqual(BUDGET / MiB + 150);

    // Phase 2: new keys through the thick client, which backs off and retries when refused.
    const router = new StoreRouter({ seeds: cluster.seeds, operationTimeoutMs: 300_000, rpcDeadlineMs: 60_000 });
    client = new StoreClient(router);
    const refusedBefore = await overloadedTotal(node.ready.metricsPort);
    const viaClient = await Promise.all(
      Array.from({ length: CLIENT_CALLS }, (_, i) =>
        router.routed(Buffer.from([100 + i]), {}, (conn, mapVersion, limits) => conn.unary('bulkInsert', { mapVersion, rows: callRows(100 + i) }, limits)),
      ),
    );
    for (const r of viaClient) expect(r.accepted).toBe(ROWS_PER_CALL);
    expect(await overloadedTotal(node.ready.metricsPort)).toBeGreaterThan(refusedBefore);
    const peak = (await readPeakRssMb(pid))!;
    process.stdout.write(`inflight budget burst: node VmHWM before ${before!.toFixed(0)} MiB, after raw burst ${afterRaw.toFixed(0)} MiB, after client burst ${peak.toFixed(0)} MiB (budget ${BUDGET / MiB} MiB); raw burst ${admitted.length} admitted, ${refused.length} refused\n`);

    // Every acknowledged row is stored whole; no row of a refused call is.
    const acknowledged = new Set([...admitted.map((r) => r.call), ...Array.from({ length: CLIENT_CALLS }, (_, i) => 100 + i)]);
    let seen = 0;
    for await (const batch of client.scanAll(Buffer.alloc(0), Buffer.alloc(0))) {
      for (const e of batch) {
        const [call, row] = [e.key[0]!, e.key[1]!];
        expect(acknowledged.has(call), `row ${call}/${row} of a call that was not acknowledged`).toBe(true);
        expect(e.value.equals(rowOf(call, row).value), `row ${call}/${row} is corrupt`).toBe(true);
        seen++;
      }
    }
    expect(seen).toBe(acknowledged.size * ROWS_PER_CALL);
    const [stats] = await client.stats();
    expect(stats!.result.ok && stats!.result.partitions[0]!.approxCount).toBe(seen);
  }, 400_000);

  it('store start refuses a budget that cannot hold the largest request, saying why (exit 64)', async () => {
    const { code, stderr } = await runCli(['store', 'start', '--node', '127.0.0.1:1', '--data', '/nonexistent/never-created', '--max-inflight-bytes', '1000']);
    expect(code).toBe(64);
    expect(stderr).toContain('--max-inflight-bytes must be at least twice the largest request');
    expect(stderr).toContain('got 1000');
  });
});
