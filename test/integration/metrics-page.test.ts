import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PrivateRedis } from '../../jobs/index.js';
import type { JobsView } from '../../metrics-server/index.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';
import { writeSparkDrop, type SparkDrop } from '../helpers/spark-drop.js';
import { CLI, StoreCluster, runCli } from '../helpers/store-cluster.js';

const ARTIFACTS = resolve(import.meta.dirname, '../artifacts');

/** A long-running CLI command; resolves with its JSON ready line. */
async function startCli(args: string[]): Promise<{ child: ChildProcess; ready: Record<string, unknown>; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, ...args, '--log-format', 'json', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const ready = await new Promise<Record<string, unknown>>((resolveReady, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"event":"ready"')) resolveReady(JSON.parse(line) as Record<string, unknown>);
    });
    child.once('exit', (code) => reject(new Error(`shardpipe ${args[0]} exited with ${code} before ready: ${stderr}`)));
  });
  return { child, ready, stderr: () => stderr };
}

async function stopCli(child: ChildProcess | undefined): Promise<number | null> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
  const exited = once(child, 'exit') as Promise<[number | null]>;
  child.kill('SIGTERM');
  return (await exited)[0];
}

describe('shardpipe metrics-server: the page in a real browser, the jobs panel from BullMQ, worker /metrics', () => {
  let dir: string;
  let cluster: StoreCluster;
  let redis: PrivateRedis;
  let drop: SparkDrop;
  let metrics: Awaited<ReturnType<typeof startCli>>;
  let worker: Awaited<ReturnType<typeof startCli>>;
  let browser: Browser;
  let url: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shardpipe-metrics-page-'));
    await mkdir(ARTIFACTS, { recursive: true });
    [cluster, redis, drop] = await Promise.all([
      StoreCluster.start({ nodes: 2, partitions: 4 }),
      PrivateRedis.start({ dataDir: join(dir, 'redis') }),
      writeSparkDrop(join(dir, 'drop'), { files: 2, rowsPerFile: 3000, rowGroupRows: 1000, prefix: 'page-' }),
    ]);
    const seeds = cluster.seeds.join(',');
    worker = await startCli(['worker', '--redis', redis.url, '--seeds', seeds, '--metrics-port', '0']);
    metrics = await startCli(['metrics-server', '--seeds', seeds, '--port', '0', '--interval', '300ms', '--redis', redis.url]);
    url = String(metrics.ready.url);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium' });
  });

  afterAll(async () => {
    await browser?.close();
    await stopCli(metrics?.child);
    await stopCli(worker?.child);
    await cluster?.close();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('prints a ready line with its URL and serves health before and after the first poll', async () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect((await fetch(new URL('healthz', url))).status).toBe(200);
    await vi.waitFor(async () => expect((await fetch(new URL('readyz', url))).status).toBe(200), { timeout: 10_000, interval: 100 });
  });

  it('an ingest run by a separate worker shows in the jobs panel, in Bull Board, and in the worker\'s /metrics', async () => {
    const r = await runCli(['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', '--seeds', cluster.seeds.join(','), '--redis', redis.url, '--no-local-worker', '--wait', '--json', '--data-dir', join(dir, 'data'), '--log-level', 'warn']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).rowsIngested).toBe(drop.rows);

    const jobs = (await (await fetch(new URL('api/jobs', url))).json()) as JobsView;
    expect(jobs.redis).toBe('ok');
    const flows = jobs.queues.find((q) => q.name === 'shardpipe-ingest')!;
    expect(flows).toMatchObject({ kind: 'ingest', role: 'flow', counts: expect.objectContaining({ completed: 1 }) });
    expect(flows.recent[0]).toMatchObject({ state: 'completed', progress: 1, progressText: '6,000 rows ingested', children: { done: 2, failed: 0, pending: 0 } });
    expect(jobs.queues.find((q) => q.name === 'shardpipe-ingest-file')!.counts.completed).toBe(2);
    // Other queues are listed only if something (here: the worker's restore side) created them, and they are empty.
    for (const q of jobs.queues.filter((x) => x.kind !== 'ingest')) expect(Object.values(q.counts).every((n) => n === 0), q.name).toBe(true);

    const board = await fetch(new URL('queues', url));
    expect(board.status).toBe(200);
    expect(await board.text()).toContain('shardpipe jobs');
    const boardQueues = (await (await fetch(new URL('queues/api/queues', url))).json()) as { queues: Array<{ name: string; readOnlyMode: boolean }> };
    expect(boardQueues.queues.map((q) => q.name).sort()).toEqual(jobs.queues.map((q) => q.name).sort());
    expect(boardQueues.queues.every((q) => q.readOnlyMode)).toBe(true);

    // The worker records a job when BullMQ reports it finished, just after the watcher sees it.
    const workerMetrics = `http://127.0.0.1:${String(worker.ready.metricsPort)}/metrics`;
    await vi.waitFor(
      async () => {
        const families = parsePrometheusText(await (await fetch(workerMetrics)).text());
        expect(sampleValue(families, 'shardpipe_rows_total', { kind: 'ingest' })).toBe(drop.rows);
        expect(sampleValue(families, 'shardpipe_rows_total', { kind: 'backup' })).toBe(0);
        expect(sampleValue(families, 'shardpipe_job_duration_seconds_count', { queue: 'shardpipe-ingest-file', outcome: 'completed' })).toBe(2);
        expect(sampleValue(families, 'shardpipe_job_duration_seconds_count', { queue: 'shardpipe-ingest', outcome: 'completed' })).toBe(1);
      },
      { timeout: 10_000, interval: 100 },
    );
  });

  it('the page shows the partitions, nodes and jobs of the running cluster and refreshes by itself when a node stops', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('requestfailed', (req) => errors.push(`request failed: ${req.url()}`));
    await page.goto(url);
    // Partition 1 ([0x4000, 0x8000)) holds every "page-…" key.
    await page.locator('#partitions-table tbody tr[data-partition="1"] td:nth-child(4)', { hasText: '6,000' }).waitFor();
    expect(await page.locator('#partitions-table tbody tr').count()).toBe(4);
    expect(await page.locator('#partition-chart rect.bar').count()).toBe(8);
    expect(await page.locator('#partition-chart rect.bar.ok[data-partition="1"]').count()).toBe(2);
    expect(await page.locator('#nodes-table tbody tr', { hasText: 'up' }).count()).toBe(2);
    expect(await page.locator('#summary').innerText()).toContain('6,000');
    await page.locator('[data-queue="shardpipe-ingest"]', { hasText: '6,000 rows ingested' }).waitFor();
    await page.screenshot({ path: join(ARTIFACTS, 'metrics-page.png'), fullPage: true });

    // A shard plan from the form.
    await page.fill('#plan-value', '2000');
    await page.click('#plan-form button');
    await page.locator('#plan-table:not([hidden]) tbody tr').first().waitFor();
    expect(await page.locator('#plan-table tbody tr').count()).toBeGreaterThanOrEqual(3);

    // No reload: the page polls the API and marks the stopped node and its partitions.
    await cluster.nodes[1]!.stop();
    await page.locator('#nodes-table tbody tr', { hasText: 'unreachable' }).waitFor({ timeout: 15_000 });
    await page.locator('#partitions-table tbody tr.stale').first().waitFor();
    expect(await page.locator('#partitions-table tbody tr.stale').count()).toBe(2);
    expect(await page.locator('#partitions-table tbody tr[data-partition="1"] td:nth-child(4)').innerText()).toBe('6,000');
    await page.screenshot({ path: join(ARTIFACTS, 'metrics-page-node-down.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('stops cleanly on SIGTERM (exit 0)', async () => {
    expect(await stopCli(metrics.child)).toBe(0);
    expect(await stopCli(worker.child)).toBe(0);
    expect(metrics.stderr()).not.toContain('"level":50');
  });
});
