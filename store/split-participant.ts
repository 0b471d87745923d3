import { open as openFile, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../common/index.js';
import type { BulkRowInput } from './bulk-row.js';
import type { Partition, PartitionMap } from './partition-map.js';
import type { PartitionStore, WriteTracker } from './partition-store.js';
import { StoreError } from './store-errors.js';

/** Options of a node's part in splits (store/README.md "Split and merge"). */
export interface SplitParticipantOptions {
  /** The node's data folder: partition `Q` lives in `partition-Q`, its split marker in `split-Q.json`. */
  dataDir: string;
  /** Opens (creating) the LevelDB of a partition id as the node opens its partitions. */
  open: (partitionId: number) => Promise<PartitionStore>;
  logger?: Logger;
}

/** What a prepared split of P at K into Q holds in memory: Q's store and P's tracker. */
interface PreparedSplit {
  operation: string;
  from: number;
  to: number;
  start: Buffer;
  end: Buffer;
  store: PartitionStore;
  source: PartitionStore;
  tracker: WriteTracker;
  rows: number;
}

/** A prepared merge of Q into P: Q's rows copied into P's LevelDB, Q's later writes tracked. */
interface PreparedMerge {
  operation: string;
  into: number;
  from: number;
  start: Buffer;
  end: Buffer;
  target: PartitionStore;
  source: PartitionStore;
  tracker: WriteTracker;
  rows: number;
}

/** `split-Q.json`: which split made Q's folder, and whether it is complete (safe to serve). */
interface SplitMarker {
  operation: string;
  from: number;
  to: number;
  start: string;
  end: string;
  state: 'prepared' | 'complete';
}

const COPY_BATCH_ROWS = 1000;
const TRACKED_BATCH_KEYS = 500;

/**
 * A node's part in splitting a partition P at K into P [start, K) and Q [K, end): it copies P's
 * rows of [K, end) from a snapshot into Q's own LevelDB while writes go on (`prepare`), tracking the
 * keys written there since; when the node installs the map that commits the split, it copies those
 * keys' current values (or their absence) before the node serves Q (`beforeInstall`). A node that
 * lost its tracker (restarted) copies the whole range from its own P instead: at the commit every
 * replica holds P at the same sequence number, and none takes a write of [K, end) before it has Q.
 */
export class SplitParticipant {
  private readonly dataDir: string;
  private readonly openStore: SplitParticipantOptions['open'];
  private readonly logger: Logger | undefined;
  /** By the new partition's id. */
  private readonly prepared = new Map<number, PreparedSplit>();
  private readonly preparing = new Map<number, { operation: string; done: Promise<number> }>();
  /** Merges prepared here, by the lower partition's id (the one that takes the other's range). */
  private readonly merges = new Map<number, PreparedMerge>();
  private readonly mergesPreparing = new Map<number, { operation: string; done: Promise<number> }>();
  /** Q's stores, complete, handed to the node when it opens Q. */
  private readonly ready = new Map<number, PartitionStore>();
  /**
   * Discarding a copy and finishing one run one at a time: a request removed (the coordinator is
   * done) can reach a node while it installs the committed map, and must not delete the folder
   * the install is making.
   */
  private serial: Promise<unknown> = Promise.resolve();

  constructor(options: SplitParticipantOptions) {
    this.dataDir = options.dataDir;
    this.openStore = options.open;
    this.logger = options.logger;
  }

  /**
   * Copies P's rows of `[at, P.end)` into a fresh LevelDB for `to` (any earlier folder of that id
   * is discarded: a half-prepared copy of a node that restarted) and tracks the keys written there
   * from the snapshot on. Idempotent per operation. Resolves with the rows copied.
   */
  prepare(request: { operation: string; partition: Partition; to: number; at: Buffer; source: PartitionStore }): Promise<number> {
    const { operation, partition, to, at } = request;
    const held = this.prepared.get(to);
    if (held !== undefined && held.operation === operation && held.start.equals(at)) return Promise.resolve(held.rows);
    const running = this.preparing.get(to);
    if (running !== undefined && running.operation === operation) return running.done;
    const done = (async () => {
      await running?.done.catch(() => undefined);
      await this.exclusive(() => this.discard(to));
      const log = this.logger?.child({ partition: partition.id, newPartition: to, operation });
      const startedAt = Date.now();
      const store = await this.openStore(to);
      let tracker: WriteTracker | undefined;
      try {
        await this.writeMarker({ operation, from: partition.id, to, start: at.toString('hex'), end: partition.end.toString('hex'), state: 'prepared' });
        const tracked = await request.source.openTrackedSnapshot(at, partition.end);
        tracker = tracked.tracker;
        let rows = 0;
        try {
          for await (const batch of request.source.scan(at, partition.end, { batchSize: COPY_BATCH_ROWS, snapshot: tracked.snapshot })) {
            await store.bulkInsert(batch.map(exactRow));
            rows += batch.length;
          }
        } finally {
          await tracked.snapshot.close();
        }
        this.prepared.set(to, { operation, from: partition.id, to, start: at, end: partition.end, store, source: request.source, tracker, rows });
        log?.info({ rows, ms: Date.now() - startedAt, trackedKeys: tracker.keys.size }, 'split prepared: copied the rows of the new partition from a snapshot; tracking the keys written since');
        return rows;
      } catch (err) {
        if (tracker !== undefined) request.source.stopTracking(tracker);
        await store.close().catch((e: unknown) => log?.warn({ err: e }, 'closing a failed split copy failed'));
        throw err;
      }
    })().finally(() => {
      if (this.preparing.get(to)?.done === done) this.preparing.delete(to);
    });
    this.preparing.set(to, { operation, done });
    return done;
  }

  /**
   * Copies the rows of `other` (P's upper neighbour, same chain) into P's LevelDB and tracks the
   * keys written to `other` from its snapshot on. P's LevelDB must hold nothing of `other`'s range
   * first (a split's leftovers are deleted before: `beforeCopy`); rows copied there stay invisible
   * (every read of P is clamped to P's range) until the merge commits. Idempotent per operation.
   */
  prepareMerge(request: { operation: string; into: Partition; target: PartitionStore; other: Partition; source: PartitionStore; beforeCopy: () => Promise<void> }): Promise<number> {
    const { operation, into, other } = request;
    const held = this.merges.get(into.id);
    if (held !== undefined && held.operation === operation && held.from === other.id) return Promise.resolve(held.rows);
    const running = this.mergesPreparing.get(into.id);
    if (running !== undefined && running.operation === operation) return running.done;
    const done = (async () => {
      await running?.done.catch(() => undefined);
      this.dropMerge(into.id);
      const startedAt = Date.now();
      await request.beforeCopy();
      const tracked = await request.source.openTrackedSnapshot(other.start, other.end);
      let rows = 0;
      try {
        for await (const batch of request.source.scan(other.start, other.end, { batchSize: COPY_BATCH_ROWS, snapshot: tracked.snapshot })) {
          await request.target.bulkInsert(batch.map(exactRow));
          rows += batch.length;
        }
      } catch (err) {
        request.source.stopTracking(tracked.tracker);
        throw err;
      } finally {
        await tracked.snapshot.close();
      }
      this.merges.set(into.id, { operation, into: into.id, from: other.id, start: other.start, end: other.end, target: request.target, source: request.source, tracker: tracked.tracker, rows });
      this.logger?.info({ partition: into.id, other: other.id, operation, rows, ms: Date.now() - startedAt }, 'merge prepared: copied the neighbour\'s rows into this partition\'s LevelDB; tracking the keys written to it since');
      return rows;
    })().finally(() => {
      if (this.mergesPreparing.get(into.id)?.done === done) this.mergesPreparing.delete(into.id);
    });
    this.mergesPreparing.set(into.id, { operation, done });
    return done;
  }

  /** Whether a merge into `partitionId` is prepared or being prepared: its LevelDB holds rows outside its range on purpose. */
  isMergeTarget(partitionId: number): boolean {
    return this.merges.has(partitionId) || this.mergesPreparing.has(partitionId);
  }

  /** Whether `to` is prepared (in memory) for `operation`. */
  isPrepared(to: number, operation: string): boolean {
    return this.prepared.get(to)?.operation === operation;
  }

  /**
   * Before the node persists and installs `next`: for every partition `next` gives this node that
   * `current` lacks and that a split of one of its partitions made (its range is the end of that
   * partition's), makes Q's LevelDB complete and marks it so (persisted before the map is).
   */
  async beforeInstall(current: PartitionMap, next: PartitionMap, node: string, storeOf: (id: number) => PartitionStore | undefined, clear: (id: number, start: Buffer, end: Buffer) => Promise<void>): Promise<void> {
    // Merges: P's range grew over Q's, and Q is gone.
    for (const p of next.replicasOf(node)) {
      const before = current.byId(p.id);
      if (before === undefined || before.end.equals(p.end)) continue;
      const q = current.replicasOf(node).find((c) => c.start.equals(before.end) && c.end.equals(p.end) && next.byId(c.id) === undefined);
      const target = storeOf(p.id);
      const source = q === undefined ? undefined : storeOf(q.id);
      if (q === undefined || target === undefined || source === undefined) continue;
      await this.finishMerge(p.id, q, target, source, clear);
    }
    for (const q of next.replicasOf(node)) {
      if (current.byId(q.id) !== undefined) continue;
      const p = current.replicasOf(node).find((c) => c.start.compare(q.start) < 0 && c.end.equals(q.end) && next.byId(c.id)?.end.equals(q.start) === true);
      const source = p === undefined ? undefined : storeOf(p.id);
      if (p === undefined || source === undefined) continue;
      await this.exclusive(() => this.finish(p, q, source));
    }
  }

  /** Q's complete store when a split here made it (the node opens it otherwise). */
  take(to: number): PartitionStore | undefined {
    const store = this.ready.get(to);
    this.ready.delete(to);
    return store;
  }

  /** Drops every prepared merge not named in `keep` (by the lower partition's id → operation). */
  forgetMergesExcept(keep: ReadonlyMap<number, string>): void {
    for (const [into, held] of [...this.merges]) {
      if (keep.get(into) === held.operation) continue;
      this.logger?.info({ partition: into, operation: held.operation }, 'merge no longer asked for: its copied rows are deleted in the background');
      this.dropMerge(into);
    }
  }

  /** Drops every prepared split not named in `keep` (by new partition id → operation). */
  async forgetExcept(keep: ReadonlyMap<number, string>): Promise<void> {
    for (const [to, held] of [...this.prepared]) {
      if (keep.get(to) === held.operation) continue;
      await this.exclusive(async () => {
        // Finished meanwhile (the install took it): nothing to drop.
        if (this.prepared.get(to) !== held) return;
        this.logger?.info({ newPartition: to, operation: held.operation }, 'split no longer asked for: dropping its prepared copy');
        await this.discard(to);
      });
    }
  }

  /** Closes prepared copies (their folders stay; a restart prepares again). Idempotent. */
  async close(): Promise<void> {
    for (const into of [...this.merges.keys()]) this.dropMerge(into);
    for (const held of this.prepared.values()) {
      held.source.stopTracking(held.tracker);
      await held.store.close().catch((err: unknown) => this.logger?.warn({ err }, 'closing a prepared split copy failed'));
    }
    this.prepared.clear();
    for (const store of this.ready.values()) await store.close().catch((err: unknown) => this.logger?.warn({ err }, 'closing a split copy failed'));
    this.ready.clear();
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.serial.then(fn);
    this.serial = run.catch(() => undefined);
    return run;
  }

  private dropMerge(into: number): void {
    const held = this.merges.get(into);
    if (held === undefined) return;
    this.merges.delete(into);
    held.source.stopTracking(held.tracker);
  }

  /**
   * At the install of a merge: Q's tracked keys are copied into P; without a tracker (restarted),
   * P's rows of Q's range are deleted and Q's whole range copied from Q's own LevelDB, which holds
   * Q at the cut. Q's LevelDB is left on disk (closed by the node: GC's to remove).
   */
  private async finishMerge(into: number, q: Partition, target: PartitionStore, source: PartitionStore, clear: (id: number, start: Buffer, end: Buffer) => Promise<void>): Promise<void> {
    const startedAt = Date.now();
    const held = this.merges.get(into);
    if (held !== undefined && held.from === q.id) {
      this.dropMerge(into);
      const keys = [...held.tracker.keys.values()];
      for (let i = 0; i < keys.length; i += TRACKED_BATCH_KEYS) await copyKeys(source, target, keys.slice(i, i + TRACKED_BATCH_KEYS));
      this.logger?.info({ partition: into, other: q.id, trackedKeys: keys.length, ms: Date.now() - startedAt }, 'merge committed: copied the keys written since the prepared copy');
      return;
    }
    await clear(into, q.start, q.end);
    let rows = 0;
    for await (const batch of source.scan(q.start, q.end, { batchSize: COPY_BATCH_ROWS })) {
      await target.bulkInsert(batch.map(exactRow));
      rows += batch.length;
    }
    this.logger?.warn({ partition: into, other: q.id, rows, ms: Date.now() - startedAt }, 'merge committed without a prepared copy here (restarted since): copied the whole range from the neighbour\'s own LevelDB');
  }

  private async finish(p: Partition, q: Partition, source: PartitionStore): Promise<void> {
    const log = this.logger?.child({ partition: p.id, newPartition: q.id });
    const startedAt = Date.now();
    const held = this.prepared.get(q.id);
    if (held !== undefined && held.from === p.id && held.start.equals(q.start) && held.end.equals(q.end)) {
      this.prepared.delete(q.id);
      source.stopTracking(held.tracker);
      const keys = [...held.tracker.keys.values()];
      for (let i = 0; i < keys.length; i += TRACKED_BATCH_KEYS) await copyKeys(source, held.store, keys.slice(i, i + TRACKED_BATCH_KEYS));
      await this.writeMarker({ operation: held.operation, from: p.id, to: q.id, start: q.start.toString('hex'), end: q.end.toString('hex'), state: 'complete' });
      this.ready.set(q.id, held.store);
      log?.info({ trackedKeys: keys.length, ms: Date.now() - startedAt }, 'split committed: copied the keys written since the prepared copy; serving the new partition');
      return;
    }
    const marker = await this.readMarker(q.id);
    if (marker?.state === 'complete' && marker.from === p.id && marker.start === q.start.toString('hex') && marker.end === q.end.toString('hex')) return;
    // No tracker (this node restarted since it prepared, or never prepared): copy the whole range.
    await this.discard(q.id);
    const store = await this.openStore(q.id);
    try {
      let rows = 0;
      for await (const batch of source.scan(q.start, q.end, { batchSize: COPY_BATCH_ROWS })) {
        await store.bulkInsert(batch.map(exactRow));
        rows += batch.length;
      }
      await this.writeMarker({ operation: marker?.operation ?? '', from: p.id, to: q.id, start: q.start.toString('hex'), end: q.end.toString('hex'), state: 'complete' });
      this.ready.set(q.id, store);
      log?.warn({ rows, ms: Date.now() - startedAt }, 'split committed without a prepared copy here (restarted since): copied the new partition\'s whole range from this node\'s own copy');
    } catch (err) {
      await store.close().catch((e: unknown) => log?.warn({ err: e }, 'closing a failed split copy failed'));
      throw err;
    }
  }

  /** Closes and deletes the folder and marker of `to` (a copy that is not, or no longer, wanted). */
  private async discard(to: number): Promise<void> {
    const held = this.prepared.get(to);
    if (held !== undefined) {
      this.prepared.delete(to);
      held.source.stopTracking(held.tracker);
      await held.store.close();
    }
    const ready = this.ready.get(to);
    if (ready !== undefined) {
      this.ready.delete(to);
      await ready.close();
    }
    await rm(join(this.dataDir, `partition-${to}`), { recursive: true, force: true });
    await rm(this.markerPath(to), { force: true });
  }

  private markerPath(to: number): string {
    return join(this.dataDir, `split-${to}.json`);
  }

  private async readMarker(to: number): Promise<SplitMarker | undefined> {
    try {
      return JSON.parse(await readFile(this.markerPath(to), 'utf8')) as SplitMarker;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new StoreError('STORE_INVALID_ARGUMENT', `the split marker ${this.markerPath(to)} is unreadable (${(err as Error).message}): delete it and the partition-${to} folder, then restart the node`, { cause: err });
    }
  }

  private async writeMarker(marker: SplitMarker): Promise<void> {
    const path = this.markerPath(marker.to);
    const tmp = `${path}.tmp`;
    const file = await openFile(tmp, 'w');
    try {
      await file.writeFile(JSON.stringify(marker));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
  }
}

/** A row as stored, metadata kept (etag, times, expiry): the copy is byte-for-byte the source's. */
function exactRow(e: { key: Buffer; value: Buffer; etag: number; updatedAtMs: number; expiresAtMs: number }): BulkRowInput {
  return { key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs };
}

/** Makes `keys` in `target` what they are in `source` now: the current record, or absent. */
async function copyKeys(source: PartitionStore, target: PartitionStore, keys: Buffer[]): Promise<void> {
  const records = await source.getMany(keys);
  const rows: BulkRowInput[] = [];
  const gone: Buffer[] = [];
  records.forEach((r, i) => (r === undefined ? gone.push(keys[i]!) : rows.push(exactRow({ key: keys[i]!, ...r }))));
  if (rows.length > 0) await target.bulkInsert(rows);
  if (gone.length > 0) await Promise.all(target.writeMany(gone.map((key) => ({ kind: 'delete' as const, key }))));
}
