import { join } from 'node:path';
import { DEFAULT_MAX_MOVEMENTS, EtcdOperationStore, Key, PartitionStore, StoreError, newOperationId, type BulkRowInput, type OperationArgs, type OperationRecord, type StoreClient } from '../../store/index.js';
import type { EtcdTestCluster } from './etcd-cluster.js';

/** `rows` bulk rows whose keys (2-byte prefix + index) all fall below 0x8000: partition 0 of an even 2-partition map. */
export function lowRows(rows: number): BulkRowInput[] {
  return Array.from({ length: rows }, (_, i) => {
    const key = Buffer.alloc(6);
    key.writeUInt16BE(Math.floor((i * 0x8000) / rows));
    key.writeUInt32BE(i, 2);
    return { key, value: Buffer.from(`row-${i}`) };
  });
}

/** Writes an operation record as `cluster split/merge` would, and returns its id. */
export async function submit(cluster: EtcdTestCluster, args: OperationArgs, maxPauseMs = 2000): Promise<string> {
  const ops = new EtcdOperationStore(cluster.etcdClient, cluster.etcd.url);
  const now = Date.now();
  const record: OperationRecord = { id: newOperationId(now), args, state: 'pending', createdAtMs: now, updatedAtMs: now, requestedBy: 'test', limits: { maxMovements: DEFAULT_MAX_MOVEMENTS, maxPauseMs }, steps: [], pauses: [] };
  if (!(await ops.create(record))) throw new Error('operation id taken');
  return record.id;
}

/** Resolves with the record once `test` holds for it (watching operations; re-reading on each change). */
export async function waitForOperation(cluster: EtcdTestCluster, id: string, test: (r: OperationRecord) => boolean, timeoutMs = 60_000): Promise<OperationRecord> {
  const ops = new EtcdOperationStore(cluster.etcdClient, cluster.etcd.url);
  const { revision } = await ops.list();
  let wake: () => void = () => undefined;
  const watcher = await ops.watch(revision, () => wake());
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const r = (await ops.get(id))?.record;
      if (r !== undefined && test(r)) return r;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`operation ${id} did not reach the state asked for within ${timeoutMs} ms: ${JSON.stringify(r)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    await watcher.cancel();
  }
}

/** Keys the writer uses: spread over [0x0000, 0x8000), both sides of a split at 0x4000. */
export function writerKeys(count: number): Buffer[] {
  return Array.from({ length: count }, (_, k) => {
    const key = Buffer.alloc(7);
    key.writeUInt16BE(Math.floor((k * 0x8000) / count));
    key.write('w', 2);
    key.writeUInt32BE(k, 3);
    return key;
  });
}

/**
 * A steady writer of puts and compare-and-sets, each key written by one worker in turn: the last
 * acknowledged value of a key is what it must read afterwards. A key whose last write failed (its
 * outcome unknown) is left out of the check.
 */
export class SteadyWriter {
  readonly acked = new Map<string, string>();
  readonly unknown = new Set<string>();
  writes = 0;
  errors: string[] = [];
  private stopped = false;
  private running: Promise<void>[] = [];

  constructor(
    private readonly client: StoreClient,
    private readonly keys: Buffer[],
    private readonly workers = 4,
  ) {}

  start(): this {
    this.running = Array.from({ length: this.workers }, (_, w) => this.work(w));
    return this;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  /** Resolves once `n` more writes are acknowledged. */
  async more(n: number): Promise<void> {
    const target = this.writes + n;
    while (this.writes < target && !this.stopped) await new Promise((resolve) => setImmediate(resolve));
  }

  private async work(w: number): Promise<void> {
    const mine = this.keys.filter((_, i) => i % this.workers === w);
    for (let round = 0; !this.stopped; round++) {
      const key = mine[round % mine.length]!;
      const id = key.toString('hex');
      const value = `v-${w}-${round}`;
      try {
        if (round % 2 === 0) {
          await this.client.put(Key.fromBytes(key), Buffer.from(value));
        } else {
          const current = await this.client.get(Key.fromBytes(key));
          await this.client.put(Key.fromBytes(key), Buffer.from(value), { expectedEtag: current?.etag ?? 0 });
        }
        this.acked.set(id, value);
        this.unknown.delete(id);
        this.writes++;
      } catch (err) {
        // Closed under a running writer (a test that failed before its stop): a loop failing only
        // in microtasks would starve the event loop, and the run would hang instead of failing.
        if (err instanceof StoreError && err.code === 'STORE_CLOSED') return;
        this.unknown.add(id);
        this.errors.push(err instanceof StoreError ? `${err.code}: ${err.message}` : String(err));
      }
    }
  }
}

/** Count and digest (etags included) of the rows of `[start, end)` in a node's LevelDB of partition `id`, read from its folder. */
export async function folderDigest(nodeDir: string, id: number, start = Buffer.alloc(0), end = Buffer.alloc(0)): Promise<{ count: number; digest: string }> {
  const store = await PartitionStore.open(join(nodeDir, `partition-${id}`), { sweepIntervalMs: 0 });
  try {
    const d = await store.checksum(start, end, { includeEtag: true });
    return { count: d.count, digest: d.toHex() };
  } finally {
    await store.close();
  }
}
