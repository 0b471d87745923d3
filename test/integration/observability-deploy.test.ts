import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, statfs, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findFreePort } from '../../common/index.js';
import { PrivateRedis } from '../../jobs/index.js';
import { parsePrometheusText, sampleValue, type MetricFamily } from '../helpers/prometheus-text.js';
import { toParquet, writeSparkDrop } from '../helpers/spark-drop.js';
import { CLI, StoreCluster, runCli } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const ROOT = resolve(import.meta.dirname, '../..');
const PROMETHEUS = join(ROOT, 'deploy', 'prometheus');
const GRAFANA = join(ROOT, 'deploy', 'grafana');
const PROMTOOL = '/usr/bin/promtool';
const run = promisify(execFile);

interface AlertRule {
  alert: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Panel {
  type: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: Array<{ expr?: string; datasource?: unknown }>;
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
}

async function alertRules(): Promise<AlertRule[]> {
  const doc = parse(await readFile(join(PROMETHEUS, 'alerts.yml'), 'utf8')) as { groups: Array<{ rules: AlertRule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

async function dashboards(): Promise<Array<{ file: string; model: Dashboard }>> {
  const files = (await readdir(GRAFANA)).filter((f) => f.endsWith('.json')).sort();
  return Promise.all(files.map(async (file) => ({ file, model: JSON.parse(await readFile(join(GRAFANA, file), 'utf8')) as Dashboard })));
}

/** Panels that show data (rows only group them). */
function dataPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((p) => (p.type === 'row' ? dataPanels(p.panels ?? []) : [p]));
}

/** Grafana variables replaced by what they match at most, so the expression is plain PromQL. */
const plainPromql = (expr: string): string => expr.replaceAll('$instance', '.*');

/** Metric names an expression reads: ours and the process metrics every process exports. */
function metricNames(expr: string): string[] {
  return [...new Set(expr.match(/\b(?:shardpipe|process|nodejs)_[a-zA-Z0-9_]*/g) ?? [])];
}

/** GitHub's anchor of a Markdown heading. */
const anchorOf = (heading: string): string =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');

describe('alert rules (deploy/prometheus/alerts.yml)', () => {
  it('pass promtool check rules and the unit tests of alerts.test.yml', async () => {
    expect(existsSync(PROMTOOL), `${PROMTOOL} is missing: npm test's set-up installs Debian's prometheus package (root) — apt-get install prometheus`).toBe(true);
    const check = await run(PROMTOOL, ['check', 'rules', join(PROMETHEUS, 'alerts.yml')]);
    expect(check.stdout).toContain(`SUCCESS: ${(await alertRules()).length} rules found`);
    const tests = await run(PROMTOOL, ['test', 'rules', join(PROMETHEUS, 'alerts.test.yml')]);
    expect(tests.stdout).toContain('SUCCESS');
  });

  it('a rule that no longer matches its unit test fails promtool test rules', async () => {
    const tmp = await makeTempDir('shardpipe-alerts-');
    try {
      const rules = await readFile(join(PROMETHEUS, 'alerts.yml'), 'utf8');
      await writeFile(join(tmp.path, 'alerts.yml'), rules.replace('expr: shardpipe_node_up == 0', 'expr: shardpipe_node_up == 2'));
      await writeFile(join(tmp.path, 'alerts.test.yml'), await readFile(join(PROMETHEUS, 'alerts.test.yml'), 'utf8'));
      const broken = await run(PROMTOOL, ['test', 'rules', join(tmp.path, 'alerts.test.yml')]).then(
        () => undefined,
        (err: { code: number; stdout: string; stderr: string }) => err,
      );
      expect(broken?.code).toBe(1);
      expect(broken!.stdout + broken!.stderr).toContain('alertname: ShardpipeStoreNodeDown');
    } finally {
      await tmp.remove();
    }
  });

  it('every alert has a severity, a summary and description for the person on call, a runbook section in the README, and a unit test that fires it', async () => {
    const rules = await alertRules();
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const anchors = new Set([...readme.matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchorOf(m[1]!)));
    const tests = parse(await readFile(join(PROMETHEUS, 'alerts.test.yml'), 'utf8')) as {
      tests: Array<{ alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
    };
    const fired = new Set(tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    const silent = new Set(tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => a.exp_alerts.length === 0).map((a) => a.alertname)));
    expect(rules.map((r) => r.alert).sort()).toEqual(
      ['ShardpipeBackupFailing', 'ShardpipeBackupTooOld', 'ShardpipeDiskNearlyFull', 'ShardpipeGcOverdue', 'ShardpipeIngestFailing', 'ShardpipeIngestRejectsHigh', 'ShardpipeMetricsPollFailing', 'ShardpipeOperationStuck', 'ShardpipePartitionNotServing', 'ShardpipeReplicaLagging', 'ShardpipeReplicaSyncStuck', 'ShardpipeStoreNodeDown'],
    );
    for (const rule of rules) {
      expect(['critical', 'warning'], rule.alert).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary?.length, `${rule.alert} summary`).toBeGreaterThan(10);
      expect(rule.annotations?.description?.length, `${rule.alert} description`).toBeGreaterThan(80);
      const [file, anchor] = (rule.annotations?.runbook_url ?? '').split('#');
      expect(file, rule.alert).toBe('README.md');
      expect(anchors.has(anchor!), `${rule.alert}: README has no heading for #${anchor}`).toBe(true);
      expect(fired.has(rule.alert), `${rule.alert} has no unit test where it fires`).toBe(true);
      expect(silent.has(rule.alert), `${rule.alert} has no unit test where it stays silent`).toBe(true);
    }
  });
});

describe('Grafana dashboards (deploy/grafana/*.json)', () => {
  it('are bare dashboard models with top-level panels; every data panel has a datasource and PromQL that promtool parses', async () => {
    const all = await dashboards();
    expect(all.map((d) => d.file)).toEqual(['cluster.json', 'jobs.json', 'replication.json', 'store-rpc.json']);
    expect(new Set(all.map((d) => d.model.uid)).size).toBe(all.length);
    const exprs: string[] = [];
    for (const { file, model } of all) {
      expect(Array.isArray(model.panels), file).toBe(true);
      expect(model.title, file).toMatch(/^shardpipe/);
      const panels = dataPanels(model.panels);
      expect(panels.length, file).toBeGreaterThan(3);
      for (const p of panels) {
        const where = `${file}: ${p.title}`;
        expect(p.datasource?.type, where).toBe('prometheus');
        expect(p.targets?.length, where).toBeGreaterThan(0);
        for (const t of p.targets!) {
          expect(t.expr?.trim(), where).toBeTruthy();
          expect(metricNames(t.expr!).length, `${where}: ${t.expr} reads no metric`).toBeGreaterThan(0);
          exprs.push(plainPromql(t.expr!));
        }
      }
    }
    // promtool parses PromQL only in rule files: each expression becomes a recording rule.
    const tmp = await makeTempDir('shardpipe-dashboards-');
    try {
      const rules = { groups: [{ name: 'dashboards', rules: exprs.map((expr, i) => ({ record: `shardpipe:dashboard_expr_${i}`, expr })) }] };
      await writeFile(join(tmp.path, 'exprs.json'), JSON.stringify(rules));
      const check = await run(PROMTOOL, ['check', 'rules', join(tmp.path, 'exprs.json')]);
      expect(check.stdout).toContain(`SUCCESS: ${exprs.length} rules found`);
    } finally {
      await tmp.remove();
    }
  });
});

describe('every metric a rule or dashboard names is exported by a running stack', { timeout: 180_000 }, () => {
  const TOKENS = { admin: 'obs-admin-token-5f2a91c3', write: 'obs-write-token-8e1b44d0', read: 'obs-read-token-c07d9e16' };
  let tmp: TempDir;
  let redis: PrivateRedis;
  let cluster: StoreCluster;
  const children: ChildProcess[] = [];
  let workerMetricsPort: number;
  let gateway: { url: string; metricsPort: number };
  let metricsUrl: string;
  let env: Record<string, string>;
  let tokenFile: string;
  /** What the first test's backup left: its target label and the worker's last-success figure. */
  let lastBackup: { target: string; completedAt: number } | undefined;

  /** Starts a long-running CLI command and resolves its ready line. */
  async function startCommand(args: string[], extraEnv: Record<string, string>): Promise<Record<string, unknown>> {
    const child = spawn(process.execPath, [CLI, ...args, '--log-format', 'json', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...extraEnv } });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolveReady, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line.includes('"event":"ready"')) resolveReady(JSON.parse(line) as Record<string, unknown>);
      });
      child.once('exit', (code) => reject(new Error(`${args[0]} exited ${code} before ready: ${stderr}`)));
    });
  }

  async function scrape(url: string): Promise<Map<string, MetricFamily>> {
    const res = await fetch(url, { headers: { authorization: `Bearer ${TOKENS.read}` } });
    expect(res.status, url).toBe(200);
    return parsePrometheusText(await res.text());
  }

  /** Sample names, family names, and the series names of histogram families (which may have no samples yet). */
  function exportedNames(families: Map<string, MetricFamily>): Set<string> {
    const names = new Set<string>();
    for (const f of families.values()) {
      names.add(f.name);
      for (const s of f.samples) names.add(s.name);
      if (f.type === 'histogram') for (const suffix of ['_bucket', '_count', '_sum']) names.add(f.name + suffix);
    }
    return names;
  }

  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-observability-');
    tokenFile = tmp.sub('tokens');
    await writeFile(tokenFile, Object.entries(TOKENS).map(([role, token]) => `${role} ${token}`).join('\n') + '\n', { mode: 0o600 });
    redis = await PrivateRedis.start({ dataDir: tmp.sub('redis') });
    cluster = await StoreCluster.start({ nodes: 2, partitions: 4, extraArgs: ['--auth-token-file', tokenFile, '--metrics-port', '0'] });
    env = { SHARDPIPE_SEEDS: cluster.seeds.join(','), SHARDPIPE_REDIS_URL: redis.url };
    const worker = await startCommand(['worker', '--metrics-port', '0', '--auth-token-file', tokenFile], { ...env, SHARDPIPE_TOKEN: TOKENS.write });
    workerMetricsPort = worker.metricsPort as number;
    const port = await findFreePort();
    const server = await startCommand(['metrics-server', '--port', String(port), '--interval', '200ms', '--auth-token-file', tokenFile], { ...env, SHARDPIPE_TOKEN: TOKENS.read });
    metricsUrl = server.url as string;
    const gw = await startCommand(['gateway', '--listen', '127.0.0.1:0', '--metrics-port', '0', '--auth-token-file', tokenFile], { ...env, SHARDPIPE_TOKEN: TOKENS.write });
    gateway = { url: gw.url as string, metricsPort: gw.metricsPort as number };
  });

  afterAll(async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
    }
    await cluster?.close();
    await redis?.stop();
    await tmp?.remove();
  });

  it('after an ingest with rejects and a backup run by a separate worker, the nodes, the worker and the metrics server export every name alerts.yml and the dashboards read', async () => {
    const drop = await writeSparkDrop(tmp.sub('drop'), { files: 2, rowsPerFile: 1500, rowGroupRows: 500, prefix: 'obs-' });
    const ids = Array.from({ length: 40 }, (_, i) => (i % 8 === 0 ? null : `obs-zz-${String(i).padStart(3, '0')}`));
    await writeFile(join(drop.dir, 'part-00009-nulls.parquet'), toParquet({ id: ids, payload: ids.map(() => 'ok') }, 'SNAPPY', 20));
    const cli = (args: string[]) => runCli([...args, '--data-dir', tmp.sub('cli'), '--json', '--log-level', 'warn'], { ...env, SHARDPIPE_TOKEN: TOKENS.write });

    const ingest = await cli(['ingest', drop.dir, '--key-column', 'id', '--value-column', 'payload', '--no-local-worker', '--wait']);
    expect(ingest.code, ingest.stderr.slice(-2000)).toBe(2);
    const ingestReport = JSON.parse(ingest.stdout) as { rowsIngested: number; rowsRejected: number };
    expect(ingestReport.rowsRejected).toBe(5);

    await mkdir(tmp.sub('backups'));
    const before = Date.now() / 1000;
    const backup = await cli(['backup', 'run', '--target', `file://${tmp.sub('backups')}`, '--no-local-worker', '--wait']);
    expect(backup.code, backup.stderr.slice(-2000)).toBe(0);
    const after = Date.now() / 1000;
    const backupReport = JSON.parse(backup.stdout) as { target: string; rows: number };
    expect(backupReport.rows).toBe(ingestReport.rowsIngested);
    // A nightly schedule of the same target (by the folder path, as a user may type it): its period is exported under the workers' target label.
    const schedule = await cli(['backup', 'schedule', '--target', tmp.sub('backups'), '--cron', '0 2 * * *', '--name', 'nightly']);
    expect(schedule.code, schedule.stderr).toBe(0);

    // The metrics server's gauges appear once a poll has heard from the nodes.
    await expect.poll(async () => (await fetch(`${metricsUrl}readyz`)).status, { timeout: 20_000 }).toBe(200);

    const nodeScrapes = await Promise.all(cluster.nodes.map((n) => scrape(`http://127.0.0.1:${n.ready.metricsPort as number}/metrics`)));
    const workerScrape = await scrape(`http://127.0.0.1:${workerMetricsPort}/metrics`);
    const serverScrape = await scrape(`${metricsUrl}metrics`);
    // One Put and one Get of a missing key through the gateway, then its own /metrics (read token, like every metrics port).
    const gatewayCall = (method: string, body: unknown) =>
      fetch(`${gateway.url}/shardpipe.gateway.v1.Gateway/${method}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKENS.write}` }, body: JSON.stringify(body) });
    expect((await gatewayCall('Put', { key: Buffer.from('obs-gw').toString('base64'), value: 'eA==' })).status).toBe(200);
    expect((await gatewayCall('Get', { key: Buffer.from('obs-gw-missing').toString('base64') })).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${gateway.metricsPort}/metrics`)).status).toBe(401);
    const gatewayScrape = await scrape(`http://127.0.0.1:${gateway.metricsPort}/metrics`);
    expect(sampleValue(gatewayScrape, 'shardpipe_gateway_requests_total', { method: 'Put', code: 'OK' })).toBe(1);
    expect(sampleValue(gatewayScrape, 'shardpipe_gateway_requests_total', { method: 'Get', code: 'NOT_FOUND' })).toBe(1);
    expect(sampleValue(gatewayScrape, 'shardpipe_gateway_request_duration_seconds_count', { method: 'Put' })).toBe(1);
    expect(sampleValue(gatewayScrape, 'shardpipe_gateway_requests_in_flight', {})).toBe(0);
    const exported = new Set([...nodeScrapes, workerScrape, serverScrape, gatewayScrape].flatMap((f) => [...exportedNames(f)]));

    const referenced = new Map<string, string>();
    for (const rule of await alertRules()) for (const name of metricNames(rule.expr)) referenced.set(name, `alerts.yml ${rule.alert}`);
    for (const { file, model } of await dashboards()) {
      for (const p of dataPanels(model.panels)) for (const t of p.targets ?? []) for (const name of metricNames(t.expr ?? '')) referenced.set(name, `${file} "${p.title}"`);
    }
    expect(referenced.size).toBeGreaterThan(20);
    const missing = [...referenced].filter(([name]) => !exported.has(name)).map(([name, where]) => `${name} (${where})`);
    expect(missing).toEqual([]);

    // The new figures are the real ones: rejects counted, the backup's completion time, the disks.
    expect(sampleValue(workerScrape, 'shardpipe_rows_rejected_total', { kind: 'ingest' })).toBe(ingestReport.rowsRejected);
    expect(sampleValue(workerScrape, 'shardpipe_rows_total', { kind: 'ingest' })).toBe(ingestReport.rowsIngested);
    const completedAt = sampleValue(workerScrape, 'shardpipe_backup_last_success_timestamp_seconds', { target: backupReport.target });
    expect(completedAt).toBeGreaterThanOrEqual(before);
    expect(completedAt).toBeLessThanOrEqual(after);
    lastBackup = { target: backupReport.target, completedAt: completedAt! };
    expect(sampleValue(serverScrape, 'shardpipe_backup_schedule_interval_seconds', { schedule: 'nightly', target: backupReport.target })).toBe(86_400);
    for (const [i, scrapeOf] of nodeScrapes.entries()) {
      const node = cluster.nodes[i]!;
      const fs = await statfs(node.dataDir);
      const total = sampleValue(scrapeOf, 'shardpipe_store_disk_total_bytes', { node: node.address });
      const free = sampleValue(scrapeOf, 'shardpipe_store_disk_free_bytes', { node: node.address });
      expect(total).toBe(fs.blocks * fs.bsize);
      // Free space moves as other processes write; it is the node's file system's, within 1 GiB.
      expect(Math.abs(free! - fs.bavail * fs.bsize)).toBeLessThan(2 ** 30);
      expect(free).toBeLessThanOrEqual(total!);
    }
  });

  it('after every worker is killed and a new one starts, it exports the last backup success at once (read from Redis), so ShardpipeBackupTooOld can still fire', async () => {
    expect(lastBackup, 'the previous test ran a backup').toBeDefined();
    // SIGKILL every worker of the stack (the only one): nothing of their memory survives.
    for (const child of children.filter((c) => c.spawnargs.includes('worker'))) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    }
    const worker = await startCommand(['worker', '--metrics-port', '0', '--auth-token-file', tokenFile], { ...env, SHARDPIPE_TOKEN: TOKENS.write });
    // Its first scrape, before any backup ran in it: the series is there with the same time.
    const workerScrape = await scrape(`http://127.0.0.1:${worker.metricsPort as number}/metrics`);
    expect(sampleValue(workerScrape, 'shardpipe_backup_last_success_timestamp_seconds', { target: lastBackup!.target })).toBe(lastBackup!.completedAt);
  });
});
