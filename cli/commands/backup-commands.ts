import type { Command } from 'commander';
import { parseDurationMs } from '../../common/index.js';
import type { BackupReport, BackupSpec } from '../../jobs/index.js';
import { atLeastOne, keepOf, scheduleNameOf, sharedRedis, specOf, targetOptionsOf, withTarget, type PlanOptions, type TargetOptions } from '../backup-flags.js';
import { CliUsageError } from '../cli-env.js';
import { EXIT, formatTable } from '../cli-io.js';
import type { CliContext } from '../cli-context.js';
import { SEEDS_HELP, withLocalWorkerOptions } from '../common-options.js';
import { dataDirOf, openJobRedis } from '../job-redis.js';
import { operationSpan } from '../operation-span.js';

interface RunOptions extends TargetOptions, PlanOptions {
  seeds?: string;
  redis?: string;
  wait?: boolean;
  keep?: string;
  localWorker: boolean;
  concurrency: string;
  lockDuration: string;
}

interface ScheduleOptions extends TargetOptions, PlanOptions {
  redis?: string;
  cron?: string;
  tz?: string;
  keep: string;
  name?: string;
  incompleteGrace: string;
}

const TARGET_HELP = 'backup target: file:///DIR, a folder path, or az://CONTAINER/PREFIX (credentials: AZURE_STORAGE_CONNECTION_STRING; env SHARDPIPE_BACKUP_TARGET); default file://DATA_DIR/backups';
const DATA_DIR_HELP = 'data folder for the private Redis and the default target (env SHARDPIPE_DATA_DIR; default .shardpipe)';

export function registerBackupCommands(program: Command, ctx: CliContext): void {
  const backup = program.command('backup').description('consistent Parquet backups of the whole store to a folder or Azure Blob: run, list, show, verify, delete, schedule');

  /** A `backup` subcommand that works on one target: with `--target` and `--data-dir`. */
  const targetCommand = (nameAndArgs: string, description: string): Command =>
    backup.command(nameAndArgs).description(description).option('--target <url>', TARGET_HELP).option('--data-dir <dir>', DATA_DIR_HELP);

  const withPlanOptions = (cmd: Command): Command =>
    cmd
      .option('--shard-rows <n>', 'cut the backup into shards of about this many entries (default 1000000)')
      .option('--shard-bytes <n>', 'cut the backup into shards of about this many logical bytes instead')
      .option('--metrics-url <url>', 'plan shards with this metrics server, GET /api/shards (env SHARDPIPE_METRICS_URL); default: plan in-process from the nodes')
      .option('--lease <duration>', 'snapshot lease; every working shard job renews it, so it only has to outlast a stall', '10m')
      .option('--row-group-rows <n>', 'rows per Parquet row group, 1–65536 (default 65536)');

  withLocalWorkerOptions(
    withPlanOptions(
      backup
        .command('run')
        .description('back up every partition from one snapshot per partition into Parquet shards and write the manifest last; exit 0 complete, 1 failed (no manifest)')
        .option('--target <url>', TARGET_HELP)
        .option('--seeds <list>', SEEDS_HELP)
        .option('--redis <url>', 'Redis for the job queues (env SHARDPIPE_REDIS_URL); default: a private redis-server in the data folder')
        .option('--data-dir <dir>', DATA_DIR_HELP),
    )
      .option('--keep <n>', 'after a complete backup, keep only the newest N complete backups in the target (retention)')
      .option('--wait', 'wait for the end, with progress, and print the report (implied by the local worker)')
      .option('--json', 'print the report as one JSON object'),
    'shards the local worker writes at once',
  )
    .action(async (opts: RunOptions) => {
      // Loaded by the command that runs them: `--help` and other commands start without them.
      const [{ BackupWorkers, submitBackup, watchBackup }, { StoreClient }, { ProgressView, backupSnapshot }] = await Promise.all([import('../../jobs/index.js'), import('../../store/index.js'), import('../progress-view.js')]);
      const spec: BackupSpec = { ...(await specOf(ctx, opts)), keep: opts.keep === undefined ? undefined : keepOf(opts.keep) };
      const seeds = ctx.seeds(opts.seeds);
      const lockDurationMs = parseDurationMs(opts.lockDuration);
      const signal = ctx.lifecycle.start();
      const operation = operationSpan(ctx, 'shardpipe backup run');
      const client = ctx.lifecycle.add('store client', new StoreClient({ seeds, logger: ctx.logger, credentials: ctx.storeCredentials() }), (c) => c.close());
      const connection = await openJobRedis(ctx, opts.redis ?? ctx.env.SHARDPIPE_REDIS_URL, dataDirOf(ctx, opts.dataDir));
      if (opts.localWorker) {
        // Started before the backup is submitted: its encoder threads load (their modules and
        // parquet-wasm, up to 1.5 s on a busy machine) while this thread plans and takes the snapshots.
        const concurrency = atLeastOne(opts.concurrency, '--concurrency');
        ctx.lifecycle.add('backup workers', BackupWorkers.start({ connection, client, targetOptions: targetOptionsOf(ctx), concurrency, lockDurationMs, logger: ctx.logger, prestartEncoders: true }), (w) => w.close());
      }
      const submitted = await submitBackup(connection, client, spec, { targetOptions: targetOptionsOf(ctx), metricsToken: ctx.token(), logger: ctx.logger, signal, traceparent: operation.traceparent });
      operation.setAttribute('shardpipe.backup_id', submitted.backupId);
      if (!opts.json) process.stderr.write(`backup ${submitted.backupId}: ${submitted.shards.length} shards, about ${submitted.approxRows} rows, snapshots of map version ${submitted.mapVersion} → ${spec.target}\n`);
      if (!opts.localWorker && !opts.wait) {
        ctx.print(opts.json ? JSON.stringify({ backupId: submitted.backupId, traceId: operation.traceId, shards: submitted.shards.length, target: spec.target }) : submitted.backupId);
        return;
      }
      const view = await ProgressView.open(process.stderr, ctx.logger, { what: 'backup' });
      const report = await watchBackup(connection, submitted.backupId, { onProgress: (p) => view.show(backupSnapshot(p)), signal }).finally(() => view.done());
      printRunReport(ctx, report, opts.json ?? false, operation.traceId);
    });

  targetCommand('list', 'list the backups in a target: complete (restorable), incomplete (no manifest) or unreadable')
    .option('--json', 'print one JSON object')
    .action(async (opts: TargetOptions) => {
      const { listBackups } = await import('../../backup/index.js');
      await withTarget(ctx, opts, async (target) => {
        const backups = await listBackups(target);
        if (opts.json) {
          ctx.print(JSON.stringify({ target: target.url, backups: backups.map(({ manifest: _m, ...b }) => b) }));
          return;
        }
        ctx.print(
          formatTable(
            ['backup', 'state', 'started', 'rows', 'shards', 'bytes'],
            backups.map((b) => [b.id, b.state, b.startedAt, b.rows === undefined ? '-' : String(b.rows), b.shards === undefined ? '-' : String(b.shards), String(b.bytes)]),
          ),
        );
      });
    });

  targetCommand('show <backupId>', "print a complete backup's manifest summary (--json: the manifest itself)")
    .option('--json', 'print the manifest as JSON')
    .action(async (backupId: string, opts: TargetOptions) => {
      const { readManifest } = await import('../../backup/index.js');
      await withTarget(ctx, opts, async (target) => {
        const m = await readManifest(target, backupId);
        if (opts.json) {
          ctx.print(JSON.stringify(m));
          return;
        }
        ctx.print(`backup ${m.backupId} in ${target.url}\nstarted ${m.startedAt}, snapshots from ${m.snapshotAt}, finished ${m.finishedAt}, map version ${m.mapVersion}`);
        ctx.print(`${m.totals.rows} rows, ${m.totals.bytes} bytes in ${m.shards.length} shards from ${m.partitions.length} partitions\n`);
        ctx.print(formatTable(['shard', 'start', 'end', 'rows', 'bytes', 'checksum'], m.shards.map((s) => [s.file, s.start || '-∞', s.end || '+∞', String(s.rows), String(s.bytes), s.checksum.slice(0, 16)])));
      });
    });

  targetCommand('verify <backupId>', 're-read every shard file and check rows, bytes and checksum against the manifest, naming every bad file; exit 0 all good, 2 bad files, 1 unreadable manifest')
    .option('--json', 'print the report as one JSON object')
    .action(async (backupId: string, opts: TargetOptions) => {
      const { BackupError, verifyBackup } = await import('../../backup/index.js');
      await withTarget(ctx, opts, async (target) => {
        const report = await verifyBackup(target, backupId, {
          onShard: (shard, problems) => ctx.logger.debug({ shard: shard.index, problems: problems.length }, 'shard verified'),
        });
        if (opts.json) ctx.print(JSON.stringify(report));
        else {
          ctx.print(`backup ${report.backupId}: ${report.shardsOk}/${report.shards} shard files good, ${report.rowsChecked} rows and ${report.bytesChecked} bytes read in ${(report.durationMs / 1000).toFixed(1)} s`);
          for (const p of report.problems) ctx.print(`BAD shard ${p.shard} (${p.file}): ${p.problem}`);
        }
        if (!report.ok) {
          const err = new BackupError('BACKUP_VERIFY_FAILED', `backup ${backupId} failed verification: ${report.problems.length} problem(s) in ${report.shards - report.shardsOk} shard file(s)`);
          process.stderr.write(`shardpipe: ${err.message} [${err.code}]\n`);
          process.exitCode = EXIT.incomplete;
        }
      });
    });

  targetCommand('delete <backupId>', 'delete a backup (manifest first, so a cut-short delete never leaves a backup that looks complete)')
    .option('--json', 'print one JSON object')
    .action(async (backupId: string, opts: TargetOptions) => {
      const { BackupError } = await import('../../backup/index.js');
      await withTarget(ctx, opts, async (target) => {
        const files = await target.deleteBackup(backupId);
        if (files === 0) throw new BackupError('BACKUP_NOT_FOUND', `backup ${backupId} is not in ${target.url} (\`backup list\` shows the ones that are)`);
        ctx.print(opts.json ? JSON.stringify({ backupId, target: target.url, filesDeleted: files }) : `deleted backup ${backupId} (${files} files) from ${target.url}`);
      });
    });

  targetCommand('prune', 'apply retention now: keep the newest N complete backups, delete older ones and stale incomplete ones')
    .requiredOption('--keep <n>', 'complete backups to keep (≥ 1; the newest complete backup is never deleted)')
    .option('--incomplete-grace <duration>', 'delete an incomplete backup older than the newest complete one only after this long without writes', '6h')
    .option('--dry-run', 'only print what would be deleted')
    .option('--json', 'print one JSON object')
    .action(async (opts: TargetOptions & { keep: string; incompleteGrace: string; dryRun?: boolean }) => {
      const { applyRetention } = await import('../../backup/index.js');
      await withTarget(ctx, opts, async (target) => {
        const report = await applyRetention(target, { keep: keepOf(opts.keep), incompleteGraceMs: parseDurationMs(opts.incompleteGrace), dryRun: opts.dryRun });
        if (opts.json) ctx.print(JSON.stringify(report));
        else {
          for (const d of report.deleted) ctx.print(`${report.dryRun ? 'would delete' : 'deleted'} ${d.id} (${d.state}): ${d.reason}`);
          ctx.print(`kept ${report.kept.length} backup(s)`);
        }
      });
    });

  const schedule = withPlanOptions(
    targetCommand('schedule', 'register (or update, by name) a cron schedule that runs a backup then retention, executed by `shardpipe worker` processes; `schedule list` and `schedule remove NAME` manage them')
      .option('--redis <url>', 'the shared Redis the workers use (env SHARDPIPE_REDIS_URL); required'),
  )
    .option('--cron <pattern>', 'when to run, a cron pattern such as "0 2 * * *" (02:00 every day)')
    .option('--tz <zone>', 'time zone of the pattern, e.g. Europe/Berlin (default: UTC)')
    .option('--keep <n>', 'complete backups to keep after each run (≥ 1)', '7')
    .option('--incomplete-grace <duration>', 'retention deletes an incomplete backup only after this long without writes', '6h')
    .option('--name <name>', 'schedule name (default: derived from the target)')
    .option('--json', 'print one JSON object')
    .action(async (opts: ScheduleOptions) => {
      if (!opts.cron) throw new CliUsageError('backup schedule needs --cron "PATTERN" (or use `backup schedule list` / `backup schedule remove NAME`)');
      const { connectionFromUrl, upsertBackupSchedule } = await import('../../jobs/index.js');
      const spec: BackupSpec = { ...(await specOf(ctx, opts)), keep: keepOf(opts.keep), incompleteGraceMs: parseDurationMs(opts.incompleteGrace) };
      const name = opts.name ?? scheduleNameOf(spec.target);
      const registered = await upsertBackupSchedule(connectionFromUrl(sharedRedis(ctx, opts.redis)), { name, cron: opts.cron, tz: opts.tz, spec });
      ctx.print(
        opts.json
          ? JSON.stringify(registered)
          : `schedule ${registered.name}: "${registered.cron}"${registered.tz ? ` (${registered.tz})` : ''} → ${spec.target}, keep ${spec.keep}; next run ${registered.nextRunMs ? new Date(registered.nextRunMs).toISOString() : '?'} (needs a running \`shardpipe worker\`)`,
      );
    });

  schedule
    .command('list')
    .description('list the backup schedules in the shared Redis')
    .option('--redis <url>', 'the shared Redis (env SHARDPIPE_REDIS_URL); required')
    .option('--json', 'print one JSON object')
    .action(async (_opts: unknown, cmd: Command) => {
      // `schedule` has the same options: whichever level they were typed at, they count.
      const opts = cmd.optsWithGlobals<{ redis?: string; json?: boolean }>();
      const { connectionFromUrl, listBackupSchedules } = await import('../../jobs/index.js');
      const schedules = await listBackupSchedules(connectionFromUrl(sharedRedis(ctx, opts.redis)));
      if (opts.json) {
        ctx.print(JSON.stringify({ schedules }));
        return;
      }
      ctx.print(
        formatTable(
          ['name', 'cron', 'tz', 'target', 'keep', 'next run'],
          schedules.map((s) => [s.name, s.cron, s.tz ?? 'UTC', s.spec?.target ?? '?', String(s.spec?.keep ?? '-'), s.nextRunMs ? new Date(s.nextRunMs).toISOString() : '-']),
        ),
      );
    });

  schedule
    .command('remove <name>')
    .description('remove a backup schedule (backups already made stay)')
    .option('--redis <url>', 'the shared Redis (env SHARDPIPE_REDIS_URL); required')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals<{ redis?: string }>();
      const { connectionFromUrl, removeBackupSchedule } = await import('../../jobs/index.js');
      await removeBackupSchedule(connectionFromUrl(sharedRedis(ctx, opts.redis)), name);
      ctx.print(`removed schedule ${name}`);
    });
}

function printRunReport(ctx: CliContext, report: BackupReport, json: boolean, traceId: string): void {
  if (json) {
    ctx.print(JSON.stringify({ traceId, ...report }));
    return;
  }
  ctx.print(
    formatTable(
      ['backup', 'rows', 'bytes', 'shards', 'seconds', 'rows/s', 'MB/s'],
      [[report.backupId, String(report.rows), String(report.bytes), String(report.shards), (report.durationMs / 1000).toFixed(1), String(report.rowsPerSecond), (report.bytesPerSecond / 1e6).toFixed(1)]],
    ),
  );
  ctx.print(`target: ${report.target}`);
  if (report.retention && 'deleted' in report.retention) for (const d of report.retention.deleted) ctx.print(`retention deleted ${d.id} (${d.state}): ${d.reason}`);
  else if (report.retention) ctx.print(`retention failed: ${report.retention.error}`);
}
