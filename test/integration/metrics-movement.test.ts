import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { MovementView, PartitionView } from '../../metrics-server/index.js';
import { EtcdOperationStore, Key, PartitionMap, StoreClient, newOperationId, readGcReports, type OperationRecord } from '../../store/index.js';
import { EtcdTestCluster, CliProcess } from '../helpers/etcd-cluster.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';

const ARTIFACTS = resolve(import.meta.dirname, '../artifacts');

// Real etcd, three real `store start --etcd` nodes, a real `metrics-server --etcd` process and the
// page in chromium: the "Data movement" panel and its metrics. The operation record is written
// the way a runner writes one (EtcdOperationStore, compare-and-swap); the data awaiting GC comes
// from a real map change that takes a replica away from a node.
describe('metrics server with --etcd: operations in progress, per-node share of data, data awaiting GC', () => {
  let cluster: EtcdTestCluster;
  let metrics: CliProcess;
  let browser: Browser;
  let url: string;
  let ops: EtcdOperationStore;
  let opId: string;
  let gcNode: string;
  let stepStartedAtMs: number;

  beforeAll(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    cluster = await EtcdTestCluster.start();
    const nodes = [];
    for (let i = 0; i < 3; i++) nodes.push(await cluster.startNode(undefined, ['--gc-grace', '10m']));
    expect((await cluster.cli(['cluster', 'init', '--etcd', cluster.etcd.url, '--partitions', '3', '--replicas', '2'])).code).toBe(0);
    await Promise.all(nodes.map((n) => n.event('ready')));
    const v1 = (await cluster.store.read())!.map;
    const client = new StoreClient({ seeds: [v1.partitions[0]!.node], operationTimeoutMs: 20_000 });
    try {
      // Keys spread over the key space: every partition gets some.
      for (let i = 0; i < 90; i++) {
        const key = Buffer.alloc(4);
        key.writeUInt16BE(Math.floor((i * 65536) / 90));
        key.writeUInt16BE(i, 2);
        await client.put(Key.fromBytes(key), Buffer.alloc(1000, i));
      }
    } finally {
      client.close();
    }
    // Partition 0 leaves its tail: that node's folder waits for GC.
    const p0 = v1.byId(0)!;
    gcNode = p0.chain[1]!.node;
    const v2 = PartitionMap.create(v1.version + 1, v1.partitions.map((p) => (p.id === 0 ? { ...p, node: undefined, chain: [p.chain[0]!], epoch: p.epoch + 1 } : p)), { replicas: v1.replicas });
    expect(await cluster.store.replace(v1.version, v2)).toBe(true);
    await vi.waitFor(async () => expect((await readGcReports(cluster.etcdClient, cluster.etcd.url)).map((r) => r.node)).toEqual([gcNode]), { timeout: 10_000, interval: 100 });

    ops = new EtcdOperationStore(cluster.etcdClient, cluster.etcd.url);
    const now = Date.now();
    stepStartedAtMs = now - 10_000;
    opId = newOperationId(now);
    const record: OperationRecord = {
      id: opId,
      args: { kind: 'move', partition: 1, from: v2.byId(1)!.chain[0]!.node, to: gcNode },
      state: 'running',
      createdAtMs: now - 20_000,
      updatedAtMs: now,
      limits: { maxMovements: 2, maxPauseMs: 2000 },
      steps: [{ description: `move partition 1 to ${gcNode}`, partition: 1, to: gcNode, state: 'running', phase: 'syncing', bytesTotal: 4_000_000, bytesDone: 1_000_000, rowsTotal: 40_000, rowsDone: 10_000, startedAtMs: stepStartedAtMs }],
      pauses: [],
    };
    expect(await ops.create(record)).toBe(true);
    // A finished one is not "in progress".
    expect(await ops.create({ ...record, id: newOperationId(now - 60_000), state: 'completed', steps: [{ ...record.steps[0]!, state: 'done' }], finishedAtMs: now })).toBe(true);

    metrics = new CliProcess(['metrics-server', '--seeds', v2.partitions[0]!.node, '--port', '0', '--interval', '300ms', '--etcd', cluster.etcd.url]).start();
    url = String((await metrics.event('ready')).url);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium' });
  });

  afterAll(async () => {
    await browser?.close();
    await metrics?.kill('SIGTERM');
    await cluster?.close();
  });

  it('/api/movement and /metrics: the running operation with bytes, rows and ETA, data awaiting GC per node, and each node\'s share of the data', async () => {
    const view = await vi.waitFor(
      async () => {
        const v = (await (await fetch(new URL('api/movement', url))).json()) as MovementView;
        expect(v.etcd).toBe('ok');
        expect(v.gc.length).toBe(1);
        expect(v.nodes.reduce((s, n) => s + n.bytes, 0)).toBeGreaterThan(0);
        return v;
      },
      { timeout: 15_000, interval: 100 },
    );
    expect(view.operations).toHaveLength(1);
    const op = view.operations[0]!;
    expect(op).toMatchObject({ id: opId, kind: 'move', state: 'running', bytesDone: 1_000_000, bytesTotal: 4_000_000, rowsDone: 10_000, rowsTotal: 40_000, steps: 1, stepsDone: 0 });
    // 1 MB moved since the step started: 3 MB left take three times as long again (as of the read of etcd).
    const elapsedS = (view.readAtMs! - stepStartedAtMs) / 1000;
    expect(elapsedS).toBeGreaterThan(10);
    expect(Math.abs(op.etaSeconds! - 3 * elapsedS)).toBeLessThanOrEqual(1);
    expect(view.finished.map((o) => o.state)).toEqual(['completed']);
    expect(view.gc[0]).toMatchObject({ node: gcNode, partition: 0 });
    expect(view.gc[0]!.bytes).toBeGreaterThan(0);

    // Per-node share from the partitions' figures: each serving replica counts its partition's bytes.
    const partitions = ((await (await fetch(new URL('api/partitions', url))).json()) as { partitions: PartitionView[] }).partitions;
    const expected = new Map<string, number>();
    for (const p of partitions) for (const r of p.chain) expected.set(r.node, (expected.get(r.node) ?? 0) + (p.logicalBytes ?? 0));
    const total = [...expected.values()].reduce((a, b) => a + b, 0);
    expect(new Map(view.nodes.map((n) => [n.node, n.bytes]))).toEqual(expected);
    for (const n of view.nodes) expect(n.share).toBeCloseTo(n.bytes / total, 9);
    // gcNode left partition 0's chain: it holds less than a node with two replicas.
    expect(view.nodes.find((n) => n.node === gcNode)!.replicas).toBe(1);

    const families = parsePrometheusText(await (await fetch(new URL('metrics', url))).text());
    expect(sampleValue(families, 'shardpipe_operations_in_progress', { kind: 'move' })).toBe(1);
    expect(sampleValue(families, 'shardpipe_operations_in_progress', { kind: 'split' })).toBe(0);
    expect(sampleValue(families, 'shardpipe_operation_bytes_moved', { operation: opId, kind: 'move' })).toBe(1_000_000);
    expect(sampleValue(families, 'shardpipe_operation_bytes_total', { operation: opId, kind: 'move' })).toBe(4_000_000);
    expect(sampleValue(families, 'shardpipe_operation_rows_moved', { operation: opId, kind: 'move' })).toBe(10_000);
    expect(sampleValue(families, 'shardpipe_operation_stalled_seconds', { operation: opId, kind: 'move' })).toBeGreaterThanOrEqual(0);
    expect(sampleValue(families, 'shardpipe_cluster_gc_pending_bytes', { node: gcNode })).toBe(view.gc[0]!.bytes);
    expect(sampleValue(families, 'shardpipe_movement_etcd_up')).toBe(1);
    let shareSum = 0;
    for (const n of view.nodes) {
      expect(sampleValue(families, 'shardpipe_node_data_bytes', { node: n.node })).toBe(n.bytes);
      shareSum += sampleValue(families, 'shardpipe_node_data_share', { node: n.node }) ?? 0;
    }
    expect(shareSum).toBeCloseTo(1, 9);
  });

  it('the page\'s "Data movement" panel shows the operation\'s progress bar, the per-node shares and the data awaiting GC, and follows the record as it advances', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('requestfailed', (req) => errors.push(`request failed: ${req.url()}`));
    await page.goto(url);
    const row = page.locator(`#movement-operations [data-operation="${opId}"]`);
    await row.waitFor();
    expect(await row.innerText()).toContain('rows');
    expect(await row.innerText()).toMatch(/ETA (\d+h )?(\d+m )?\d+s/);
    expect(await row.locator('.progress > div').getAttribute('style')).toContain('width: 25%');
    await page.locator(`#movement-gc [data-node="${gcNode}"][data-partition="0"]`, { hasText: `partition 0` }).waitFor();
    await page.locator('#movement-shares .share').nth(2).waitFor();
    expect(await page.locator('#movement-shares .share').count()).toBe(3);
    expect(await page.locator('#movement-note').innerText()).toContain('read from etcd');
    await page.locator('#movement').screenshot({ path: join(ARTIFACTS, 'metrics-page-movement.png') });

    // The runner advances the step: the page follows without a reload.
    await ops.update(opId, (r) => ({ ...r, steps: r.steps.map((s) => ({ ...s, bytesDone: 3_000_000, rowsDone: 30_000 })) }));
    await page.locator(`#movement-operations [data-operation="${opId}"] .progress > div[style*="width: 75%"]`).waitFor({ timeout: 10_000 });
    await ops.update(opId, (r) => ({ ...r, state: 'completed', finishedAtMs: Date.now(), steps: r.steps.map((s) => ({ ...s, state: 'done' as const })) }));
    await page.locator('#movement-operations', { hasText: 'None running.' }).waitFor({ timeout: 10_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'metrics-page-etcd.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
    await sleep(0);
  });

  it('without --etcd the panel says so and still shows the shares (the API answers not-configured)', async () => {
    const plain = new CliProcess(['metrics-server', '--seeds', [...cluster.nodes.keys()][0]!, '--port', '0', '--interval', '300ms']).start();
    try {
      const plainUrl = String((await plain.event('ready')).url);
      const v = await vi.waitFor(
        async () => {
          const m = (await (await fetch(new URL('api/movement', plainUrl))).json()) as MovementView;
          expect(m.nodes.length).toBe(3);
          return m;
        },
        { timeout: 10_000, interval: 100 },
      );
      expect(v).toMatchObject({ etcd: 'not-configured', operations: [], gc: [] });
      const families = parsePrometheusText(await (await fetch(new URL('metrics', plainUrl))).text());
      // Registered (dashboards find them), with no series.
      expect(families.get('shardpipe_operations_in_progress')?.samples).toEqual([]);
      expect(families.has('shardpipe_movement_etcd_up')).toBe(false);
      expect(families.has('shardpipe_node_data_share')).toBe(true);
      const page = await browser.newPage();
      await page.goto(plainUrl);
      await page.locator('#movement-note', { hasText: 'No etcd configured' }).waitFor();
      await page.close();
    } finally {
      await plain.kill('SIGTERM');
    }
  });
});
