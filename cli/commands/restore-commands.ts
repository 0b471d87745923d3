import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { BackupManifest } from '../../backup/index.js';
import { parseDurationMs } from '../../common/index.js';
import type { RestoreReport } from '../../jobs/index.js';
import type { KeyRange, RestorePlan, VerifyReport } from '../../restore/index.js';
import type { PartitionMap } from '../../store/index.js';
import { targetUrlOf } from '../backup-flags.js';
import { CliUsageError } from '../cli-env.js';
import { EXIT, formatTable, parsePositiveInt } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { withLocalWorkerOptions } from '../common-options.js';
import { dataDirOf, openJobRedis } from '../job-redis.js';
import { operationSpan } from '../operation-span.js';

type RestoreApi = typeof import('../../restore/index.js');
type RangeText = typeof import('../store-io.js').rangeText;

interface RestoreOptions {
  target?: string;
  seeds?: string;
  redis?: string;
  dataDir?: string;
  dryRun?: boolean;
  verify?: boolean;
  wait?: boolean;
  json?: boolean;
  restart?: boolean;
  partitions?: string;
  range?: string[];
  localWorker: boolean;
  concurrency: string;
  lockDuration: string;
  maxRowsPerSecond: string;
}

export function registerRestoreCommands(program: Command, ctx: CliContext): void {
  withLocalWorkerOptions(
    program
      .command('restore <backupId>')
      .description(
        'load a complete backup (or with --partitions/--range only some key ranges of it) into the cluster of --seeds (any partitioning) through a BullMQ flow, one job per shard, resumable; ' +
          'exit 0 restored (and verified), 2 with failed shards or verify mismatches, 3 no complete backup with that id, 64 bad --partitions/--range, 1 on a fatal error',
      )
      .option('--target <url>', 'where the backup is, as for backup run: file:///DIR, a folder path, or az://CONTAINER/PREFIX (with AZURE_STORAGE_CONNECTION_STRING; env SHARDPIPE_BACKUP_TARGET); default file://DATA_DIR/backups')
      .option('--seeds <list>', 'store nodes of the cluster restored into, HOST:PORT[,...] (env SHARDPIPE_SEEDS)')
      .option('--redis <url>', 'Redis for the job queues (env SHARDPIPE_REDIS_URL); default: a private redis-server in the data folder')
      .option('--data-dir <dir>', 'data folder for the private Redis and staged az:// shards (env SHARDPIPE_DATA_DIR; default .shardpipe)')
      .option(
        '--partitions <ids>',
        'restore only the key ranges of these partitions of the CURRENT map of --seeds, ID[,ID...] (e.g. after replacing a failed node); other keys are left as they are',
      )
      .option(
        '--range <start:end>',
        'restore only keys in [START, END), hex, either side empty = open end (e.g. 4000:8000, c000:); repeatable, or comma-separated; combines with --partitions',
        (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
      )
      .option('--dry-run', 'print the plan (shards read, rows, bytes, the ranges restored, how they fall on the current partitions) and exit')
      .option('--verify', 'afterwards, compare every shard range (with a selection: every shard range ∩ selection) of the store (checksum with etags, and count) with the backup; implies --wait')
      .option('--wait', 'wait for the end, with progress, and print the report (implied by the local worker)')
      .option('--json', 'print the report (or with --dry-run the plan) as one JSON object')
      .option('--restart', 'start over instead of resuming an unfinished (or finished) restore of the same backup into the same cluster')
      .option('--max-rows-per-second <n>', 'throttle per shard (0 = unlimited)', '0'),
    'shards the local worker restores at once',
  )
    .action(async (backupId: string, opts: RestoreOptions) => {
      // As in ingest: the local worker's decoder thread starts first, so its start-up runs on the
      // other core while this thread loads the modules below, reads the manifest and submits.
      if (opts.localWorker && !opts.dryRun) (await import('../../files/index.js')).prestartParquetDecoders();
      // Loaded by the command that runs them: `--help` and other commands start without them.
      const [{ openBackupTarget }, { RestoreWorkers, submitRestore, watchRestore }, restoreApi, { StoreClient }, { ProgressView, restoreSnapshot }, { entriesInCluster, shardRowsAgain }, { rangeText }] = await Promise.all([
        import('../../backup/index.js'),
        import('../../jobs/index.js'),
        import('../../restore/index.js'),
        import('../../store/index.js'),
        import('../progress-view.js'),
        import('../restore-sources.js'),
        import('../store-io.js'),
      ]);
      const { RestoreError, planRestore, readRestoreManifest, verifyRestore } = restoreApi;
      const dataDir = dataDirOf(ctx, opts.dataDir);
      const targetUrl = targetUrlOf(ctx, opts);
      const seeds = ctx.seeds(opts.seeds);
      const lockDurationMs = parseDurationMs(opts.lockDuration);
      const concurrency = parsePositiveInt(opts.concurrency, '--concurrency');
      const azure = { connectionString: ctx.env.AZURE_STORAGE_CONNECTION_STRING };
      const stagingDir = resolve(dataDir, 'restore-staging');
      const signal = ctx.lifecycle.start();
      const target = ctx.lifecycle.add('backup target', openBackupTarget(targetUrl, { azure }), (t) => t.close());
      const client = ctx.lifecycle.add('store client', new StoreClient({ seeds, logger: ctx.logger, credentials: ctx.storeCredentials() }), (c) => c.close());
      let manifest: BackupManifest;
      try {
        manifest = await readRestoreManifest(target, backupId, { signal });
      } catch (err) {
        if (err instanceof RestoreError && (err.code === 'RESTORE_BACKUP_NOT_FOUND' || err.code === 'RESTORE_BACKUP_INCOMPLETE')) {
          process.stderr.write(`shardpipe: ${err.message} [${err.code}]\n`);
          process.exitCode = EXIT.notFound;
          return;
        }
        throw err;
      }
      const map = await client.refreshMap({ signal });
      const plan = planRestore(manifest, map, selectionOf(opts, map, restoreApi));
      const targetEntries = await entriesInCluster(client, plan.shards.flatMap((s) => s.targetPartitions));
      if (opts.dryRun) {
        if (opts.json) ctx.print(JSON.stringify({ ...plan, target: target.url, targetEntries }));
        else printPlan((line) => ctx.print(line), plan, target.url, targetEntries, rangeText);
        return;
      }
      if (!opts.json) printPlan((line) => process.stderr.write(line + '\n'), plan, target.url, targetEntries, rangeText);

      const connection = await openJobRedis(ctx, opts.redis ?? ctx.env.SHARDPIPE_REDIS_URL, dataDir);
      const spec = { backupId, target: target.url, maxRowsPerSecond: parsePositiveInt(opts.maxRowsPerSecond, '--max-rows-per-second'), ...(plan.selection ? { ranges: plan.selection } : {}) };
      const operation = operationSpan(ctx, 'shardpipe restore');
      const submitted = await submitRestore(connection, spec, manifest, map, { restart: opts.restart, traceparent: operation.traceparent });
      operation.setAttribute('shardpipe.restore_id', submitted.restoreId);
      ctx.logger.info({ restoreId: submitted.restoreId, state: submitted.state, shards: plan.shards.length, rows: plan.rows, selection: plan.selection }, 'restore submitted');
      if (!opts.json) process.stderr.write(`restore ${submitted.restoreId} (${submitted.state})\n`);
      if (!opts.localWorker && !opts.wait && !opts.verify) {
        ctx.print(opts.json ? JSON.stringify({ restoreId: submitted.restoreId, traceId: operation.traceId, state: submitted.state }) : submitted.restoreId);
        return;
      }
      if (opts.localWorker) {
        ctx.lifecycle.add('restore workers', RestoreWorkers.start({ connection, client, azure, stagingDir, concurrency, lockDurationMs, logger: ctx.logger }), (w) => w.close());
      }
      const view = await ProgressView.open(process.stderr, ctx.logger, { what: 'restore' });
      const report = await watchRestore(
        connection,
        { restoreId: submitted.restoreId, shards: plan.shards.length, rowsTotal: plan.rows, shardIndexes: plan.shards.map((s) => s.index) },
        { onProgress: (p) => view.show(restoreSnapshot(p)), signal },
      ).finally(() => view.done());
      let verification: VerifyReport | undefined;
      let verifyMs = 0;
      if (opts.verify) {
        const started = performance.now();
        if (!opts.json) process.stderr.write(`verifying ${plan.shards.reduce((n, s) => n + s.pieces.length, 0)} ranges of ${plan.shards.length} shards…\n`);
        verification = await verifyRestore(client, manifest.shards, {
          firstExpiresAtMs: new Map(report.shardResults.map((r) => [r.index, r.firstExpiresAtMs])),
          selection: plan.selection,
          readShard: (shard, signal) => shardRowsAgain(target, backupId, shard, stagingDir, signal),
          signal,
        });
        verifyMs = Math.round(performance.now() - started);
      }
      printReport(ctx, report, verification, verifyMs, opts.json ?? false, operation.traceId, rangeText);
      if (report.shardsFailed > 0 || (verification?.mismatches.length ?? 0) > 0) process.exitCode = EXIT.incomplete;
    });
}

/**
 * The key ranges of --partitions and --range (undefined = neither: a full restore). Bad values are
 * usage errors naming them.
 */
function selectionOf(opts: RestoreOptions, map: PartitionMap, { RestoreError, parseKeyRange, partitionRanges }: RestoreApi): KeyRange[] | undefined {
  if (opts.partitions === undefined && opts.range === undefined) return undefined;
  try {
    const ranges: KeyRange[] = [];
    if (opts.partitions !== undefined) {
      const ids = opts.partitions.split(',').map((t) => t.trim());
      for (const id of ids) {
        if (!/^\d+$/.test(id)) throw new CliUsageError(`--partitions: "${id}" is not a partition id; the target cluster's partitions are ${map.partitions.map((p) => p.id).join(', ')}`);
      }
      ranges.push(...partitionRanges(map, ids.map(Number)));
    }
    for (const value of opts.range ?? []) for (const text of value.split(',')) ranges.push(parseKeyRange(text));
    return ranges;
  } catch (err) {
    if (err instanceof RestoreError && err.code === 'RESTORE_INVALID_SELECTION') throw new CliUsageError(`${err.message} [${err.code}]`);
    throw err;
  }
}

function printPlan(out: (line: string) => void, plan: RestorePlan, target: string, targetEntries: number, rangeText: RangeText): void {
  const hex = (h: string): Buffer => Buffer.from(h, 'hex');
  const ranges = (rs: readonly KeyRange[]): string => rs.map((r) => rangeText(hex(r.start), hex(r.end))).join(' ');
  if (plan.selection) {
    out(`partial restore of ${ranges(plan.selection)}: keys outside are not written`);
    out(`restore plan: backup ${plan.backupId} in ${target}: reads ${plan.shards.length} of ${plan.shards.length + plan.shardsSkipped} shards (${plan.rows} rows, ${plan.bytes} bytes)`);
  } else out(`restore plan: backup ${plan.backupId} in ${target}: ${plan.shards.length} shards, ${plan.rows} rows, ${plan.bytes} bytes`);
  out(
    `  backed up from map version ${plan.sourceMapVersion} (${plan.sourcePartitions} partitions); restoring into map version ${plan.targetMapVersion} (${plan.targetPartitions} partitions)` +
      (plan.samePartitioning ? ', same boundaries' : ', different boundaries: writes are cut at the current ones'),
  );
  if (targetEntries > 0) {
    out(`  note: the partitions restored into already hold about ${targetEntries} entries; restored keys overwrite theirs, other keys stay (and --verify reports the ranges they are in)`);
  }
  const header = ['shard', 'range', 'rows', 'bytes', ...(plan.selection ? ['restored ranges'] : []), 'into partitions'];
  out(
    formatTable(
      header,
      plan.shards.map((s) => [String(s.index), rangeText(hex(s.start), hex(s.end)), String(s.rows), String(s.bytes), ...(plan.selection ? [ranges(s.pieces)] : []), s.targetPartitions.join(',')]),
    ),
  );
}

function printReport(ctx: CliContext, report: RestoreReport, verification: VerifyReport | undefined, verifyMs: number, json: boolean, traceId: string, rangeText: RangeText): void {
  const mismatches = verification?.mismatches ?? [];
  if (json) {
    ctx.print(
      JSON.stringify({
        traceId,
        backupId: report.backupId,
        rowsRestored: report.rowsRestored,
        shards: report.shards,
        verified: verification !== undefined && mismatches.length === 0,
        mismatches,
        durationMs: report.durationMs,
        rowsPerSecond: report.rowsPerSecond,
        restoreId: report.restoreId,
        rowsExpired: report.rowsExpired,
        rowsOutsideRange: report.rowsOutsideRange,
        ranges: report.ranges,
        bytesRestored: report.bytesRestored,
        shardsFailed: report.shardsFailed,
        failures: report.failures,
        verifyDurationMs: verification ? verifyMs : undefined,
      }),
    );
    return;
  }
  ctx.print(
    formatTable(
      ['restore', 'rows restored', 'expired (skipped)', ...(report.ranges ? ['outside selection (skipped)'] : []), 'shards ok', 'shards failed', 'verified', 'seconds', 'rows/s'],
      [[
        report.restoreId,
        String(report.rowsRestored),
        String(report.rowsExpired),
        ...(report.ranges ? [String(report.rowsOutsideRange)] : []),
        String(report.shardsOk),
        String(report.shardsFailed),
        verification === undefined ? 'not asked' : mismatches.length === 0 ? `yes (${verification.rangesChecked} ranges)` : `NO: ${mismatches.length} ranges differ`,
        (report.durationMs / 1000).toFixed(1),
        String(report.rowsPerSecond),
      ]],
    ),
  );
  for (const f of report.failures) ctx.print(`failed: shard ${f.shard} (${f.file}): ${f.reason}`);
  const hex = (h: string): Buffer => Buffer.from(h, 'hex');
  for (const m of mismatches) {
    ctx.print(
      `mismatch: shard ${m.shard} (${m.file}) range ${rangeText(hex(m.start), hex(m.end))}: expected ${m.expectedRows} rows digest ${m.expectedDigest}, store has ${m.actualRows} rows digest ${m.actualDigest}` +
        (m.reason ? ` (${m.reason})` : ''),
    );
  }
}
