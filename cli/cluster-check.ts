import { setTimeout as sleep } from 'node:timers/promises';
import { resync } from '../coordinator/index.js';
import { CHECKSUM_PAGE_ENTRIES, EtcdMapStore, RangeDigest, StoreError, connectEtcd, parseEtcdUrl, type Partition, type StoreClient } from '../store/index.js';
import { CliUsageError } from './cli-env.js';
import { EXIT, formatTable, parsePositiveInt } from './cli-io.js';
import { withClient } from './store-io.js';
import type { CliContext } from './cli-context.js';
import { etcdConnectionOf, type EtcdFlags } from './etcd-options.js';

/** How long one replica's digest of one page of a partition may take. */
const REPLICA_DIGEST_TIMEOUT_MS = 60_000;
/** Pages a partition is cut into at most (SplitKeys' limit). */
const MAX_PAGES = 1000;
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
  /** The chain sequence number every serving replica's digest of the last page is at; absent when a page never had one (writes kept coming). */
  seq?: number;
  /** Rounds of digests it took, over all pages, for the serving replicas to report one position per page. */
  attempts: number;
  /** Pages (key ranges of about `--page-entries` entries) compared, each at one chain position of its own. */
  pages: { checked: number; total: number };
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
export async function clusterCheck(ctx: CliContext, opts: { seeds?: string; json?: boolean; pageEntries?: string }): Promise<void> {
  const pageEntries = opts.pageEntries === undefined ? CHECKSUM_PAGE_ENTRIES : parsePositiveInt(opts.pageEntries, '--page-entries');
  if (pageEntries < 1) throw new CliUsageError(`--page-entries must be at least 1, got ${pageEntries}`);
  const reports = await withClient(ctx.seeds(opts.seeds), ctx, async (client) => {
    const map = await client.refreshMap();
    const entries = await partitionEntries(client);
    const out: PartitionReport[] = [];
    for (const p of map.partitions) out.push(await checkPartition(client, p, entries.get(p.id) ?? 0, pageEntries));
    return out;
    // A page's digest on a busy node can need longer than the client's usual 10 s per call.
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
          r.consistent ? (r.pages.total > 1 ? `consistent in ${r.pages.total} pages` : `consistent at seq ${r.seq ?? 0}`) : r.error !== undefined ? r.error : `DIVERGES${r.diverging?.length ? `: ${r.diverging.join(', ')}` : ''}${r.firstDifference ? ` first in [${r.firstDifference.start}, ${r.firstDifference.end})` : ''}`,
          r.replicas.map((x) => (x.error ? `${x.node} ${x.state} error: ${x.error}` : `${x.node} ${x.state} ${x.count} ${x.digest.slice(0, 12)}`)).join(' | '),
        ]),
      ),
    );
    ctx.print(consistent ? `all ${reports.length} partitions consistent` : `${reports.filter((r) => !r.consistent).length} of ${reports.length} partitions inconsistent: shardpipe cluster repair P --replica NODE --etcd URL resyncs a replica`);
  }
  if (!consistent) process.exitCode = EXIT.failed;
}

/** One page's digests of every replica, asked until the serving ones report one chain position. */
interface PageDigests {
  replicas: ReplicaReport[];
  serving: ReplicaReport[];
  attempts: number;
  atOne: boolean;
}

async function digestPage(client: StoreClient, p: Partition, start: Buffer, end: Buffer): Promise<PageDigests> {
  let replicas: ReplicaReport[] = [];
  let serving: ReplicaReport[] = [];
  let attempts = 0;
  let atOne = false;
  for (let pauseMs = POSITION_PAUSE_MS; attempts < POSITION_ATTEMPTS; pauseMs = Math.min(1000, pauseMs * 2)) {
    if (attempts > 0) await sleep(pauseMs);
    attempts++;
    replicas = await digests(client, p, start, end);
    serving = replicas.filter((r) => r.state === 'serving');
    atOne = serving.every((r) => r.error === undefined && r.stream === serving[0]!.stream && r.seq === serving[0]!.seq);
    if (atOne || replicas.some((r) => r.error !== undefined)) break;
  }
  return { replicas, serving, attempts, atOne };
}

/**
 * Cuts the partition into pages of about `pageEntries` entries (SplitKeys' estimate from its
 * entry count), so one replica's digest of a page stays far inside the call's timeout however
 * large the partition is.
 */
async function pageBounds(client: StoreClient, p: Partition, entries: number, pageEntries: number): Promise<Buffer[]> {
  const parts = Math.min(MAX_PAGES, Math.ceil(entries / pageEntries));
  const keys = parts < 2 ? [] : await client.splitKeys(p.start, p.end, parts);
  return [p.start, ...keys.filter((k) => Buffer.compare(k, p.start) > 0 && (p.end.length === 0 || Buffer.compare(k, p.end) < 0)), p.end];
}

/** Each partition's entry count as its replicas estimate it (the largest), to cut it into pages. */
async function partitionEntries(client: StoreClient): Promise<Map<number, number>> {
  const entries = new Map<number, number>();
  for (const { result } of await client.stats()) {
    // A node that does not answer shows up in the digests; its partitions are cut by the others' counts.
    if (result.ok) for (const p of result.partitions) entries.set(p.id, Math.max(entries.get(p.id) ?? 0, p.approxCount));
  }
  return entries;
}

async function checkPartition(client: StoreClient, p: Partition, entries: number, pageEntries: number): Promise<PartitionReport> {
  const bounds = await pageBounds(client, p, entries, pageEntries);
  const pages = bounds.length - 1;
  // Each page is compared at one chain position of its own; a replica's figures add up its pages.
  const totals = new Map<string, RangeDigest>();
  const diverging = new Set<string>();
  let firstDifference: { start: string; end: string } | undefined;
  let attempts = 0;
  let replicas: ReplicaReport[] = [];
  let seq = 0;
  for (let i = 0; i < pages; i++) {
    const page = await digestPage(client, p, bounds[i]!, bounds[i + 1]!);
    attempts += page.attempts;
    for (const r of page.replicas) if (r.error === undefined) (totals.get(r.node) ?? totals.set(r.node, new RangeDigest()).get(r.node)!).merge(RangeDigest.fromHex(r.digest, r.count));
    replicas = page.replicas.map((r) => (r.error === undefined ? { ...r, count: totals.get(r.node)!.count, digest: totals.get(r.node)!.toHex() } : r));
    const at = pages > 1 ? ` (page ${i + 1} of ${pages})` : '';
    if (page.replicas.some((r) => r.error !== undefined)) return { id: p.id, epoch: p.epoch, replicas, consistent: false, attempts, pages: { checked: i, total: pages } };
    if (!page.atOne) {
      const where = page.serving.map((r) => `${r.node} at ${r.seq}`).join(', ');
      return { id: p.id, epoch: p.epoch, replicas, consistent: false, attempts, pages: { checked: i, total: pages }, error: `not checked${at}: its serving replicas were never at one sequence number in ${page.attempts} rounds (${where}); writes keep coming — run the check again in a quieter moment` };
    }
    seq = page.serving[0]?.seq ?? 0;
    const reference = referenceDigest(p, page.serving);
    const differ = page.serving.filter((r) => r.digest !== reference);
    for (const r of differ) diverging.add(r.node);
    if (differ.length > 0 && firstDifference === undefined) {
      const good = page.serving.find((r) => r.digest === reference)!.node;
      firstDifference = await firstDifferenceIn(client, p, bounds[i]!, bounds[i + 1]!, good, differ[0]!.node);
    }
  }
  const report: PartitionReport = { id: p.id, epoch: p.epoch, replicas, consistent: diverging.size === 0, seq, attempts, pages: { checked: pages, total: pages } };
  if (diverging.size > 0) {
    report.diverging = [...diverging];
    report.firstDifference = firstDifference;
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

/** Narrows `[from, to)` to the first SplitKeys piece where `bad` differs from `good`, SEARCH_ROUNDS times. */
async function firstDifferenceIn(client: StoreClient, p: Partition, from: Buffer, to: Buffer, good: string, bad: string): Promise<{ start: string; end: string }> {
  let start = from;
  let end = to;
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

