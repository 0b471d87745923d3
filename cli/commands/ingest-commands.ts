import { resolve } from 'node:path';
import type { Command } from 'commander';
import { isAzureUrl, parseDurationMs } from '../../common/index.js';
import type { ChildPlacement, IngestReport, KeyOverlaps } from '../../jobs/index.js';
import type { StoreClient } from '../../store/index.js';
import { EXIT, formatTable, parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { SEEDS_HELP, withLocalWorkerOptions } from '../common-options.js';
import { dataDirOf, openJobRedis } from '../job-redis.js';
import { operationSpan } from '../operation-span.js';

interface IngestOptions {
  keyColumn: string;
  valueColumn?: string;
  seeds?: string;
  redis?: string;
  dataDir?: string;
  rejectsDir?: string;
  wait?: boolean;
  json?: boolean;
  requireSuccess: boolean;
  allowEmpty?: boolean;
  maxRejects?: string;
  strictOrder?: boolean;
  maxRowsPerSecond: string;
  restart?: boolean;
  localWorker: boolean;
  concurrency: string;
  lockDuration: string;
  rowsPerTask: string;
}

export function registerIngestCommands(program: Command, ctx: CliContext): void {
  withLocalWorkerOptions(
    program
      .command('ingest <source>')
      .description('load a drop (a folder of sorted Parquet/Arrow files with _SUCCESS, one file, or an Azure Blob prefix az://CONTAINER/PREFIX with AZURE_STORAGE_CONNECTION_STRING) into the store through a BullMQ flow; exit 0 all ingested, 2 with rejects or failed files or a drop without data files, 1 on a fatal error (also over --max-rejects)')
      .requiredOption('--key-column <col>', 'column whose value becomes the key (string → UTF-8, binary → raw, integers → order-preserving fixed width)')
      .option('--value-column <col>', 'column whose bytes become the value; default: a JSON document of all other columns')
      .option('--seeds <list>', SEEDS_HELP)
      .option('--redis <url>', 'Redis for the job queues (env SHARDPIPE_REDIS_URL); default: a private redis-server in the data folder')
      .option('--data-dir <dir>', 'data folder for the private Redis, rejects and staged az:// drops (env SHARDPIPE_DATA_DIR; default .shardpipe)')
      .option('--rejects-dir <dir>', 'where rejected rows are written (NDJSON); default: DATA_DIR/rejects')
      .option('--wait', 'wait for the end, with progress, and print the report (implied by the local worker)')
      .option('--json', 'print the report as one JSON object')
      .option('--no-require-success', 'ingest a folder even without the _SUCCESS marker')
      .option('--allow-empty', 'accept a drop without data files (exit 0, an empty report) instead of refusing it with INGEST_EMPTY_DROP (exit 2)')
      .option('--max-rejects <n>', 'fail the ingest once more rows than this are rejected (default: unlimited, reported)')
      .option('--strict-order', 'treat a key below the previous key in a file as an error')
      .option('--max-rows-per-second <n>', 'throttle per file (0 = unlimited)', '0')
      .option('--restart', 'start over instead of resuming an unfinished ingest of the same drop'),
    'files the local worker ingests at once',
  )
    .option('--rows-per-task <n>', 'split files into child jobs of about this many rows (whole row groups)', '2000000')
    .action(async (source: string, opts: IngestOptions) => {
      // The local worker's Parquet decoder thread starts first, so that its own start-up (~0.3 s)
      // runs on the other core while this thread loads the modules below, connects and plans.
      if (opts.localWorker) (await import('../../files/index.js')).prestartParquetDecoders();
      // Loaded by the command that runs them: `--help` and other commands start without them.
      const [{ IngestError }, { IngestWorkers, submitIngest, watchIngest }, { StoreClient }, { ProgressView, ingestSnapshot }] = await Promise.all([
        import('../../ingest/index.js'),
        import('../../jobs/index.js'),
        import('../../store/index.js'),
        import('../progress-view.js'),
      ]);
      const dataDir = dataDirOf(ctx, opts.dataDir);
      const seeds = opts.localWorker ? ctx.seeds(opts.seeds) : [];
      const lockDurationMs = parseDurationMs(opts.lockDuration);
      const signal = ctx.lifecycle.start();
      const operation = operationSpan(ctx, 'shardpipe ingest');
      const concurrency = opts.localWorker ? parsePositiveInt(opts.concurrency, '--concurrency') : 0;
      const client = opts.localWorker ? ctx.lifecycle.add('store client', new StoreClient({ seeds, logger: ctx.logger, credentials: ctx.storeCredentials() }), (c) => c.close()) : undefined;
      // Fetched while Redis is opened and the drop scanned; submitIngest waits for it after planning.
      const placement = client === undefined ? undefined : childPlacement(client, concurrency, ctx);
      const connection = await openJobRedis(ctx, opts.redis ?? ctx.env.SHARDPIPE_REDIS_URL, dataDir);
      let submitted;
      try {
        submitted = await submitIngest(
          connection,
          {
            source: isAzureUrl(source) ? source : resolve(source),
            // Azure drops are staged here; workers read the copies.
            cacheDir: isAzureUrl(source) ? resolve(dataDir, 'azure-cache') : undefined,
            keyColumn: opts.keyColumn,
            valueColumn: opts.valueColumn,
            rejectsDir: resolve(opts.rejectsDir ?? resolve(dataDir, 'rejects')),
            maxRejects: opts.maxRejects === undefined ? undefined : parsePositiveInt(opts.maxRejects, '--max-rejects'),
            strictOrder: opts.strictOrder ?? false,
            maxRowsPerSecond: parsePositiveInt(opts.maxRowsPerSecond, '--max-rows-per-second'),
          },
          {
            restart: opts.restart,
            requireSuccess: opts.requireSuccess,
            allowEmpty: opts.allowEmpty ?? false,
            rowsPerTask: parsePositiveInt(opts.rowsPerTask, '--rows-per-task'),
            azureConnectionString: ctx.env.AZURE_STORAGE_CONNECTION_STRING,
            signal,
            traceparent: operation.traceparent,
            placement,
          },
        );
      } catch (err) {
        // Nothing to ingest is not a crash: the drop is there, it holds no data (exit 2 like other incomplete ingests).
        if (err instanceof IngestError && err.code === 'INGEST_EMPTY_DROP') {
          process.stderr.write(`shardpipe: ${err.message} [${err.code}]\n`);
          process.exitCode = EXIT.incomplete;
          return;
        }
        throw err;
      }
      const { plan } = submitted;
      operation.setAttribute('shardpipe.ingest_id', plan.ingestId);
      ctx.logger.info({ ingestId: plan.ingestId, traceId: operation.traceId, state: submitted.state, files: plan.files.length, children: plan.children.length, rows: plan.rowsTotal, skipped: plan.skipped }, 'ingest submitted');
      if (!opts.json) {
        process.stderr.write(`ingest ${plan.ingestId} (${submitted.state}): ${plan.files.length} files, ${plan.rowsTotal} rows in ${plan.children.length} tasks${plan.skipped.length ? `, ${plan.skipped.length} files skipped` : ''}\n`);
        const overlapText = describeOverlaps(plan.keyOverlaps);
        if (overlapText !== undefined) process.stderr.write(`${overlapText}\n`);
      }
      if (!opts.localWorker && !opts.wait) {
        ctx.print(opts.json ? JSON.stringify({ id: plan.ingestId, state: submitted.state, traceId: operation.traceId }) : plan.ingestId);
        return;
      }
      if (client !== undefined) {
        ctx.lifecycle.add('ingest workers', IngestWorkers.start({ connection, client, concurrency, lockDurationMs, logger: ctx.logger }), (w) => w.close());
      }
      const view = await ProgressView.open(process.stderr, ctx.logger, { what: 'ingest' });
      const report = await watchIngest(connection, plan, { onProgress: (p) => view.show(ingestSnapshot(p)), signal }).finally(() => view.done());
      printReport(ctx, report, opts.json ?? false, operation.traceId);
      // Over --max-rejects the ingest as a whole has failed; otherwise failures are per file.
      if (report.failures.some((f) => f.code === 'INGEST_TOO_MANY_REJECTS')) process.exitCode = EXIT.failed;
      else if (report.filesFailed > 0 || report.rowsRejected > 0) process.exitCode = EXIT.incomplete;
    });
}

/**
 * The local worker's placement of keys, from the cluster's map: the children are queued so that the
 * files running at once write to different nodes (see spreadOverNodes). Without the map (the nodes
 * not answering within 2 s) the children go in plan order, and the worker meets the nodes as before.
 */
async function childPlacement(client: StoreClient, concurrency: number, ctx: CliContext): Promise<ChildPlacement | undefined> {
  let map;
  try {
    map = await client.map({ timeoutMs: 2000 });
  } catch (err) {
    ctx.logger.debug({ err }, 'no partition map before submitting: children queued in plan order');
    return undefined;
  }
  const partitions = map.partitions;
  return {
    concurrency,
    nodesOf: (keyMin, keyMax) => [...new Set(partitions.filter((p) => Buffer.compare(p.start, keyMax) <= 0 && (p.end.length === 0 || Buffer.compare(p.end, keyMin) > 0)).map((p) => p.node))],
  };
}

function printReport(ctx: CliContext, report: IngestReport, json: boolean, traceId: string): void {
  if (json) {
    const { id, rowsIngested, rowsRejected, filesOk, filesFailed, rejectsPath, durationMs, rowsPerSecond } = report;
    ctx.print(
      JSON.stringify({ id, traceId, rowsIngested, rowsRejected, filesOk, filesFailed, rejectsPath, durationMs, rowsPerSecond, rowsOutOfOrder: report.rowsOutOfOrder, keyOverlaps: report.keyOverlaps, failures: report.failures, files: report.files ?? [] }),
    );
    return;
  }
  ctx.print(
    formatTable(
      ['ingest', 'rows ingested', 'rejected', 'out of order', 'files ok', 'files failed', 'seconds', 'rows/s'],
      [[report.id, String(report.rowsIngested), String(report.rowsRejected), String(report.rowsOutOfOrder), String(report.filesOk), String(report.filesFailed), (report.durationMs / 1000).toFixed(1), String(report.rowsPerSecond)]],
    ),
  );
  const overlapText = report.keyOverlaps === undefined ? undefined : describeOverlaps(report.keyOverlaps);
  if (overlapText !== undefined) ctx.print(overlapText);
  for (const f of report.files ?? []) {
    if (f.state === 'failed') ctx.print(`failed: ${f.file}: ${f.reason}${f.rowsIngested > 0 ? ` (${f.rowsIngested} rows ingested before it failed)` : ''}`);
  }
  if (report.rowsRejected > 0) ctx.print(`rejected rows: ${report.rejectsPath}`);
}

/** One line on files overlapping in key range; undefined when none do (and all had statistics). */
function describeOverlaps(o: KeyOverlaps): string | undefined {
  const unknown = o.filesWithoutKeyRange > 0 ? `${o.filesWithoutKeyRange} files have no key statistics (overlap unknown)` : '';
  if (o.filesOverlapping === 0) return unknown || undefined;
  const listed = o.overlaps.slice(0, 5).map((e) => `${e.file} ↔ ${e.overlapsWith.slice(0, 3).join(', ')}${e.overlapsWith.length > 3 ? ', …' : ''}`).join('; ');
  const more = o.filesOverlapping > 5 ? '; …' : '';
  return `key ranges overlap: ${o.filesOverlapping} files, ${o.overlappingPairs} pairs (${listed}${more})${unknown ? `; ${unknown}` : ''}`;
}
