import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import type { ConnectionOptions } from 'bullmq';
import { isAzureUrl } from '../common/index.js';
import { IngestError, assertFileNotEmpty, readFileFooter, scanAzureDrop, scanDrop, type DropFile, type FileCheckpoint } from '../ingest/index.js';
import { ProgressTracker, type ChildProgress, type ChildSnapshot, type GroupSize, type IngestProgress } from './ingest-progress.js';
import { spreadOverNodes, type ChildKeyRange, type ChildPlacement } from './child-order.js';
import { addFanOut } from './fan-out-flow.js';
import { childState, watchFlow, type WatchFlowOptions } from './flow-watch.js';
import { jobFailureOf, type JobFailure } from './job-failure.js';
import { fileKeyRange, findKeyOverlaps, type FileKeyRange, type KeyOverlaps } from './key-overlaps.js';

/** Queue of parent ingest jobs (one per drop). */
export const INGEST_QUEUE = 'shardpipe-ingest';
/** Queue of child jobs (one per file or row-group range). */
export const INGEST_FILE_QUEUE = 'shardpipe-ingest-file';

/** What an ingest of a drop is asked to do. Carried by the parent and every child. */
export interface IngestSpec {
  /** A local folder or file (absolute), or an Azure Blob drop `az://CONTAINER/PREFIX`. */
  source: string;
  /**
   * Where an `az://` drop is staged (`<cacheDir>/<container>/<blob>`); required for one. Workers
   * read the staged copies, so they must see this folder.
   */
  cacheDir?: string;
  keyColumn: string;
  valueColumn?: string;
  /**
   * Folder for rejects: each ingest's children write into its subfolder `<ingestId>/`, and the parent
   * joins those into `<ingestId>.ndjson` when it completes (see `rejectsFileOf`).
   */
  rejectsDir: string;
  /** Fail the ingest once more rows than this are rejected; absent = unlimited. */
  maxRejects?: number;
  strictOrder: boolean;
  /** Per child; 0 = unlimited. */
  maxRowsPerSecond: number;
}

export interface IngestParentData {
  ingestId: string;
  spec: IngestSpec;
  files: number;
  rowsTotal: number;
  submittedAt: number;
  /** From the plan; the report passes it on. */
  keyOverlaps?: KeyOverlaps;
}

export interface IngestFileData {
  ingestId: string;
  spec: IngestSpec;
  file: DropFile;
  rowGroupStart: number;
  rowGroupEnd: number;
  rowsTotal: number;
  /** Bytes on disk of the child's row groups, from the footer: the total of its byte progress. */
  bytesTotal?: number;
  /** Rows and bytes of each of the child's row groups, from rowGroupStart on: for byte progress at a checkpoint. */
  groupSizes?: GroupSize[];
  rejectsPath: string;
  /** Written by the worker after every acknowledged stretch; a retry continues from it. */
  checkpoint?: FileCheckpoint;
  /** Set when the file's footer could not be read while planning: the child fails with it. */
  plannedFailure?: JobFailure;
}

/** What a file child returns. */
export interface IngestFileResult extends FileCheckpoint {
  file: string;
  rowGroupStart: number;
  rowGroupEnd: number;
  durationMs: number;
}

/** One child (a file, or a row-group range of one) in the ingest report. */
export interface IngestFileReport {
  file: string;
  rowGroupStart: number;
  /** Exclusive. */
  rowGroupEnd: number;
  state: 'ok' | 'failed';
  /** Rows durably written, up to the last checkpoint for a failed child. */
  rowsIngested: number;
  rowsRejected: number;
  rowsOutOfOrder: number;
  bytesIngested: number;
  /** The failure's code (failed children). */
  code?: string;
  /** Why it failed: `CODE: message`. */
  reason?: string;
}

/** The parent's result: the ingest report. */
export interface IngestReport {
  id: string;
  source: string;
  rowsIngested: number;
  rowsRejected: number;
  rowsOutOfOrder: number;
  /** Files whose key ranges overlap, from the footers' statistics (rowsOutOfOrder counts disorder inside files). */
  keyOverlaps: KeyOverlaps;
  filesOk: number;
  filesFailed: number;
  /** Failed children: the failure's code, and `CODE: message` for people. */
  failures: Array<{ file: string; code: string; reason: string }>;
  /** Every child in plan order, failed ones with what they wrote before failing. Totals above are their sums. */
  files: IngestFileReport[];
  rejectsPath: string;
  bytesIngested: number;
  durationMs: number;
  rowsPerSecond: number;
}

export interface IngestPlan {
  ingestId: string;
  files: DropFile[];
  skipped: Array<{ path: string; reason: string }>;
  children: IngestFileData[];
  rowsTotal: number;
  /** Bytes on disk of every planned row group. */
  bytesTotal: number;
  /** Files that overlap in key range, by their footers' key statistics. */
  keyOverlaps: KeyOverlaps;
}

export interface SubmitOptions {
  /** Start over even when an ingest of the same drop exists. Default false. */
  restart?: boolean;
  /** Refuse a folder without `_SUCCESS`. Default true. */
  requireSuccess?: boolean;
  /** Accept a drop without data files (an empty ingest) instead of refusing it with INGEST_EMPTY_DROP. Default false. */
  allowEmpty?: boolean;
  /** Split files into children of about this many rows (whole row groups). Default 2,000,000. */
  rowsPerTask?: number;
  /** Retries of a child after a retryable failure. Default 5. */
  attempts?: number;
  /** Connection string for an `az://` source. Used while planning only: never stored in the jobs. */
  azureConnectionString?: string;
  /** Stops the scan (and the staging of an `az://` drop). */
  signal?: AbortSignal;
  /** W3C `traceparent` of the operation's span: every job's span is its child (see TracedJobData). */
  traceparent?: string;
  /**
   * Where the rows land and how many children run at once: the children are then queued so that
   * those running together write to different nodes (spreadOverNodes). Their ids, rejects files and
   * the report keep the plan order. Absent (or resolving to undefined): queued in plan order. A
   * promise is awaited once the drop is planned, so finding it can overlap the scan.
   */
  placement?: ChildPlacement | Promise<ChildPlacement | undefined>;
}

export interface Submitted {
  plan: IngestPlan;
  /** 'new': flow created; 'resumed': an unfinished ingest of this drop goes on; 'finished': it already completed. */
  state: 'new' | 'resumed' | 'finished';
}

/**
 * Plans an ingest from the files' footers only (row counts per row group) and creates the BullMQ
 * flow: a parent job and one child per file or row-group range. The ingest id is derived from the
 * drop's files and the mapping, so submitting the same drop again finds the running ingest.
 */
export async function submitIngest(connection: ConnectionOptions, spec: IngestSpec, options: SubmitOptions = {}): Promise<Submitted> {
  const { plan, keyRanges } = await planIngest(spec, options);
  const placement = await options.placement;
  const queued = placement === undefined ? plan.children.map((_, i) => i) : spreadOverNodes(keyRanges, placement);
  const state = await addFanOut(
    connection,
    {
      parent: {
        name: 'ingest-drop',
        queue: INGEST_QUEUE,
        id: plan.ingestId,
        data: { ingestId: plan.ingestId, spec, files: plan.files.length, rowsTotal: plan.rowsTotal, submittedAt: Date.now(), keyOverlaps: plan.keyOverlaps } satisfies IngestParentData,
      },
      children: { name: 'ingest-file', queue: INGEST_FILE_QUEUE, attempts: options.attempts, jobs: queued.map((i) => ({ id: childJobId(plan.ingestId, i), data: plan.children[i]! })) },
      traceparent: options.traceparent,
    },
    { resume: true },
  );
  return { plan, state };
}

export interface WatchOptions extends WatchFlowOptions {
  onProgress?: (progress: IngestProgress) => void;
}

/** Follows an ingest until its parent job completes and resolves its report (see watchFlow). */
export async function watchIngest(connection: ConnectionOptions, plan: IngestPlan, options: WatchOptions = {}): Promise<IngestReport> {
  const { onProgress } = options;
  const tracker = new ProgressTracker({ rowsTotal: plan.rowsTotal, bytesTotal: plan.bytesTotal, files: plan.children.length });
  const names = childNames(plan);
  const ids = plan.children.map((_, i) => childJobId(plan.ingestId, i));
  return await watchFlow<IngestParentData, IngestReport, IngestFileData>(
    connection,
    {
      kind: 'ingest',
      parentQueue: INGEST_QUEUE,
      childQueue: INGEST_FILE_QUEUE,
      parentId: plan.ingestId,
      childIds: () => ids,
      onChildren:
        onProgress &&
        ((jobs) => {
          const snapshots: ChildSnapshot[] = jobs.map((job, i) => {
            const child = plan.children[i]!;
            const progress = job !== undefined && typeof job.progress === 'object' && job.progress !== null ? (job.progress as Partial<ChildProgress>) : undefined;
            return { index: i, name: names[i]!, rowsTotal: child.rowsTotal, bytesTotal: child.bytesTotal ?? 0, progress, state: childState(job) };
          });
          onProgress(tracker.update(snapshots, performance.now()));
        }),
    },
    options,
  );
}

/** Each child's file, with its row groups when the file is split over several children. */
function childNames(plan: IngestPlan): string[] {
  const perFile = new Map<string, number>();
  for (const c of plan.children) perFile.set(c.file.relativePath, (perFile.get(c.file.relativePath) ?? 0) + 1);
  return plan.children.map((c) => (perFile.get(c.file.relativePath)! > 1 ? `${c.file.relativePath} [row groups ${c.rowGroupStart}–${c.rowGroupEnd - 1}]` : c.file.relativePath));
}

export function childJobId(ingestId: string, index: number): string {
  return `${ingestId}-f${index}`;
}

/** The plan, and each child's key range (for the queue order). */
async function planIngest(spec: IngestSpec, options: SubmitOptions): Promise<{ plan: IngestPlan; keyRanges: ChildKeyRange[] }> {
  const rowsPerTask = options.rowsPerTask ?? 2_000_000;
  const requireSuccess = options.requireSuccess ?? true;
  const azure = isAzureUrl(spec.source);
  if (azure && spec.cacheDir === undefined) throw new TypeError(`spec.cacheDir is required for an az:// source (${spec.source})`);
  const scan = azure
    ? await scanAzureDrop(spec.source, { connectionString: options.azureConnectionString, cacheDir: spec.cacheDir!, requireSuccess, signal: options.signal })
    : await scanDrop(spec.source, { requireSuccess, signal: options.signal });
  if (scan.files.length === 0 && !(options.allowEmpty ?? false)) {
    const skipped = scan.skipped.length > 0 ? ` (${scan.skipped.length} other file(s) skipped: ${scan.skipped.slice(0, 3).map((f) => `${f.path}: ${f.reason}`).join('; ')})` : '';
    throw new IngestError('INGEST_EMPTY_DROP', `drop ${spec.source} has no data files${skipped}: nothing to ingest. Check the path (the writer may have written elsewhere), or pass --allow-empty (allowEmpty: true) if an empty drop is expected`, {
      context: { source: spec.source },
    });
  }
  const identity = createHash('sha256')
    .update(JSON.stringify([azure ? spec.source : resolve(spec.source), spec.keyColumn, spec.valueColumn ?? null, scan.files.map((f) => f.fingerprint)]))
    .digest('hex')
    .slice(0, 16);
  const ingestId = options.restart ? `ingest-${identity}-${Date.now().toString(36)}` : `ingest-${identity}`;
  const rejectsFolder = rejectsPartsDirOf(spec, ingestId);
  const children: IngestFileData[] = [];
  const keyRanges: ChildKeyRange[] = [];
  let rowsTotal = 0;
  let bytesTotal = 0;
  const ranges: FileKeyRange[] = [];
  for (const file of scan.files) {
    let footer;
    try {
      assertFileNotEmpty(file);
      footer = await readFileFooter(file, spec.keyColumn);
    } catch (err) {
      // One unreadable file must not stop the drop: its child fails and the report names it.
      if (!(err instanceof IngestError)) throw err;
      children.push({ ingestId, spec, file, rowGroupStart: 0, rowGroupEnd: 0, rowsTotal: 0, rejectsPath: rejectsPathOf(rejectsFolder, children.length), plannedFailure: jobFailureOf(err) });
      keyRanges.push({});
      continue;
    }
    rowsTotal += footer.rows;
    if (footer.rows > 0) ranges.push(fileKeyRange(file.relativePath, footer.rowGroups));
    const groups = footer.rowGroups.length === 0 ? [{ rows: 0, bytes: 0 }] : footer.rowGroups;
    let start = 0;
    while (start < groups.length) {
      let end = start;
      let rows = 0;
      while (end < groups.length && (end === start || rows + groups[end]!.rows <= rowsPerTask)) rows += groups[end++]!.rows;
      const index = children.length;
      const groupSizes = footer.rowGroups.slice(start, end).map((g) => ({ rows: g.rows, bytes: g.bytes }));
      const bytes = groupSizes.reduce((sum, g) => sum + g.bytes, 0);
      bytesTotal += bytes;
      children.push({
        ingestId,
        spec,
        file,
        rowGroupStart: start,
        rowGroupEnd: footer.rowGroups.length === 0 ? 0 : end,
        rowsTotal: rows,
        bytesTotal: bytes,
        groupSizes,
        rejectsPath: rejectsPathOf(rejectsFolder, index),
      });
      keyRanges.push(fileKeyRange(file.relativePath, footer.rowGroups.slice(start, end)));
      start = end;
    }
  }
  return { plan: { ingestId, files: scan.files, skipped: scan.skipped, children, rowsTotal, bytesTotal, keyOverlaps: findKeyOverlaps(ranges) }, keyRanges };
}

/** Where the children of an ingest write their rejects, one NDJSON file each. */
export function rejectsPartsDirOf(spec: IngestSpec, ingestId: string): string {
  return resolve(spec.rejectsDir, ingestId);
}

/** The one rejects file of an ingest: the children's files joined by the parent (its report's `rejectsPath`). */
export function rejectsFileOf(spec: IngestSpec, ingestId: string): string {
  return resolve(spec.rejectsDir, `${ingestId}.ndjson`);
}

function rejectsPathOf(folder: string, childIndex: number): string {
  return resolve(folder, `${String(childIndex).padStart(5, '0')}.ndjson`);
}
