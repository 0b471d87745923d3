import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { create, toBinary } from '@bufbuild/protobuf';
import { Client, Metadata, credentials, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inSpan, startTracing, traceparentOf } from '../../common/index.js';
import { PrivateRedis } from '../../jobs/index.js';
import { Key, STORE_SERVICE_DESC, StoreClient } from '../../store/index.js';
import { OtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { writeSparkDrop } from '../helpers/spark-drop.js';
import { CLI, StoreCluster, runCli } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

const HEX32 = /^[0-9a-f]{32}$/;

/** Waits until `check` holds (polling a condition the processes make true), or fails after `ms`. */
async function until(what: string, check: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One raw unary call with request metadata; resolves the trailing metadata and the status. */
function rawGet(address: string, key: Buffer, requestId?: string): Promise<{ status: StatusObject; trailers: Metadata }> {
  const desc = STORE_SERVICE_DESC.methods.find((m) => m.name === 'Get')!.input;
  const client = new Client(address, credentials.createInsecure());
  const md = new Metadata();
  if (requestId !== undefined) md.set('x-request-id', requestId);
  const id = (b: Buffer): Buffer => b;
  return new Promise((resolve) => {
    const call = client.makeUnaryRequest('/shardpipe.store.v1.Store/Get', id, id, Buffer.from(toBinary(desc, create(desc, { mapVersion: 1, key }))), md, { deadline: Date.now() + 5000 }, (_err: ServiceError | null) => undefined);
    call.on('status', (status: StatusObject) => {
      client.close();
      resolve({ status, trailers: status.metadata });
    });
  });
}

describe('tracing: one trace per operation across CLI, worker and store node (OTLP/HTTP protobuf)', { timeout: 180_000 }, () => {
  let tmp: TempDir;
  let receiver: OtlpReceiver;
  let cluster: StoreCluster;
  let redis: PrivateRedis;
  let worker: ChildProcess | undefined;
  let workerLog = '';
  let otelEnv: Record<string, string>;

  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-tracing-');
    receiver = await OtlpReceiver.start();
    // Short export delay, so the long-running worker and node send their spans soon after the ingest.
    otelEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_BSP_SCHEDULE_DELAY: '100' };
    Object.assign(process.env, otelEnv);
    try {
      cluster = await StoreCluster.start({ nodes: 1, partitions: 2, extraArgs: ['--log-level', 'debug'] });
    } finally {
      for (const k of Object.keys(otelEnv)) delete process.env[k];
    }
    redis = await PrivateRedis.start({ dataDir: tmp.sub('redis') });
    worker = spawn(process.execPath, [CLI, 'worker', '--redis', redis.url, '--seeds', cluster.seeds.join(','), '--log-format', 'json', '--log-level', 'info'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...otelEnv },
    });
    worker.stderr!.on('data', (d: Buffer) => (workerLog += d.toString()));
    const lines = createInterface({ input: worker.stdout! });
    await new Promise<void>((resolve, reject) => {
      lines.on('line', (line) => line.includes('"event":"ready"') && resolve());
      worker!.once('exit', (code) => reject(new Error(`worker exited with ${code}: ${workerLog}`)));
    });
  });

  afterAll(async () => {
    if (worker && worker.exitCode === null && worker.signalCode === null) {
      const exited = once(worker, 'exit');
      worker.kill('SIGKILL');
      await exited;
    }
    await cluster?.close();
    await redis?.stop();
    await receiver?.close();
    await tmp?.remove();
  });

  it('an ingest is one connected trace: CLI root → job spans in the worker → BulkInsert client spans → node spans → partition write phases, with the report\'s traceId', async () => {
    const drop = await writeSparkDrop(tmp.sub('drop'), { files: 2, rowsPerFile: 3000, success: true, prefix: 't-' });
    const r = await runCli(['ingest', drop.dir, '--key-column', 'id', '--no-local-worker', '--wait', '--json', '--seeds', cluster.seeds.join(','), '--redis', redis.url, '--data-dir', tmp.sub('cli'), '--log-level', 'warn'], otelEnv);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { traceId: string; rowsIngested: number };
    expect(report.rowsIngested).toBe(6000);
    expect(report.traceId).toMatch(HEX32);
    expect(report.traceId).not.toMatch(/^0+$/);

    const inTrace = (): ReceivedSpan[] => receiver.spans.filter((s) => s.traceId === report.traceId);
    const writtenRows = (): number => inTrace().filter((s) => s.name === 'partition.write_fsync').reduce((n, s) => n + Number(s.attributes['shardpipe.rows']), 0);
    // The CLI exports when it exits; the worker and the node on their batch schedule.
    await until('every written row in partition.write_fsync spans', () => writtenRows() >= 6000 && inTrace().some((s) => s.name === 'ingest-drop'));
    expect(receiver.refused).toEqual([]);
    const spans = inTrace();
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const parentOf = (s: ReceivedSpan): ReceivedSpan | undefined => byId.get(s.parentSpanId);

    const roots = spans.filter((s) => s.parentSpanId === '');
    expect(roots.map((s) => [s.name, s.service])).toEqual([['shardpipe ingest', 'shardpipe-ingest']]);
    const root = roots[0]!;

    const files = spans.filter((s) => s.name === 'ingest-file');
    expect(files).toHaveLength(2);
    for (const f of files) {
      expect(f.service).toBe('shardpipe-worker');
      expect(f.parentSpanId).toBe(root.spanId);
      expect(String(f.attributes.file)).toMatch(/^part-0000[01]/);
    }
    const parentJob = spans.find((s) => s.name === 'ingest-drop')!;
    expect(parentJob.parentSpanId).toBe(root.spanId);

    const clientCalls = spans.filter((s) => s.name === 'BulkInsert');
    expect(clientCalls.length).toBeGreaterThanOrEqual(2);
    for (const c of clientCalls) {
      expect(c.service).toBe('shardpipe-worker');
      expect(parentOf(c)?.name).toBe('ingest-file');
    }
    const nodeCalls = spans.filter((s) => s.name === 'store.BulkInsert');
    expect(nodeCalls.length).toBe(clientCalls.length);
    for (const n of nodeCalls) {
      expect(n.service).toBe('shardpipe-store');
      expect(parentOf(n)?.name).toBe('BulkInsert');
      expect(typeof n.attributes['shardpipe.request_id']).toBe('string');
    }
    for (const phase of ['partition.queue_wait', 'partition.batch_build', 'partition.write_fsync']) {
      const ps = spans.filter((s) => s.name === phase);
      expect(ps.length, phase).toBe(nodeCalls.length);
      for (const p of ps) {
        expect(parentOf(p)?.name).toBe('store.BulkInsert');
        expect(p.endNs).toBeGreaterThanOrEqual(p.startNs);
        expect(Number(p.attributes['shardpipe.bytes'])).toBeGreaterThan(0);
      }
    }
    // Batches, not rows: the rows of the node's write spans add up to the ingest's rows exactly.
    expect(writtenRows()).toBe(6000);
  });

  it('a backup is one trace too: CLI root → backup-shard jobs → Scan client spans → the node\'s store.Scan spans', async () => {
    const target = tmp.sub('backups');
    await mkdir(target);
    const r = await runCli(['backup', 'run', '--target', `file://${target}`, '--no-local-worker', '--wait', '--json', '--seeds', cluster.seeds.join(','), '--redis', redis.url, '--data-dir', tmp.sub('cli-backup'), '--log-level', 'warn'], otelEnv);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { traceId: string; rows: number; shards: number };
    expect(report.traceId).toMatch(HEX32);
    expect(report.rows).toBeGreaterThanOrEqual(6000);
    const inTrace = (): ReceivedSpan[] => receiver.spans.filter((s) => s.traceId === report.traceId);
    await until('the node\'s Scan spans of every shard', () => inTrace().filter((s) => s.name === 'store.Scan').length >= report.shards && inTrace().some((s) => s.name === 'backup'));
    const spans = inTrace();
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const root = spans.find((s) => s.parentSpanId === '')!;
    expect([root.name, root.service]).toEqual(['shardpipe backup run', 'shardpipe-backup']);
    const shards = spans.filter((s) => s.name === 'backup-shard');
    expect(shards).toHaveLength(report.shards);
    for (const s of shards) expect(s.parentSpanId).toBe(root.spanId);
    const scans = spans.filter((s) => s.name === 'Scan');
    expect(scans.length).toBeGreaterThanOrEqual(report.shards);
    for (const s of scans) expect(byId.get(s.parentSpanId)?.name).toBe('backup-shard');
    for (const s of spans.filter((x) => x.name === 'store.Scan')) {
      expect(s.service).toBe('shardpipe-store');
      expect(byId.get(s.parentSpanId)?.name).toBe('Scan');
    }
  });

  it('the node returns the caller\'s x-request-id in trailers and logs it; without one it makes one up', async () => {
    const node = cluster.nodes[0]!;
    const sent = await rawGet(node.address, Buffer.alloc(0), 'req-trace-test-42');
    // An empty key is refused (INVALID_ARGUMENT): the node logs the refusal with the request id.
    expect(sent.status.code).toBe(3);
    expect(sent.trailers.get('x-request-id')).toEqual(['req-trace-test-42']);
    await until('the node log line of the request', () => node.stderr.includes('req-trace-test-42'));
    const line = node.stderr.split('\n').find((l) => l.includes('req-trace-test-42'))!;
    expect(JSON.parse(line)).toMatchObject({ requestId: 'req-trace-test-42', method: 'Get', msg: 'request refused' });

    const ok = await rawGet(node.address, Buffer.from('some-key'), 'req-ok-7');
    expect(ok.status.code).toBe(0);
    expect(ok.trailers.get('x-request-id')).toEqual(['req-ok-7']);

    const made = await rawGet(node.address, Buffer.alloc(0));
    const id = made.trailers.get('x-request-id')[0];
    expect(typeof id).toBe('string');
    expect(String(id)).toMatch(/^[0-9a-f]{12}-[0-9a-z]+$/);
    await until('the node log line of the generated id', () => node.stderr.includes(`"requestId":"${String(id)}"`));
    // A header that is no usable id is replaced, not echoed.
    const bad = await rawGet(node.address, Buffer.alloc(0), 'x'.repeat(200));
    expect(String(bad.trailers.get('x-request-id')[0])).toMatch(/^[0-9a-f]{12}-[0-9a-z]+$/);
  });

  it('a scheduled backup run by the worker is one trace of its own: the scheduled job\'s span is the root, its shard and parent jobs its children; its log lines and report carry the trace id', async () => {
    const target = tmp.sub('scheduled-backups');
    await mkdir(target);
    const sched = await runCli(['backup', 'schedule', '--target', `file://${target}`, '--cron', '*/2 * * * * *', '--name', 'traced', '--redis', redis.url, '--json']);
    expect(sched.code, sched.stderr).toBe(0);
    const runRoot = (): ReceivedSpan | undefined =>
      receiver.spans.find((s) => s.name === 'scheduled-backup' && s.parentSpanId === '' && receiver.spans.some((b) => b.name === 'backup' && b.traceId === s.traceId));
    try {
      await until('a scheduled run whose backup finished', () => runRoot() !== undefined, 60_000);
    } finally {
      const removed = await runCli(['backup', 'schedule', 'remove', 'traced', '--redis', redis.url]);
      expect(removed.code, removed.stderr).toBe(0);
    }
    const root = runRoot()!;
    expect(root.service).toBe('shardpipe-worker');
    const spans = receiver.spans.filter((s) => s.traceId === root.traceId);
    // One root per run: nothing else of the run starts a trace.
    expect(spans.filter((s) => s.parentSpanId === '').map((s) => s.name)).toEqual(['scheduled-backup']);
    const shards = spans.filter((s) => s.name === 'backup-shard');
    expect(shards.length).toBeGreaterThan(0);
    for (const s of [...shards, ...spans.filter((x) => x.name === 'backup')]) expect(s.parentSpanId).toBe(root.spanId);
    const lines = workerLog.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const started = lines.find((l) => l.msg === 'scheduled backup started' && l.traceId === root.traceId);
    expect(started).toMatchObject({ schedule: 'traced' });
    const backupId = String(started!.backupId);
    expect(lines.find((l) => l.msg === 'backup complete: manifest written' && l.backupId === backupId)?.traceId).toBe(root.traceId);
    // Other runs, if the schedule fired again before it was removed, are traces of their own.
    const otherRuns = receiver.spans.filter((s) => s.name === 'scheduled-backup' && s.spanId !== root.spanId);
    for (const r of otherRuns) expect(r.traceId).not.toBe(root.traceId);
  });

  it('point calls carry trace context: kv put and kv get are each one trace, the CLI\'s Put/Get client span the parent of the node\'s store.Put/store.Get', async () => {
    const seeds = cluster.seeds.join(',');
    const put = await runCli(['kv', 'put', 'traced-key', 'v1', '--seeds', seeds, '--log-level', 'warn'], otelEnv);
    expect(put.code, put.stderr).toBe(0);
    const get = await runCli(['kv', 'get', 'traced-key', '--seeds', seeds, '--log-level', 'warn'], otelEnv);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout.trim()).toBe('v1');
    for (const [client, server] of [['Put', 'store.Put'], ['Get', 'store.Get']] as const) {
      await until(`a ${server} span with its ${client} parent`, () => {
        const ids = new Set(receiver.spans.filter((s) => s.name === client && s.service === 'shardpipe-kv').map((s) => s.spanId));
        return receiver.spans.some((s) => s.name === server && ids.has(s.parentSpanId));
      });
      const callSpan = receiver.spans.find((s) => s.name === client && s.service === 'shardpipe-kv')!;
      // The CLI's call is the trace's root (a kv command is one call).
      expect(callSpan.parentSpanId).toBe('');
      expect(callSpan.attributes['rpc.method']).toBe(client);
      const nodeSpan = receiver.spans.find((s) => s.name === server && s.parentSpanId === callSpan.spanId)!;
      expect(nodeSpan.service).toBe('shardpipe-store');
      expect(nodeSpan.traceId).toBe(callSpan.traceId);
      expect(typeof nodeSpan.attributes['shardpipe.request_id']).toBe('string');
    }
  });

  it('coalesced point calls: a Multi\'s client span is the child of its first op\'s span and links the others (each its own trace); the node\'s store.Multi is its child', async () => {
    // In this process (a client library user that exports): the spans of a Multi are only made
    // where several callers' ops meet, which a CLI command cannot show.
    Object.assign(process.env, otelEnv);
    const sdk = await startTracing({ serviceName: 'tracing-test-client' });
    const client = new StoreClient({ seeds: cluster.seeds, pointCallsInFlight: 1, operationTimeoutMs: 20_000 });
    try {
      const callers: string[] = [];
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          // Each caller's op under its own root span: 40 traces.
          inSpan('caller', undefined, ROOT_CONTEXT, async (span) => {
            callers.push(traceparentOf(span));
            await client.get(Key.fromUtf8(`coalesce-${i}`));
          }),
        ),
      );
      await sdk.shutdown();
      const traces = new Set(callers.map((tp) => tp.split('-')[1]!));
      expect(traces.size).toBe(40);
      await until('the node\'s store.Multi spans', () => receiver.spans.some((s) => s.name === 'store.Multi' && traces.has(s.traceId)));
      const mine = (): ReceivedSpan[] => receiver.spans.filter((s) => traces.has(s.traceId));
      const gets = mine().filter((s) => s.name === 'Get' && s.service === 'tracing-test-client');
      expect(gets).toHaveLength(40);
      const multis = mine().filter((s) => s.name === 'Multi' && s.service === 'tracing-test-client');
      expect(multis.length).toBeGreaterThan(0);
      const getIds = new Map(gets.map((g) => [g.spanId, g]));
      // Every op is served once: by its own plain call (a store.Get child) or as the parent or a link of one Multi.
      const servedBy = new Map<string, number>();
      for (const m of multis) {
        const parent = getIds.get(m.parentSpanId);
        expect(parent, 'a Multi\'s parent is an op span').toBeDefined();
        expect(m.traceId).toBe(parent!.traceId);
        expect(m.links.length + 1).toBe(m.attributes['shardpipe.ops']);
        for (const id of [m.parentSpanId, ...m.links.map((l) => l.spanId)]) servedBy.set(id, (servedBy.get(id) ?? 0) + 1);
        for (const l of m.links) expect(getIds.get(l.spanId)?.traceId).toBe(l.traceId);
      }
      await until('a node span for every call', () => {
        const nodeSpans = mine().filter((s) => s.service === 'shardpipe-store');
        return multis.every((m) => nodeSpans.some((n) => n.name === 'store.Multi' && n.parentSpanId === m.spanId)) &&
          gets.filter((g) => !servedBy.has(g.spanId)).every((g) => nodeSpans.some((n) => n.name === 'store.Get' && n.parentSpanId === g.spanId));
      });
      for (const g of gets) expect(servedBy.get(g.spanId) ?? 0).toBeLessThanOrEqual(1);
      // Coalescing happened: more ops than calls.
      expect([...servedBy.keys()].length).toBeGreaterThan(multis.length);
    } finally {
      client.close();
      for (const k of Object.keys(otelEnv)) delete process.env[k];
    }
  });

  it('tracing off: no OpenTelemetry SDK module is resolved, the report still has a trace id, and job log lines carry it with the job id', async () => {
    // The exporting worker must not take this ingest's jobs: the CLI's own worker does them.
    const exited = once(worker!, 'exit');
    worker!.kill('SIGKILL');
    await exited;
    const hook = tmp.sub('otel-hook.mjs');
    const resolveHook = "import { writeSync } from 'node:fs'; export async function resolve(s, c, n) { if (s.startsWith('@opentelemetry/')) writeSync(2, 'LOADED ' + s + '\\n'); return n(s, c); }";
    await writeFile(hook, `import { register } from 'node:module';\nregister('data:text/javascript,' + encodeURIComponent(${JSON.stringify(resolveHook)}));\n`);
    const drop = await writeSparkDrop(tmp.sub('drop-off'), { files: 1, rowsPerFile: 500, success: true, prefix: 'off-' });
    // A 0-byte file fails its child: the worker's failure line is a job log line.
    await writeFile(join(drop.dir, 'part-09999-empty.parquet'), '');
    const r = await runCli(['ingest', drop.dir, '--key-column', 'id', '--json', '--seeds', cluster.seeds.join(','), '--redis', redis.url, '--data-dir', tmp.sub('cli-off'), '--log-format', 'json', '--log-level', 'warn'], {
      NODE_OPTIONS: `--import ${hook}`,
      OTEL_EXPORTER_OTLP_ENDPOINT: '',
      OTEL_TRACES_EXPORTER: '',
    });
    expect(r.code, r.stderr).toBe(2);
    const loaded = r.stderr.split('\n').filter((l) => l.startsWith('LOADED '));
    expect(loaded.length).toBeGreaterThan(0);
    expect(loaded.filter((l) => l !== 'LOADED @opentelemetry/api')).toEqual([]);
    const report = JSON.parse(r.stdout) as { traceId: string; filesFailed: number };
    expect(report.filesFailed).toBe(1);
    expect(report.traceId).toMatch(HEX32);
    expect(report.traceId).not.toMatch(/^0+$/);
    const failed = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'ingest job attempt failed');
    expect(failed.length).toBeGreaterThan(0);
    for (const l of failed) {
      expect(l.traceId).toBe(report.traceId);
      expect(String(l.jobId)).toMatch(/^ingest-[0-9a-f]+-f\d+$/);
    }
  });
});
