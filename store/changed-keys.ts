import { SCAN_ENTRY_OVERHEAD_BYTES, type ChainPosition, type PartitionSnapshot, type PartitionStore } from './partition-store.js';
import type { ChangedKeysBatch, Entry } from './proto/gen/shardpipe/store/v1/store.js';

/** Keys per ChangedKeys batch when the request names none. */
export const DEFAULT_CHANGED_KEYS_BATCH = 1000;

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
  request: { after: ChainPosition; keys: readonly Buffer[]; batchSize: number; maxBytes: number },
  signal?: AbortSignal,
): AsyncGenerator<ChangedKeysBatch> {
  const batchSize = request.batchSize > 0 ? request.batchSize : DEFAULT_CHANGED_KEYS_BATCH;
  let keys: Buffer[];
  let logEntries = 0;
  if (request.keys.length > 0) {
    keys = [...request.keys];
  } else {
    const changes = await store.changesSince(request.after, snapshot);
    if (!changes.covered) {
      yield { covered: false, reason: changes.reason, entries: [], absent: [], changedKeys: 0, logEntries: 0, last: true };
      return;
    }
    keys = changes.keys;
    logEntries = changes.entries;
  }
  // Sorted, so the replica's bulk insert of them takes its sorted path.
  keys.sort(Buffer.compare);
  let first = true;
  let entries: Entry[] = [];
  let absent: Buffer[] = [];
  let bytes = 0;
  const message = (last: boolean): ChangedKeysBatch => {
    const out: ChangedKeysBatch = { covered: true, reason: '', entries, absent, changedKeys: first ? keys.length : 0, logEntries: first ? logEntries : 0, last };
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
  yield message(true);
}
