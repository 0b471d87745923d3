import prettyBytes from 'pretty-bytes';
import { displayBytes, isFinalOperationState, type OperationArgs, type OperationRecord } from '../store/index.js';
import { formatTable } from './cli-io.js';
import { formatCount, formatEta } from './progress-view.js';

/** Where an operation is, from its record: what `cluster operations` and a waiting command show. */
export interface OperationProgress {
  /** Steps finished (done, skipped, rolled back or failed) and planned; 0 of 0 before the coordinator planned. */
  stepsDone: number;
  steps: number;
  /** The step in hand (the first running one), 1-based; undefined when none runs. */
  current?: { index: number; description: string; phase?: string };
  /** Sums over the steps that report them. */
  bytesDone: number;
  bytesTotal: number;
  rowsDone: number;
  rowsTotal: number;
  /** Copy rate of the running steps (bytes done since each started), bytes/s; 0 when nothing runs. */
  bytesPerSecond: number;
  /** Seconds until the running steps' bytes are copied at that rate; undefined without a rate or a total. */
  etaSeconds: number | undefined;
  /** Read/write pauses steps needed: how many, and the longest, ms. */
  pauses: number;
  maxPauseMs: number;
}

const FINISHED_STEP = new Set(['done', 'skipped', 'rolled-back', 'failed']);

/** The record's progress at `nowMs`. Pure. */
export function operationProgress(record: OperationRecord, nowMs = Date.now()): OperationProgress {
  let bytesDone = 0;
  let bytesTotal = 0;
  let rowsDone = 0;
  let rowsTotal = 0;
  let rate = 0;
  let bytesLeft = 0;
  let current: OperationProgress['current'];
  record.steps.forEach((step, i) => {
    bytesDone += step.bytesDone ?? 0;
    bytesTotal += step.bytesTotal ?? 0;
    rowsDone += step.rowsDone ?? 0;
    rowsTotal += step.rowsTotal ?? 0;
    if (step.state !== 'running') return;
    current ??= { index: i + 1, description: step.description, ...(step.phase ? { phase: step.phase } : {}) };
    if (step.startedAtMs !== undefined && step.bytesDone !== undefined && nowMs > step.startedAtMs) rate += step.bytesDone / ((nowMs - step.startedAtMs) / 1000);
    if (step.bytesTotal !== undefined) bytesLeft += Math.max(0, step.bytesTotal - (step.bytesDone ?? 0));
  });
  return {
    stepsDone: record.steps.filter((s) => FINISHED_STEP.has(s.state)).length,
    steps: record.steps.length,
    ...(current ? { current } : {}),
    bytesDone,
    bytesTotal,
    rowsDone,
    rowsTotal,
    bytesPerSecond: Math.round(rate),
    etaSeconds: rate > 0 && bytesLeft > 0 ? bytesLeft / rate : undefined,
    pauses: record.pauses.length,
    maxPauseMs: record.pauses.reduce((m, p) => Math.max(m, p.ms), 0),
  };
}

/** What the operation does, in a few words: "move partition 3 from A to B". */
export function operationSummary(args: OperationArgs): string {
  switch (args.kind) {
    case 'move':
      return `move partition ${args.partition} from ${args.from} to ${args.to}`;
    case 'drain-node':
      return `drain ${args.node}`;
    case 'set-replicas':
      return `set replicas to ${args.replicas}${args.partitions ? ` on partitions ${args.partitions.join(',')}` : ' on every partition'}`;
    case 'rebalance':
      return args.auto ? 'rebalance (started when a node registered)' : 'rebalance';
    case 'split':
      return `split partition ${args.partition} ${args.at !== undefined ? `at ${displayBytes(Buffer.from(args.at, 'hex'))}` : 'at its median (auto)'}`;
    case 'merge':
      return `merge partitions ${args.partitions[0]} and ${args.partitions[1]}`;
  }
}

/** The progress part of a line: "step 1/3 syncing  12.0 MB/50.0 MB  1.20k/5.00k rows  3.4 MB/s  ETA 11s  pauses 2 (max 40 ms)". */
function progressText(p: OperationProgress): string {
  const parts: string[] = [];
  if (p.steps > 0) parts.push(`step ${p.current?.index ?? p.stepsDone}/${p.steps}${p.current?.phase ? ` ${p.current.phase}` : ''}`);
  if (p.bytesTotal > 0) parts.push(`${prettyBytes(p.bytesDone)}/${prettyBytes(p.bytesTotal)}`);
  if (p.rowsTotal > 0) parts.push(`${formatCount(p.rowsDone)}/${formatCount(p.rowsTotal)} rows`);
  if (p.bytesPerSecond > 0) parts.push(`${prettyBytes(p.bytesPerSecond)}/s`);
  if (p.current !== undefined && p.bytesTotal > 0) parts.push(`ETA ${formatEta(p.etaSeconds)}`);
  if (p.pauses > 0) parts.push(`pauses ${p.pauses} (max ${p.maxPauseMs} ms)`);
  return parts.join('  ');
}

/** One line of a waiting command on a terminal. */
export function operationLine(record: OperationRecord, nowMs = Date.now()): string {
  const p = operationProgress(record, nowMs);
  const doing = p.current?.description ?? record.message ?? operationSummary(record.args);
  return [`${record.id} ${record.state}`, progressText(p), doing].filter((s) => s !== '').join('  ');
}

/** A record with its progress, as `--json` and the JSON progress lines carry it. */
export function operationJson(record: OperationRecord, nowMs = Date.now()): OperationRecord & { progress: OperationProgress } {
  return { ...record, progress: operationProgress(record, nowMs) };
}

/** One JSON progress line of a waiting command off a terminal (stderr). */
export function operationProgressEvent(record: OperationRecord, nowMs = Date.now()): Record<string, unknown> {
  const p = operationProgress(record, nowMs);
  return {
    event: 'operation-progress',
    operation: record.id,
    kind: record.args.kind,
    state: record.state,
    step: p.current?.index ?? p.stepsDone,
    steps: p.steps,
    ...(p.current ? { description: p.current.description, ...(p.current.phase ? { phase: p.current.phase } : {}) } : {}),
    bytesDone: p.bytesDone,
    bytesTotal: p.bytesTotal,
    rowsDone: p.rowsDone,
    rowsTotal: p.rowsTotal,
    bytesPerSecond: p.bytesPerSecond,
    ...(p.etaSeconds === undefined ? {} : { etaSeconds: Math.round(p.etaSeconds) }),
    pauses: p.pauses,
    maxPauseMs: p.maxPauseMs,
    ...(record.message ? { message: record.message } : {}),
    ...(record.error ? { error: record.error } : {}),
  };
}

/** `cluster operations`: one row per operation. */
export function operationsTable(records: readonly OperationRecord[], nowMs = Date.now()): string {
  return formatTable(
    ['id', 'state', 'operation', 'progress', 'age'],
    records.map((r) => [r.id, r.state, operationSummary(r.args), progressText(operationProgress(r, nowMs)) || (r.message ?? ''), formatEta((nowMs - r.createdAtMs) / 1000)]),
  );
}

/** `cluster operations OP`: the record in detail, every step and pause. */
export function operationDetail(record: OperationRecord, nowMs = Date.now()): string {
  const p = operationProgress(record, nowMs);
  const lines = [
    `${record.id}: ${operationSummary(record.args)}`,
    `state ${record.state}${record.requestedBy ? `, requested by ${record.requestedBy}` : ''}, submitted ${new Date(record.createdAtMs).toISOString()}${record.finishedAtMs ? `, finished ${new Date(record.finishedAtMs).toISOString()}` : ''}`,
    `limits: ${record.limits.maxBytesPerSecond === undefined ? 'unthrottled' : `${prettyBytes(record.limits.maxBytesPerSecond)}/s per movement`}, at most ${record.limits.maxMovements} movements at once, pauses at most ${record.limits.maxPauseMs} ms`,
  ];
  const progress = progressText(p);
  if (progress) lines.push(`progress: ${progress}`);
  if (record.message) lines.push(`latest: ${record.message}`);
  if (record.error) lines.push(`error: ${record.error}`);
  if (record.steps.length === 0) lines.push(isFinalOperationState(record.state) ? 'no steps' : 'no steps planned yet (the leading coordinator plans them)');
  else {
    lines.push(
      formatTable(
        ['#', 'state', 'phase', 'bytes', 'rows', 'step'],
        record.steps.map((s, i) => [
          String(i + 1),
          s.state,
          s.phase ?? '',
          s.bytesTotal !== undefined ? `${prettyBytes(s.bytesDone ?? 0)}/${prettyBytes(s.bytesTotal)}` : '',
          s.rowsTotal !== undefined ? `${formatCount(s.rowsDone ?? 0)}/${formatCount(s.rowsTotal)}` : '',
          `${s.description}${s.error ? ` (${s.error})` : ''}`,
        ]),
      ),
    );
  }
  if (record.pauses.length > 0) {
    lines.push(`pauses (${record.pauses.length}, longest ${p.maxPauseMs} ms):`);
    for (const pause of record.pauses) lines.push(`  partition ${pause.partition}: ${pause.ms} ms at ${new Date(pause.atMs).toISOString()} (${pause.reason})`);
  }
  return lines.join('\n');
}
