import { SCAN_ENTRY_OVERHEAD_BYTES, type ChainPosition, type PartitionSnapshot, type PartitionStore } from './partition-store.js';
import type { ChangedKeysBatch, Entry } from './proto/gen/shardpipe/store/v1/store.js';
import type { KeyRange } from './change-log.js';
import { successor } from './key.js';

/** Keys per ChangedKeys batch when the request names none. */
export const DEFAULT_CHANGED_KEYS_BATCH = 1000;

/** What a ChangedKeys call asks for: the changes after `after`, or the rows of `keys`; batches of `batchSize` keys (0 = default) and at most `maxBytes`. */
export interface ChangedKeysRequestOptions {
  after: ChainPosition;
  keys: readonly Buffer[];
  batchSize: number;
  maxBytes: number;
}

/**
 * The messages of one ChangedKeys call (node to node, for a fast sync), read from one held
 * snapshot: with `keys`, the snapshot's rows of exactly those keys; otherwise the keys its change
 * log holds as changed after `after` up to the snapshot's position, sorted, each with its row or
 * as absent. The first message says whether the log covers `after`; when it does not, it is the
 * only one.
 */
export async function* changedKeyBatches(
  store: PartitionStore,
  snapshot: PartitionSnapshot,
  request: ChangedKeysRequestOptions,
  signal?: AbortSignal,
): AsyncGenerator<ChangedKeysBatch> {
  const batchSize = request.batchSize > 0 ? request.batchSize : DEFAULT_CHANGED_KEYS_BATCH;
  let keys: Buffer[];
  let ranges: KeyRange[] = [];
  let logEntries = 0;
  if (request.keys.length > 0) {
    keys = [...request.keys];
  } else {
    const changes = await store.changesSince(request.after, snapshot);
    if (!changes.covered) {
      yield { covered: false, reason: changes.reason, entries: [], absent: [], changedKeys: 0, logEntries: 0, last: true, rangeStart: EMPTY, rangeEnd: EMPTY };
      return;
    }
    keys = changes.keys;
    ranges = mergeRanges(changes.ranges);
    logEntries = changes.entries;
  }
  // Sorted, so the replica's bulk insert of them takes its sorted path.
  keys.sort(Buffer.compare);
  let first = true;
  let entries: Entry[] = [];
  let absent: Buffer[] = [];
  let bytes = 0;
  const message = (last: boolean, range?: { start: Buffer; end: Buffer }): ChangedKeysBatch => {
    const out: ChangedKeysBatch = {
      covered: true,
      reason: '',
      entries,
      absent,
      changedKeys: first ? keys.length + ranges.length : 0,
      logEntries: first ? logEntries : 0,
      last,
      rangeStart: range?.start ?? EMPTY,
      rangeEnd: range?.end ?? EMPTY,
    };
    first = false;
    entries = [];
    absent = [];
    bytes = 0;
    return out;
  };
  for (let at = 0; at < keys.length; at += batchSize) {
    signal?.throwIfAborted();
    const slice = keys.slice(at, at + batchSize);
    const records = await store.snapshotRecords(slice, snapshot);
    for (let i = 0; i < slice.length; i++) {
      const r = records[i];
      // One message stays within the node's scan batch bound (a larger row comes alone).
      const size = slice[i]!.length + (r?.value.length ?? 0) + SCAN_ENTRY_OVERHEAD_BYTES;
      if (bytes > 0 && bytes + size > request.maxBytes) yield message(false);
      if (r === undefined) absent.push(slice[i]!);
      else entries.push({ key: slice[i]!, value: r.value, etag: r.etag, updatedAtMs: r.updatedAtMs, expiresAtMs: r.expiresAtMs });
      bytes += size;
    }
    if (entries.length + absent.length >= batchSize) yield message(false);
  }
  if (ranges.length === 0) {
    yield message(true);
    return;
  }
  if (entries.length + absent.length > 0) yield message(false);
  // Each range as consecutive pieces that tile it exactly, each with every snapshot row in it.
  for (let r = 0; r < ranges.length; r++) {
    const end = successor(ranges[r]!.last);
    let start = ranges[r]!.first;
    const scan = store.scan(start, end, { snapshot, batchSize, batchMaxBytes: request.maxBytes, signal });
    let pending: Entry[] | undefined;
    for await (const batch of scan) {
      if (pending !== undefined) {
        const pieceEnd = successor(pending[pending.length - 1]!.key);
        entries = pending;
        yield message(false, { start, end: pieceEnd });
        start = pieceEnd;
      }
      pending = batch.map((e) => ({ key: e.key, value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs }));
    }
    entries = pending ?? [];
    yield message(r === ranges.length - 1, { start, end });
  }
}

/** Ranges sorted by first key, overlapping or touching ones merged. */
function mergeRanges(ranges: readonly KeyRange[]): KeyRange[] {
  const sorted = [...ranges].sort((a, b) => Buffer.compare(a.first, b.first));
  const out: KeyRange[] = [];
  for (const r of sorted) {
    const top = out[out.length - 1];
    if (top !== undefined && Buffer.compare(r.first, top.last) <= 0) {
      if (Buffer.compare(r.last, top.last) > 0) top.last = r.last;
    } else {
      out.push({ first: r.first, last: r.last });
    }
  }
  return out;
}

const EMPTY = Buffer.alloc(0);
