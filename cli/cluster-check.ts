import { setTimeout as sleep } from 'node:timers/promises';
import { resync } from '../coordinator/index.js';
import { EtcdMapStore, StoreError, connectEtcd, parseEtcdUrl, type Partition, type StoreClient } from '../store/index.js';
import { EXIT, formatTable, parsePositiveInt } from './cli-io.js';
import { withClient } from './store-io.js';
import type { CliContext } from './cli-context.js';
import { etcdConnectionOf, type EtcdFlags } from './etcd-options.js';

/** How long one replica's digest of a partition may take. */
const REPLICA_DIGEST_TIMEOUT_MS = 60_000;
/** Pieces a diverging range is cut into per round of the search for the first difference. */
const SEARCH_PARTS = 16;
/** Rounds of that search (16² pieces at most): enough to name a small range without a full diff. */
const SEARCH_ROUNDS = 2;
/** Rounds of digests a partition gets for its serving replicas to report one chain position. */
const POSITION_ATTEMPTS = 30;
/** Pause between those rounds, ms (doubling up to 1 s). */
const POSITION_PAUSE_MS = 50;

/** One replica's answer in `cluster check`. */
interface ReplicaReport {
  node: string;
  count: number;
  digest: string;
  state: string;
  /** The head's write stream and sequence number the digest is exactly at. */
  stream: string;
  seq: number;
  error?: string;
}

/** One partition's verdict in `cluster check --json`. */
interface PartitionReport {
  id: number;
  epoch: number;
  replicas: ReplicaReport[];
  consistent: boolean;
  /** The chain sequence number every serving replica's digest is at; absent when they never reported one (writes kept coming). */
  seq?: number;
  /** Rounds of digests it took for the serving replicas to report one position. */
  attempts: number;
  /** Replicas whose digest differs from the reference (the digest most serving replicas hold; the head's on a tie). */
  diverging?: string[];
  /** The first key range (hex, end exclusive, "" = open) where a diverging replica differs. */
  firstDifference?: { start: string; end: string };
  /** Why the partition could not be judged. */
  error?: string;
}

/**
 * `cluster check`: every replica of every partition digests the partition (with etags) from one
 * snapshot, which reports the chain position (head's write stream and sequence number) it is at;
 * the serving replicas' digests are compared only once they are all at the same position, asked
 * again until they are (POSITION_ATTEMPTS rounds; a partition whose writes never pause enough is
 * reported as not checked, not as diverging). A partition whose serving replicas disagree names the
 * diverging ones and, by cutting the range with SplitKeys and comparing the pieces, the first key
 * range where they differ. Syncing replicas are shown but not judged (they are still copying).
 * Exit 0 only when every partition is consistent.
 */
export async function clusterCheck(ctx: CliContext, opts: { seeds?: string; json?: boolean }): Promise<void> {
  const reports = await withClient(ctx.seeds(opts.seeds), ctx, async (client) => {
    const map = await client.refreshMap();
    const out: PartitionReport[] = [];
    for (const p of map.partitions) out.push(await checkPartition(client, p));
    return out;
    // One Checksum digests a whole replica: a large partition on a busy node needs longer than the client's usual 10 s per call.
  }, REPLICA_DIGEST_TIMEOUT_MS);
  const consistent = reports.every((r) => r.consistent);
  if (opts.json) {
    ctx.print(JSON.stringify({ consistent, partitions: reports }));
  } else {
    ctx.print(
      formatTable(
        ['id', 'epoch', 'verdict', 'replicas (node state count digest)'],
        reports.map((r) => [
          String(r.id),
          String(r.epoch),
          r.consistent ? `consistent at seq ${r.seq ?? 0}` : r.error !== undefined ? r.error : `DIVERGES${r.diverging?.length ? `: ${r.diverging.join(', ')}` : ''}${r.firstDifference ? ` first in [${r.firstDifference.start}, ${r.firstDifference.end})` : ''}`,
          r.replicas.map((x) => (x.error ? `${x.node} ${x.state} error: ${x.error}` : `${x.node} ${x.state} ${x.count} ${x.digest.slice(0, 12)}`)).join(' | '),
        ]),
      ),
    );
    ctx.print(consistent ? `all ${reports.length} partitions consistent` : `${reports.filter((r) => !r.consistent).length} of ${reports.length} partitions inconsistent: shardpipe cluster repair P --replica NODE --etcd URL resyncs a replica`);
  }
  if (!consistent) process.exitCode = EXIT.failed;
}

async function checkPartition(client: StoreClient, p: Partition): Promise<PartitionReport> {
  let replicas: ReplicaReport[] = [];
  let serving: ReplicaReport[] = [];
  let attempts = 0;
  let atOne = false;
  for (let pauseMs = POSITION_PAUSE_MS; attempts < POSITION_ATTEMPTS; pauseMs = Math.min(1000, pauseMs * 2)) {
    if (attempts > 0) await sleep(pauseMs);
    attempts++;
    replicas = await digests(client, p, p.start, p.end);
    serving = replicas.filter((r) => r.state === 'serving');
    atOne = serving.every((r) => r.error === undefined && r.stream === serving[0]!.stream && r.seq === serving[0]!.seq);
    if (atOne || replicas.some((r) => r.error !== undefined)) break;
  }
  const failed = replicas.filter((r) => r.error !== undefined);
  if (!atOne && failed.length === 0) {
    const where = serving.map((r) => `${r.node} at ${r.seq}`).join(', ');
    return { id: p.id, epoch: p.epoch, replicas, consistent: false, attempts, error: `not checked: its serving replicas were never at one sequence number in ${attempts} rounds (${where}); writes keep coming — run the check again in a quieter moment` };
  }
  const reference = referenceDigest(p, serving);
  const diverging = serving.filter((r) => r.error === undefined && r.digest !== reference).map((r) => r.node);
  const report: PartitionReport = { id: p.id, epoch: p.epoch, replicas, consistent: failed.length === 0 && diverging.length === 0, attempts, ...(atOne ? { seq: serving[0]?.seq ?? 0 } : {}) };
  if (diverging.length > 0) {
    report.diverging = diverging;
    const good = serving.find((r) => r.error === undefined && r.digest === reference)!.node;
    report.firstDifference = await firstDifference(client, p, good, diverging[0]!);
  }
  return report;
}

/** The digest most serving replicas agree on; the head's when that is a tie. */
function referenceDigest(p: Partition, serving: readonly ReplicaReport[]): string | undefined {
  const votes = new Map<string, number>();
  for (const r of serving) if (r.error === undefined) votes.set(r.digest, (votes.get(r.digest) ?? 0) + 1);
  const best = Math.max(0, ...votes.values());
  const head = serving.find((r) => r.node === p.node && r.error === undefined);
  if (head !== undefined && votes.get(head.digest) === best) return head.digest;
  return [...votes.entries()].find(([, n]) => n === best)?.[0];
}

async function digests(client: StoreClient, p: Partition, start: Buffer, end: Buffer, nodes: readonly string[] = p.chain.map((r) => r.node)): Promise<ReplicaReport[]> {
  return Promise.all(
    nodes.map(async (node): Promise<ReplicaReport> => {
      const inMap = p.chain.find((r) => r.node === node)?.state ?? 'unknown';
      try {
        const r = await client.replicaChecksum(node, p, start, end, { timeoutMs: REPLICA_DIGEST_TIMEOUT_MS });
        return { node, count: r.digest.count, digest: r.digest.toHex(), state: r.state || inMap, stream: r.chain.stream, seq: r.chain.seq };
      } catch (err) {
        return { node, count: 0, digest: '', state: inMap, stream: '', seq: 0, error: err instanceof StoreError ? `${err.code}: ${err.message}` : (err as Error).message };
      }
    }),
  );
}

/** Narrows `[p.start, p.end)` to the first SplitKeys piece where `bad` differs from `good`, SEARCH_ROUNDS times. */
async function firstDifference(client: StoreClient, p: Partition, good: string, bad: string): Promise<{ start: string; end: string }> {
  let start = p.start;
  let end = p.end;
  for (let round = 0; round < SEARCH_ROUNDS; round++) {
    const keys = await client.splitKeys(start, end, SEARCH_PARTS).catch(() => [] as Buffer[]);
    const bounds = [start, ...keys.filter((k) => Buffer.compare(k, start) > 0 && (end.length === 0 || Buffer.compare(k, end) < 0)), end];
    if (bounds.length <= 2) break;
    let found = false;
    for (let i = 0; i + 1 < bounds.length; i++) {
      const [a, b] = await digests(client, p, bounds[i]!, bounds[i + 1]!, [good, bad]);
      if (a!.error !== undefined || b!.error !== undefined || a!.digest !== b!.digest) {
        start = bounds[i]!;
        end = bounds[i + 1]!;
        found = true;
        break;
      }
    }
    if (!found) break;
  }
  return { start: start.toString('hex'), end: end.toString('hex') };
}

/** `cluster repair P --replica NODE --etcd URL`: that replica goes back to syncing (one CAS transaction). */
export async function clusterRepair(ctx: CliContext, partitionText: string, opts: EtcdFlags & { replica: string; etcd: string }): Promise<void> {
  const partition = parsePositiveInt(partitionText, 'PARTITION');
  const display = parseEtcdUrl(opts.etcd).display;
  const etcd = connectEtcd(await etcdConnectionOf(opts.etcd, opts));
  try {
    const store = new EtcdMapStore(etcd, display);
    for (;;) {
      const stored = await store.read();
      if (stored === undefined) throw new StoreError('STORE_INVALID_MAP', `etcd at ${display} holds no partition map yet: run shardpipe cluster init --etcd`);
      const next = resync(stored.map, partition, opts.replica);
      if (await store.replace(stored.map.version, next)) {
        const p = next.byId(partition)!;
        ctx.print(`partition ${partition}: ${opts.replica} is syncing again at epoch ${p.epoch} (map version ${next.version}); chain ${p.chain.map((r) => `${r.node} ${r.state}`).join(' → ')}. shardpipe cluster status --etcd URL shows its progress`);
        return;
      }
    }
  } finally {
    etcd.close();
  }
}

