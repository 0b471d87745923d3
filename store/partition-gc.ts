import { open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../common/index.js';

/** Default grace before a partition's folder that left this node is deleted: 10 min (`store start --gc-grace`). */
export const DEFAULT_GC_GRACE_MS = 10 * 60_000;

/** One partition whose chain no longer holds this node: its folder waits for `deleteAtMs`. */
export interface GcPendingPartition {
  partition: number;
  /** When the map that dropped it was installed here (Unix ms; persisted, so a restart keeps the clock). */
  leftAtMs: number;
  /** `leftAtMs` + the node's grace: the folder is deleted at or soon after it. */
  deleteAtMs: number;
  /** Bytes of the partition's folder on disk when it left. */
  bytes: number;
}

/** What the node has deleted since it started, and what it holds for GC now. */
export interface GcFigures {
  graceMs: number;
  pendingPartitions: number;
  pendingBytes: number;
  /** Age of the oldest pending entry, ms (0 when none). */
  oldestPendingMs: number;
  deletedPartitions: number;
  deletedBytes: number;
}

/** Options of a node's partition GC. Times in milliseconds. */
export interface PartitionGcOptions {
  /** The node's data folder: the ledger (`gc-pending.json`) and the `partition-ID` folders live there. Required. */
  dataDir: string;
  /** How long a partition that left stays on disk, untouched. Default DEFAULT_GC_GRACE_MS (10 min). */
  graceMs?: number;
  /** Whether the node's current map assigns the partition here: such a folder is never deleted. Required. */
  isAssigned: (partition: number) => boolean;
  /** Runs a deletion exclusively with the node's map changes (so no map can bring the partition back mid-delete). Required. */
  runExclusive: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Called after the pending list changed (for the node's report in etcd). */
  onChange?: () => void;
  /** Clock. Default Date.now. */
  now?: () => number;
  /** Fault injection for tests only: deletes a folder (default: fs.rm, recursive). */
  faultInjectionRemoveFolder?: (path: string) => Promise<void>;
  logger?: Logger;
}

const LEDGER_FILE = 'gc-pending.json';
const FOLDER = /^partition-(\d+)$/;
/** A deletion that failed is tried again after this (or the grace, if shorter). */
const RETRY_MS = 60_000;

/** The folder of a partition's LevelDB in a node's data folder. */
export function partitionFolder(dataDir: string, partition: number): string {
  return join(dataDir, `partition-${partition}`);
}

/**
 * Object GC of one store node (README "Object GC"). A partition the node held and a newly
 * installed map no longer gives it (moved away, drained, fewer replicas, merged away) is recorded
 * as left — id, time, bytes — in a ledger in the data folder, and its folder stays untouched
 * (readable for repair) until the grace has passed; then it is deleted, unless the partition came
 * back meanwhile (its data is reused and the entry dropped). Only the node's own map changes
 * create entries: a folder the node cannot explain (one that no installed map moved away) is
 * logged and never deleted.
 */
export class PartitionGc {
  readonly graceMs: number;
  private readonly dataDir: string;
  private readonly isAssigned: (partition: number) => boolean;
  private readonly runExclusive: PartitionGcOptions['runExclusive'];
  private readonly onChange: (() => void) | undefined;
  private readonly now: () => number;
  private readonly removeFolder: (path: string) => Promise<void>;
  private readonly logger: Logger | undefined;
  private readonly entries = new Map<number, { leftAtMs: number; bytes: number }>();
  private timer: NodeJS.Timeout | undefined;
  private retryAtMs = 0;
  private sweeping: Promise<void> | undefined;
  private closed = false;
  private deletedPartitions = 0;
  private deletedBytes = 0;

  private constructor(options: PartitionGcOptions) {
    const graceMs = options.graceMs ?? DEFAULT_GC_GRACE_MS;
    if (!Number.isSafeInteger(graceMs) || graceMs < 0) throw new RangeError(`gcGraceMs must be a whole number of milliseconds ≥ 0, got ${graceMs}`);
    this.graceMs = graceMs;
    this.dataDir = options.dataDir;
    this.isAssigned = options.isAssigned;
    this.runExclusive = options.runExclusive;
    this.onChange = options.onChange;
    this.now = options.now ?? Date.now;
    this.removeFolder = options.faultInjectionRemoveFolder ?? ((path) => rm(path, { recursive: true, force: true }));
    this.logger = options.logger?.child({ module: 'partition-gc' });
  }

  /** Reads the ledger of the data folder (none: nothing pending). An unreadable ledger is logged and left: its folders then count as unexplained and are kept. */
  static async open(options: PartitionGcOptions): Promise<PartitionGc> {
    const gc = new PartitionGc(options);
    const path = join(options.dataDir, LEDGER_FILE);
    let text: string | undefined;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      const entries = parseLedger(text);
      if (entries === undefined) gc.logger?.error({ file: path }, 'the GC ledger is unreadable: no partition folder is deleted until it is fixed or removed (its folders are kept as unexplained)');
      for (const e of entries ?? []) gc.entries.set(e.partition, { leftAtMs: e.leftAtMs, bytes: e.bytes });
    }
    return gc;
  }

  /** The partitions waiting for GC, oldest first. */
  pending(): GcPendingPartition[] {
    return [...this.entries]
      .map(([partition, e]) => ({ partition, leftAtMs: e.leftAtMs, deleteAtMs: e.leftAtMs + this.graceMs, bytes: e.bytes }))
      .sort((a, b) => a.leftAtMs - b.leftAtMs || a.partition - b.partition);
  }

  figures(): GcFigures {
    let pendingBytes = 0;
    let oldest = Infinity;
    for (const e of this.entries.values()) {
      pendingBytes += e.bytes;
      oldest = Math.min(oldest, e.leftAtMs);
    }
    return {
      graceMs: this.graceMs,
      pendingPartitions: this.entries.size,
      pendingBytes,
      oldestPendingMs: oldest === Infinity ? 0 : Math.max(0, this.now() - oldest),
      deletedPartitions: this.deletedPartitions,
      deletedBytes: this.deletedBytes,
    };
  }

  /**
   * Records partitions an installed map took away from this node, before that map is persisted:
   * a crash in between leaves an entry for a partition the persisted map still assigns, which
   * `reconcile` drops, never a folder nobody accounts for. A partition already pending keeps its clock.
   */
  async left(partitions: readonly number[]): Promise<void> {
    const fresh = partitions.filter((p) => !this.entries.has(p));
    if (fresh.length === 0) return;
    const leftAtMs = this.now();
    for (const partition of fresh) {
      const bytes = await folderBytes(partitionFolder(this.dataDir, partition));
      this.entries.set(partition, { leftAtMs, bytes });
      this.logger?.info({ partition, bytes, deleteAtMs: leftAtMs + this.graceMs, graceMs: this.graceMs }, 'partition left this node: its data is kept untouched until the GC grace has passed');
    }
    await this.persist();
    this.schedule();
    this.onChange?.();
  }

  /**
   * Drops the entries of partitions the current map assigns here again (they came back before
   * the grace: their folder is reused, and a returning syncing replica's sync starts from it).
   */
  async reconcile(): Promise<void> {
    const back = [...this.entries.keys()].filter((p) => this.isAssigned(p));
    if (back.length === 0) return;
    for (const partition of back) {
      this.entries.delete(partition);
      this.logger?.info({ partition }, 'partition came back to this node before its GC: its data is kept and reused');
    }
    await this.persist();
    this.schedule();
    this.onChange?.();
  }

  /**
   * Drops the entry of a partition whose folder is about to be replaced (a split making a new
   * partition under an id this node left earlier): that folder is then no longer the left data.
   */
  async forget(partition: number): Promise<void> {
    if (!this.entries.delete(partition)) return;
    this.logger?.info({ partition }, 'a split reuses the id of a partition waiting for GC here: its old folder is replaced, not deleted by GC');
    await this.persist();
    this.schedule();
    this.onChange?.();
  }

  /**
   * At start: logs every `partition-ID` folder that neither the current map assigns here nor the
   * ledger accounts for. Such a folder is left alone (a map lost by mistake must not delete data).
   */
  async logUnexplainedFolders(): Promise<number[]> {
    let names: string[];
    try {
      names = await readdir(this.dataDir);
    } catch (err) {
      this.logger?.warn({ err: (err as Error).message, dataDir: this.dataDir }, 'could not list the data folder for unexplained partition folders');
      return [];
    }
    const unexplained: number[] = [];
    for (const name of names) {
      const m = FOLDER.exec(name);
      if (m === null) continue;
      const partition = Number(m[1]);
      if (this.isAssigned(partition) || this.entries.has(partition)) continue;
      unexplained.push(partition);
    }
    unexplained.sort((a, b) => a - b);
    for (const partition of unexplained) {
      this.logger?.warn({ partition, folder: partitionFolder(this.dataDir, partition) }, 'a partition folder that no installed map of this node moved away: leaving it on disk (GC deletes only partitions a newer map took from this node); remove it by hand once it is not needed');
    }
    return unexplained;
  }

  /** Starts deleting due entries (a timer at the next `deleteAtMs`). */
  start(): void {
    this.schedule();
  }

  /** Deletes every entry whose grace has passed now (what the timer runs). Resolves when done. */
  sweep(): Promise<void> {
    this.sweeping ??= this.runExclusive(() => this.sweepDue()).finally(() => {
      this.sweeping = undefined;
      this.schedule();
    });
    return this.sweeping;
  }

  /** Stops the timer and waits for a running deletion. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.sweeping?.catch(() => undefined);
  }

  private async sweepDue(): Promise<void> {
    if (this.closed) return;
    const now = this.now();
    let changed = false;
    for (const { partition, deleteAtMs } of this.pending()) {
      if (deleteAtMs > now) continue;
      if (this.isAssigned(partition)) {
        // Checked again under the map-change lock: an assigned folder is never deleted.
        this.entries.delete(partition);
        changed = true;
        continue;
      }
      const folder = partitionFolder(this.dataDir, partition);
      const bytes = await folderBytes(folder);
      try {
        await this.removeFolder(folder);
      } catch (err) {
        this.retryAtMs = now + Math.min(RETRY_MS, Math.max(1000, this.graceMs));
        this.logger?.error({ err: (err as Error).message, partition, folder }, 'deleting a partition folder after its GC grace failed; trying again later');
        continue;
      }
      this.entries.delete(partition);
      changed = true;
      this.deletedPartitions++;
      this.deletedBytes += bytes;
      this.logger?.info({ partition, bytes, leftAtMs: deleteAtMs - this.graceMs }, 'GC deleted the data of a partition that left this node');
    }
    if (changed) {
      await this.persist();
      this.onChange?.();
    }
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.closed || this.entries.size === 0) return;
    const next = Math.max(Math.min(...this.pending().map((e) => e.deleteAtMs)), this.retryAtMs);
    // setTimeout holds at most ~24.8 days; a later deadline is looked at again then.
    const delay = Math.min(Math.max(0, next - this.now()), 2 ** 31 - 1);
    this.timer = setTimeout(() => {
      this.sweep().catch((err: unknown) => this.logger?.error({ err }, 'partition GC failed'));
    }, delay);
    this.timer.unref();
  }

  private async persist(): Promise<void> {
    const path = join(this.dataDir, LEDGER_FILE);
    const tmp = `${path}.tmp`;
    const body = { version: 1, left: [...this.entries].map(([partition, e]) => ({ partition, leftAtMs: e.leftAtMs, bytes: e.bytes })) };
    const file = await open(tmp, 'w');
    try {
      await file.writeFile(JSON.stringify(body, null, 2));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
  }
}

function parseLedger(text: string): Array<{ partition: number; leftAtMs: number; bytes: number }> | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const left = (json as { left?: unknown } | null)?.left;
  if (!Array.isArray(left)) return undefined;
  const entries: Array<{ partition: number; leftAtMs: number; bytes: number }> = [];
  for (const e of left as Array<Record<string, unknown>>) {
    const { partition, leftAtMs, bytes } = e ?? {};
    if (!isWhole(partition) || !isWhole(leftAtMs) || !isWhole(bytes)) return undefined;
    entries.push({ partition, leftAtMs, bytes });
  }
  return entries;
}

function isWhole(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Bytes of the files under `path` (0 when it does not exist). */
export async function folderBytes(path: string): Promise<number> {
  let entries;
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  let total = 0;
  for (const entry of entries) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) total += await folderBytes(child);
    else if (entry.isFile()) total += (await stat(child).catch(() => ({ size: 0 }))).size;
  }
  return total;
}
