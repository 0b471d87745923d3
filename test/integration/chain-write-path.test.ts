import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PackedRowsBuilder } from '../../store/packed-rows.js';
import { PartitionMap, type Replica } from '../../store/partition-map.js';
import { StoreNode } from '../../store/store-node.js';
import { StoreError } from '../../store/store-errors.js';
import type { PartitionStore } from '../../store/partition-store.js';
import { opBytes, type ForwardAck, type ForwardMessage, type ForwardTransport } from '../../store/chain-replica.js';
import type { NodeConnection } from '../../store/node-connection.js';
import { syncReplica } from '../../store/replica-sync.js';

// Real StoreNodes on real LevelDB folders, linked by an in-process transport that a test can cut
// (a link that hangs until aborted, as to a SIGKILLed peer): the deterministic protocol cases.

const A = '127.0.0.1:1';
const B = '127.0.0.1:2';
const C = '127.0.0.1:3';

interface Harness {
  nodes: Map<string, StoreNode>;
  /** Links that hang (never answer) until the sender aborts: a dead peer. */
  cut: Set<string>;
  sent: ForwardMessage[];
  /** Every Forward call: sender, receiver, the sequence numbers it carried. */
  calls: Array<{ from: string; to: string; seqs: number[]; bytes: number }>;
  /** Calls to these nodes are delivered, but their answer is lost (the call hangs until its deadline or abort). */
  dropAnswers: Set<string>;
  /** These nodes take one write per call, as a receiver that does not know ForwardRequest.more: the rest of a batch is not applied, and one ack comes back. */
  singleWrite: Set<string>;
  /** Closes a node (its LevelDB stays) and opens it again on the same folder: a process restarted within its lease. */
  restart(name: string): Promise<StoreNode>;
  install(chain: readonly (string | Replica)[], epoch: number, version: number): Promise<PartitionMap>;
}

const dirs: string[] = [];
const open: StoreNode[] = [];

afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((n) => n.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

function mapOf(chain: readonly (string | Replica)[], epoch: number, version: number): PartitionMap {
  const replicas = chain.map((r) => (typeof r === 'string' ? { node: r, state: 'serving' as const } : r));
  return PartitionMap.create(version, [{ id: 0, start: Buffer.alloc(0), end: Buffer.alloc(0), chain: replicas, epoch }], { replicas: 3 });
}

async function harness(names: readonly string[], forwardTimeoutMs = 2000, maxBatchBytes?: number): Promise<Harness> {
  const nodes = new Map<string, StoreNode>();
  const cut = new Set<string>();
  const sent: ForwardMessage[] = [];
  const calls: Harness['calls'] = [];
  const dropAnswers = new Set<string>();
  const singleWrite = new Set<string>();
  const transport = (from: string): ForwardTransport => ({
    send(node, messages, { signal, timeoutMs }): Promise<ForwardAck[]> {
      sent.push(...messages);
      calls.push({ from, to: node, seqs: messages.map((m) => m.seq), bytes: messages.reduce((sum, m) => sum + opBytes(m.op), 0) });
      if (dropAnswers.has(node) && nodes.has(node)) nodes.get(node)!.receiveForwards(messages).catch(() => undefined);
      if (cut.has(node) || cut.has(from) || dropAnswers.has(node)) {
        // No answer: the sender's deadline or its abort (a chain change) ends the call, as over gRPC.
        return new Promise((_, reject) => {
          const timer = setTimeout(() => reject(new StoreError('STORE_DEADLINE_EXCEEDED', `forward to ${node} timed out`)), timeoutMs);
          signal.addEventListener('abort', () => (clearTimeout(timer), reject(signal.reason)), { once: true });
        });
      }
      const target = nodes.get(node);
      if (target === undefined) return Promise.reject(new StoreError('STORE_UNAVAILABLE', `no node ${node}`));
      return target.receiveForwards(singleWrite.has(node) ? messages.slice(0, 1) : messages);
    },
  });
  const initial = mapOf(names, 1, 1);
  const dirOf = new Map<string, string>();
  const start = async (name: string): Promise<StoreNode> => {
    const node = await StoreNode.open({ node: name, dataDir: dirOf.get(name)!, initialMap: initial, transport: transport(name), forwardTimeoutMs, sweepIntervalMs: 0, syncWrites: false, ...(maxBatchBytes === undefined ? {} : { maxBatchBytes }) });
    open.push(node);
    nodes.set(name, node);
    return node;
  };
  for (const name of names) {
    const dir = await mkdtemp(join(tmpdir(), 'chain-'));
    dirs.push(dir);
    dirOf.set(name, dir);
    await start(name);
  }
  return {
    nodes,
    cut,
    sent,
    calls,
    dropAnswers,
    singleWrite,
    async restart(name) {
      await nodes.get(name)!.close();
      return start(name);
    },
    async install(chain, epoch, version) {
      const map = mapOf(chain, epoch, version);
      for (const [name, node] of nodes) if (!cut.has(name)) await node.setMap(map, { force: true });
      return map;
    },
  };
}

function rows(from: number, count: number): ReturnType<PackedRowsBuilder['finish']> {
  const b = new PackedRowsBuilder();
  for (let i = from; i < from + count; i++) b.add(Buffer.from(`k${String(i).padStart(7, '0')}`), Buffer.from(`value-${i}`));
  return b.finish();
}

async function digests(h: Harness, names: readonly string[]): Promise<Array<{ count: number; digest: string }>> {
  return Promise.all(
    names.map(async (n) => {
      const d = await h.nodes.get(n)!.replicaDigest(0);
      return { count: d.count, digest: d.toHex() };
    }),
  );
}

describe('chain write path (in-process transport, real LevelDB)', () => {
  it('writes at the head reach every replica with the same records; reads only at the tail, writes only at the head', async () => {
    const h = await harness([A, B, C]);
    const head = h.nodes.get(A)!;
    const tail = h.nodes.get(C)!;
    const result = await head.bulkInsert(1, rows(0, 500));
    expect(result.accepted).toBe(500);
    expect(result.timing.hops?.map((x) => x.node)).toEqual([B, C]);
    const put = await head.put(1, Buffer.from('k0000001'), Buffer.from('changed'), { ttlMs: 60_000 });
    const cas = await head.put(1, Buffer.from('k0000002'), Buffer.from('cas'), { expectedEtag: 3 });
    expect(await head.delete(1, Buffer.from('k0000003'))).toBe(true);
    const multi = await head.multi([
      { kind: 'put', mapVersion: 1, key: Buffer.from('m1'), value: Buffer.from('x'), options: {} },
      { kind: 'delete', mapVersion: 1, key: Buffer.from('k0000004') },
    ]);
    expect(multi.every((o) => o.ok)).toBe(true);

    const all = await digests(h, [A, B, C]);
    expect(all[0]!.count).toBe(499);
    expect(all[1]).toEqual(all[0]);
    expect(all[2]).toEqual(all[0]);
    // Same etags and expiries too, not only values: read each replica's stored record.
    const atTail = await tail.get(1, Buffer.from('k0000001'));
    expect(atTail).toEqual(put);
    expect((await tail.get(1, Buffer.from('k0000002')))?.etag).toBe(cas.etag);

    await expect(head.get(1, Buffer.from('k0000001'))).rejects.toMatchObject({ code: 'STORE_NOT_OWNER', retryable: true });
    await expect(tail.put(1, Buffer.from('x'), Buffer.from('y'), {})).rejects.toMatchObject({ code: 'STORE_NOT_OWNER', retryable: true });
    await expect(h.nodes.get(B)!.bulkInsert(1, rows(0, 1))).rejects.toMatchObject({ code: 'STORE_NOT_OWNER' });
  });

  it('a read never sees a write that is not on every replica: until the tail has it, the tail answers the old value and the head refuses reads', async () => {
    const h = await harness([A, B, C]);
    await h.nodes.get(A)!.put(1, Buffer.from('k'), Buffer.from('old'), {});
    h.cut.add(C);
    const write = h.nodes.get(A)!.put(1, Buffer.from('k'), Buffer.from('new'), {});
    write.catch(() => undefined);
    await waitFor(async () => h.sent.some((m) => m.from === B && m.seq === 2));
    expect((await h.nodes.get(C)!.get(1, Buffer.from('k')))?.value.toString()).toBe('old');
    await expect(h.nodes.get(A)!.get(1, Buffer.from('k'))).rejects.toMatchObject({ code: 'STORE_NOT_OWNER' });
    await expect(h.nodes.get(B)!.get(1, Buffer.from('k'))).rejects.toMatchObject({ code: 'STORE_NOT_OWNER' });
    h.cut.delete(C);
    // B's send to C times out (2 s here) and goes again: the write is acknowledged, and the tail reads it.
    await write;
    expect((await h.nodes.get(C)!.get(1, Buffer.from('k')))?.value.toString()).toBe('new');
  });

  it('a forward with a stale epoch, or from a node that is not the predecessor, is rejected and writes nothing', async () => {
    const h = await harness([A, B, C]);
    await h.nodes.get(A)!.bulkInsert(1, rows(0, 10));
    const forwarded = h.sent.find((m) => m.from === A)!;
    const tail = h.nodes.get(C)!;
    await expect(tail.receiveForward({ ...forwarded, from: B, epoch: 7, seq: 2, op: { kind: 'bulk', rows: rows(100, 5), assigned: { firstEtag: 50, nowMs: Date.now() } } })).rejects.toMatchObject({
      code: 'STORE_STALE_EPOCH',
      retryable: true,
    });
    await expect(tail.receiveForward({ ...forwarded, from: A, seq: 2, op: { kind: 'bulk', rows: rows(100, 5), assigned: { firstEtag: 50, nowMs: Date.now() } } })).rejects.toMatchObject({
      code: 'STORE_STALE_EPOCH',
    });
    expect((await tail.replicaDigest(0)).count).toBe(10);
  });

  it('fault injection: the head dies after forwarding; its successor becomes head and re-sends what was not acknowledged', async () => {
    const h = await harness([A, B, C]);
    await h.nodes.get(A)!.bulkInsert(1, rows(0, 100));
    // B applies the next write but its link to C hangs (as if C were slow), then A dies.
    h.cut.add(`${C}`);
    const pending = h.nodes.get(A)!.bulkInsert(1, rows(100, 100));
    pending.catch(() => undefined);
    await waitFor(async () => (await h.nodes.get(B)!.replicaDigest(0)).count === 200);
    h.cut.delete(C);
    h.cut.add(A);
    await h.install([B, C], 2, 2);
    // B re-sends to C under the new epoch; the dead head's client sees a failure (it retries: upsert).
    await waitFor(async () => (await h.nodes.get(C)!.replicaDigest(0)).count === 200);
    const [b, c] = await digests(h, [B, C]);
    expect(c).toEqual(b);
    // The new head takes writes and the tail acks them.
    const r = await h.nodes.get(B)!.bulkInsert(2, rows(200, 50));
    expect(r.timing.hops?.map((x) => x.node)).toEqual([C]);
    expect((await h.nodes.get(C)!.get(2, Buffer.from('k0000249')))?.value.toString()).toBe('value-249');
  });

  it('fault injection: the middle dies; the head re-sends the unacknowledged suffix to the tail and the write is acknowledged', async () => {
    const h = await harness([A, B, C]);
    await h.nodes.get(A)!.bulkInsert(1, rows(0, 100));
    h.cut.add(B);
    const writes = [h.nodes.get(A)!.bulkInsert(1, rows(100, 10)), h.nodes.get(A)!.put(1, Buffer.from('p'), Buffer.from('v'), {}), h.nodes.get(A)!.bulkInsert(1, rows(110, 10))];
    await h.install([A, C], 2, 2);
    const done = await Promise.all(writes);
    expect(done).toHaveLength(3);
    const [a, c] = await digests(h, [A, C]);
    expect(a!.count).toBe(121);
    expect(c).toEqual(a);
  });

  it('fault injection: the tail dies; its predecessor becomes tail and acknowledges what it holds', async () => {
    const h = await harness([A, B, C]);
    h.cut.add(C);
    const write = h.nodes.get(A)!.bulkInsert(1, rows(0, 50));
    await waitFor(async () => (await h.nodes.get(B)!.replicaDigest(0)).count === 50);
    await h.install([A, B], 2, 2);
    expect((await write).accepted).toBe(50);
    expect((await h.nodes.get(B)!.get(2, Buffer.from('k0000049')))?.value.toString()).toBe('value-49');
  });

  it('fault injection: a CAS whose head leaves the chain before the ack answers STORE_AMBIGUOUS, and is applied at most once', async () => {
    const h = await harness([A, B, C]);
    const first = await h.nodes.get(A)!.put(1, Buffer.from('acct'), Buffer.from('100'), { expectedEtag: 0 });
    h.cut.add(B);
    const cas = h.nodes.get(A)!.put(1, Buffer.from('acct'), Buffer.from('90'), { expectedEtag: first.etag }).then(
      () => 'acknowledged',
      (error: unknown) => error,
    );
    // A applied it and its forward to B hangs; then the coordinator removes A from the chain.
    await waitFor(async () => h.sent.some((m) => m.from === A && m.seq === 2));
    await h.nodes.get(A)!.setMap(mapOf([B, C], 2, 2), { force: true });
    expect(await cas).toMatchObject({ code: 'STORE_AMBIGUOUS', retryable: false });
    h.cut.delete(B);
    // The caller reads to find out (at the tail): here the CAS never reached B or C.
    for (const n of [B, C]) await h.nodes.get(n)!.setMap(mapOf([B, C], 2, 2), { force: true });
    const seen = await h.nodes.get(C)!.get(2, Buffer.from('acct'));
    expect(seen?.etag).toBe(first.etag);
    // Retrying the CAS on the new head applies it exactly once; a blind re-send would now fail.
    const again = await h.nodes.get(B)!.put(2, Buffer.from('acct'), Buffer.from('90'), { expectedEtag: first.etag });
    await expect(h.nodes.get(B)!.put(2, Buffer.from('acct'), Buffer.from('90'), { expectedEtag: first.etag })).rejects.toMatchObject({ code: 'STORE_ETAG_MISMATCH' });
    expect((await h.nodes.get(C)!.get(2, Buffer.from('acct')))?.etag).toBe(again.etag);
  });

  it('a replica that joined by a sync and was promoted before any forward reached it takes the head\'s stream where its sync\'s snapshot had it (a quiet partition); one from cluster init still needs its beginning', async () => {
    const h = await harness([A, B, C], 300);
    const head = h.nodes.get(A)!;
    // C leaves; the head writes (its stream goes past 1); C comes back syncing and is promoted with nothing written meanwhile.
    await h.install([A, B], 2, 2);
    expect((await head.bulkInsert(2, rows(0, 100))).accepted).toBe(100);
    await head.put(2, Buffer.from('k0000001'), Buffer.from('before'), {});
    await h.install([A, B, { node: C, state: 'syncing' }], 3, 3);
    // What C's sync does once it has opened its snapshot of the tail (B): take the snapshot's place in the stream.
    const [snap] = await h.nodes.get(B)!.openSnapshots(3, [0], 60_000);
    expect(snap!.chain.seq).toBe(2);
    h.nodes.get(C)!.positionReplica(0, snap!.chain);
    await h.nodes.get(B)!.releaseSnapshots([snap!.snapshotId]);
    await h.install([A, B, C], 4, 4);
    const put = await head.put(4, Buffer.from('k0000002'), Buffer.from('after the promotion'), {});
    // Acknowledged means the tail, C, has it: same record as the head's.
    expect(await h.nodes.get(C)!.get(4, Buffer.from('k0000002'))).toEqual(put);
    // A serving replica from cluster init that saw no forward yet refuses a stream that starts past 1.
    const fresh = await harness([A, B], 300);
    await expect(
      fresh.nodes.get(B)!.receiveForward({ partitionId: 0, epoch: 1, from: A, streamId: 's9', seq: 5, op: { kind: 'points', nowMs: Date.now(), writes: [{ key: Buffer.from('x'), deleted: true }] } }),
    ).rejects.toMatchObject({ code: 'STORE_FORWARD_GAP' });
  });

  it('fault injection: a syncing replica whose first two forwards arrive out of order, before its sync opened its snapshot, applies both in order from the snapshot\'s position', async () => {
    const h = await harness([A, B, C], 2000);
    const head = h.nodes.get(A)!;
    await h.install([A, B], 2, 2);
    expect((await head.bulkInsert(2, rows(0, 10))).accepted).toBe(10);
    await head.put(2, Buffer.from('k0000001'), Buffer.from('before'), {});
    await h.install([A, B, { node: C, state: 'syncing' }], 3, 3);
    const tail = h.nodes.get(B)!;
    const [snap] = await tail.openSnapshots(3, [0], 60_000);
    const at = snap!.chain;
    expect(at.seq).toBe(2);
    // The tail's next two forwards reach C the wrong way round, before C knows where it stands.
    const syncing = h.nodes.get(C)!;
    const base = { partitionId: 0, epoch: 3, from: B, streamId: at.stream };
    const put = (key: string, etag: number) => ({ kind: 'points' as const, nowMs: 5000, writes: [{ key: Buffer.from(key), record: { value: Buffer.from(key), etag, updatedAtMs: 5000, expiresAtMs: 0 } }] });
    const later = syncing.receiveForward({ ...base, seq: at.seq + 2, op: put('later', 102) });
    const earlier = syncing.receiveForward({ ...base, seq: at.seq + 1, op: put('earlier', 101) });
    // Neither is applied on a guess: both wait for the position.
    await new Promise((r) => setImmediate(r));
    expect(syncing.chainProgress()[0]).toMatchObject({ positioned: false, lastSeq: 0 });
    syncing.positionReplica(0, at);
    await Promise.all([later, earlier]);
    await tail.releaseSnapshots([snap!.snapshotId]);
    expect((await syncing.replicaStore(0)!.get(Buffer.from('earlier')))?.etag).toBe(101);
    expect((await syncing.replicaStore(0)!.get(Buffer.from('later')))?.etag).toBe(102);
    expect(syncing.chainProgress()[0]).toMatchObject({ positioned: true, lastSeq: at.seq + 2, streamId: at.stream });
    // Forwards up to the snapshot's position are in the copy: acknowledged, not applied again.
    await syncing.receiveForward({ ...base, seq: at.seq, op: put('not-applied', 100) });
    expect(await syncing.replicaStore(0)!.get(Buffer.from('not-applied'))).toBeUndefined();
  });

  it('fault injection: a middle replica restarted within its lease continues the chain from the position persisted with its writes; what it had not passed on reaches the tail', async () => {
    const h = await harness([A, B, C], 300);
    const head = h.nodes.get(A)!;
    expect((await head.bulkInsert(1, rows(0, 100))).accepted).toBe(100);
    // B applies the next write, but its forward to C hangs; then B stops and starts again.
    h.cut.add(C);
    const pending = head.bulkInsert(1, rows(100, 50));
    pending.catch(() => undefined);
    await waitFor(async () => (await h.nodes.get(B)!.replicaDigest(0)).count === 150);
    h.cut.add(B);
    const restarted = await h.restart(B);
    expect(restarted.chainProgress()[0]).toMatchObject({ lastSeq: 2, positioned: true });
    h.cut.delete(B);
    h.cut.delete(C);
    // A's re-send of seq 2 is a duplicate at B, which passes it on to C; the write is acknowledged.
    expect((await pending).accepted).toBe(50);
    const put = await head.put(1, Buffer.from('k0000007'), Buffer.from('after the restart'), {});
    expect(await h.nodes.get(C)!.get(1, Buffer.from('k0000007'))).toEqual(put);
    const all = await digests(h, [A, B, C]);
    expect(all[0]!.count).toBe(150);
    expect(all[1]).toEqual(all[0]);
    expect(all[2]).toEqual(all[0]);
    expect(h.nodes.get(C)!.chainProgress()[0]).toMatchObject({ lastSeq: 3 });
  });

  it('fault injection: forwards during a sync (deletes of keys the copy has passed, has not reached yet, and is reading; puts) win over the snapshot\'s rows: no key is brought back, the copy verifies, every replica equal', async () => {
    const h = await harness([A, B, C], 2000);
    const head = h.nodes.get(A)!;
    expect((await head.bulkInsert(1, rows(0, 3000))).accepted).toBe(3000);
    // C is away while the chain changes a key and deletes another, then comes back syncing.
    await h.install([A, B], 2, 2);
    await head.put(2, Buffer.from('k0000100'), Buffer.from('changed while away'), {});
    await head.delete(2, Buffer.from('k0000200'));
    await h.install([A, B, { node: C, state: 'syncing' }], 3, 3);
    const tail = h.nodes.get(B)!;
    const syncing = h.nodes.get(C)!;
    let batches = 0;
    const duringCopy = async (): Promise<void> => {
      // Written by the head and acknowledged by C (the syncing tail) while the copy reads batch 3 of 6.
      await head.delete(3, Buffer.from('k0001200')); // in the batch being read
      await head.delete(3, Buffer.from('k0000300')); // already copied
      await head.delete(3, Buffer.from('k0002500')); // not reached yet
      await head.put(3, Buffer.from('k0000400'), Buffer.from('put during the copy'), {});
      await head.put(3, Buffer.from('k9999999'), Buffer.from('new key during the copy'), {});
    };
    const result = await syncReplica({
      partition: h.nodes.get(C)!.map.byId(0)!,
      mapVersion: 3,
      target: syncing.replicaStore(0)!,
      source: inProcessSource(tail, async () => {
        if (++batches === 3) await duringCopy();
      }),
      batchSize: 500,
      // The verification's digest of the snapshot in pages, written to meanwhile: still equal.
      checksumPageEntries: 700,
      onSnapshot: (position) => syncing.positionReplica(0, position),
    });
    expect(batches).toBeGreaterThanOrEqual(6);
    expect(result.rows).toBe(2999);
    for (const gone of ['k0000200', 'k0000300', 'k0001200', 'k0002500']) expect(await syncing.replicaStore(0)!.get(Buffer.from(gone)), gone).toBeUndefined();
    expect((await syncing.replicaStore(0)!.get(Buffer.from('k0000400')))?.value.toString()).toBe('put during the copy');
    expect((await syncing.replicaStore(0)!.get(Buffer.from('k0000100')))?.value.toString()).toBe('changed while away');
    const all = await digests(h, [A, B, C]);
    expect(all[0]!.count).toBe(2999 - 3 + 1);
    expect(all[1]).toEqual(all[0]);
    expect(all[2]).toEqual(all[0]);
    // The keys forwards wrote during the copy (its tombstones among them) are tracked until C serves, then dropped.
    expect(syncing.chainProgress()[0]!.touchedKeys).toBe(5);
    await h.install([A, B, C], 4, 4);
    expect(syncing.chainProgress()[0]).toMatchObject({ positioned: true, touchedKeys: 0 });
  });

  it('fault injection: a replica holding a forward that waits for an earlier one lags by the head\'s sequence number minus its own, and by 0 once it has both', async () => {
    const h = await harness([A, B]);
    const tail = h.nodes.get(B)!;
    const base = { partitionId: 0, epoch: 1, from: A, streamId: 's1' };
    const put = (key: string, etag: number) => ({ kind: 'points' as const, nowMs: 1000, writes: [{ key: Buffer.from(key), record: { value: Buffer.from(key), etag, updatedAtMs: 1000, expiresAtMs: 0 } }] });
    await tail.receiveForward({ ...base, seq: 1, headSeq: 1, op: put('one', 1) });
    expect(tail.replicaStates()[0]!.lagSequences).toBe(0);
    const third = tail.receiveForward({ ...base, seq: 3, headSeq: 3, op: put('three', 3) });
    await new Promise((r) => setImmediate(r));
    // The head is at 3; this replica holds 1 durably.
    expect(tail.replicaStates()[0]!.lagSequences).toBe(2);
    await tail.receiveForward({ ...base, seq: 2, headSeq: 3, op: put('two', 2) });
    await third;
    expect(tail.replicaStates()[0]!.lagSequences).toBe(0);
    // The head itself never lags; forwards it sent again are counted.
    expect(h.nodes.get(A)!.replicaStates()[0]!.lagSequences).toBe(0);
  });

  it('fault injection: a copy cut off when the chain\'s tail dies resumes from the new tail after the last key it finished, with forwards held while the new snapshot opens; the copy verifies and every replica is equal', async () => {
    const h = await harness([A, B, C], 2000);
    const head = h.nodes.get(A)!;
    expect((await head.bulkInsert(1, rows(0, 3000))).accepted).toBe(3000);
    await h.install([A, B], 2, 2);
    await head.delete(2, Buffer.from('k0002000'));
    await h.install([A, B, { node: C, state: 'syncing' }], 3, 3);
    const syncing = h.nodes.get(C)!;
    const first = new AbortController();
    let copiedThrough: Buffer | undefined;
    let batches = 0;
    const cut = syncReplica({
      partition: syncing.map.byId(0)!,
      mapVersion: 3,
      target: syncing.replicaStore(0)!,
      source: inProcessSource(h.nodes.get(B)!, async () => {
        // B dies while the copy reads its third batch.
        if (++batches === 3) first.abort(new Error('the tail died'));
      }),
      batchSize: 500,
      signal: first.signal,
      beforeSnapshot: () => syncing.holdReplicaForSnapshot(0),
      onSnapshot: (position) => syncing.positionReplica(0, position),
      onProgress: (p) => (copiedThrough = p.copiedThrough),
    });
    await expect(cut).rejects.toThrow();
    expect(copiedThrough?.toString()).toBe('k0000999');
    h.cut.add(B);
    await h.install([A, { node: C, state: 'syncing' }], 4, 4);
    // Writes go on to C straight from A: behind and ahead of where the copy stopped.
    await head.put(4, Buffer.from('k0000010'), Buffer.from('after the tail died'), {});
    await head.delete(4, Buffer.from('k0002500'));
    const resumed = await syncReplica({
      partition: syncing.map.byId(0)!,
      mapVersion: 4,
      target: syncing.replicaStore(0)!,
      source: inProcessSource(head, async () => undefined),
      batchSize: 500,
      startAfter: copiedThrough,
      beforeSnapshot: () => syncing.holdReplicaForSnapshot(0),
      onSnapshot: (position) => syncing.positionReplica(0, position),
    });
    // Only the rows after k0000999 were streamed again (2000 of them, less the two deleted).
    expect(resumed.rows).toBe(1998);
    const [a, c] = await digests(h, [A, C]);
    expect(a!.count).toBe(2998);
    expect(c).toEqual(a);
    expect((await syncing.replicaStore(0)!.get(Buffer.from('k0000010')))?.value.toString()).toBe('after the tail died');
  });

  it('a ChangedKeys read of a held snapshot whose partition a newer map closes on that node mid-read ends with the retryable STORE_NOT_OWNER, not an internal error', async () => {
    const h = await harness([A, B, C]);
    expect((await h.nodes.get(A)!.bulkInsert(1, rows(0, 3000))).accepted).toBe(3000);
    const source = h.nodes.get(C)!;
    const [snap] = await source.openSnapshots(1, [0], 60_000);
    const keys = Array.from({ length: 3000 }, (_, i) => Buffer.from(`k${String(i).padStart(7, '0')}`));
    const reading = source.changedKeys(snap!.snapshotId, { after: { stream: '', seq: 0 }, keys, batchSize: 100 });
    const first = await reading.next();
    expect(first.done).toBe(false);
    // C leaves the chain: its copy of partition 0 is closed under the read.
    await h.install([A, B], 2, 2);
    const err = await (async () => {
      for (;;) if ((await reading.next()).done === true) return undefined;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_NOT_OWNER');
    expect((err as StoreError).message).toMatch(/partition 0 left .* while it was being read/);
  });

  it('forwards that arrive out of order are applied in sequence order', async () => {
    const h = await harness([A, B]);
    const tail = h.nodes.get(B)!;
    const base = { partitionId: 0, epoch: 1, from: A, streamId: 's1' };
    const k = Buffer.from('same');
    const rec = (etag: number, value: string) => ({ key: k, record: { value: Buffer.from(value), etag, updatedAtMs: 1000 + etag, expiresAtMs: 0 } });
    const second = tail.receiveForward({ ...base, seq: 2, op: { kind: 'points', nowMs: Date.now(), writes: [rec(2, 'second')] } });
    const first = tail.receiveForward({ ...base, seq: 1, op: { kind: 'points', nowMs: Date.now(), writes: [rec(1, 'first')] } });
    await Promise.all([first, second]);
    const got = await tail.get(1, k);
    expect(got?.value.toString()).toBe('second');
    expect(got?.etag).toBe(2);
    // A duplicate of an applied forward is acknowledged without being applied again.
    await tail.receiveForward({ ...base, seq: 1, op: { kind: 'points', nowMs: Date.now(), writes: [rec(1, 'first')] } });
    expect((await tail.get(1, k))?.value.toString()).toBe('second');
  });
});

/**
 * Fault injection: a sync's source (the calls replica-sync makes) served in-process by a node,
 * running `beforeBatch` before each scanned batch is handed over.
 */
function inProcessSource(node: StoreNode, beforeBatch: () => Promise<void>): NodeConnection {
  const source = {
    address: node.address,
    async unary(method: string, req: Record<string, unknown>): Promise<unknown> {
      const r = req as never as { mapVersion: number; partitionIds: number[]; leaseMs: number; snapshotIds: string[]; start: Buffer; end: Buffer; snapshotId: string };
      if (method === 'openSnapshot') {
        const snaps = await node.openSnapshots(r.mapVersion, r.partitionIds, r.leaseMs);
        return { snapshots: snaps.map((x) => ({ partitionId: x.partitionId, snapshotId: x.snapshotId, count: x.count, expiresAtMs: x.expiresAtMs, chainStream: x.chain.stream, chainSeq: x.chain.seq })) };
      }
      if (method === 'renewSnapshot') return { snapshots: node.renewSnapshots(r.snapshotIds, r.leaseMs) };
      if (method === 'releaseSnapshot') return { released: await node.releaseSnapshots(r.snapshotIds) };
      if (method === 'checksum') {
        const { maxEntries } = req as { maxEntries: number };
        const { digest, next } = await node.checksumPage(node.clampRange(r.mapVersion, r.start, r.end), maxEntries, { includeEtag: true, snapshotId: r.snapshotId });
        return { digest: digest.toHex(), count: digest.count, next };
      }
      throw new Error(`unexpected call ${method}`);
    },
    async *scan(req: { mapVersion: number; start: Buffer; end: Buffer; limit: number; batchSize: number; snapshotId: string }) {
      const range = node.clampRange(req.mapVersion, req.start, req.end);
      for await (const entries of node.scan(range, { snapshotId: req.snapshotId, batchSize: req.batchSize, limit: req.limit })) {
        if (req.limit !== 1) await beforeBatch();
        yield { entries, last: false };
      }
      yield { entries: [], last: true };
    },
  };
  return source as never as NodeConnection;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not reached in time');
    await new Promise((r) => setImmediate(r));
  }
}

/** Entries each node's replica of partition 0 wrote since it opened (a write applied twice counts twice). */
async function writesOf(h: Harness, names: readonly string[]): Promise<number[]> {
  return Promise.all(names.map(async (n) => (h.nodes.get(n)! as unknown as { stores: Map<number, PartitionStore> }).stores.get(0)!.stats().then((s) => s.writes)));
}

describe('chain write path: group commit per hop (several writes in one Forward call)', () => {
  it('writes ready together go down the chain in one call per hop, in sequence order; every replica holds the same records with etags, and writes to one key keep their order', async () => {
    const h = await harness([A, B, C]);
    const head = h.nodes.get(A)!;
    const key = (i: number): Buffer => Buffer.from(`p${String(i).padStart(4, '0')}`);
    // 4 rounds of puts to the same 50 keys, a bulk batch and 10 deletes, all at once.
    const writes: Array<Promise<unknown>> = [];
    for (let round = 0; round < 4; round++) for (let i = 0; i < 50; i++) writes.push(head.put(1, key(i), Buffer.from(`v${round}`), {}));
    writes.push(head.bulkInsert(1, rows(0, 300)));
    for (let i = 0; i < 10; i++) writes.push(head.delete(1, key(i)));
    await Promise.all(writes);

    const fromA = h.calls.filter((c) => c.from === A);
    const fromB = h.calls.filter((c) => c.from === B);
    expect(fromA.some((c) => c.seqs.length > 1)).toBe(true);
    expect(fromB.some((c) => c.seqs.length > 1)).toBe(true);
    for (const c of h.calls) expect(c.seqs).toEqual([...c.seqs].sort((x, y) => x - y));
    // Each write went once per hop (nothing was re-sent), in fewer calls than writes.
    for (const hop of [fromA, fromB]) {
      const seqs = hop.flatMap((c) => c.seqs).sort((x, y) => x - y);
      expect(seqs).toEqual(Array.from({ length: writes.length }, (_, i) => i + 1));
      expect(hop.length).toBeLessThan(writes.length / 2);
    }
    const all = await digests(h, [A, B, C]);
    expect(all[0]!.count).toBe(300 + 40);
    expect(all[1]).toEqual(all[0]);
    expect(all[2]).toEqual(all[0]);
    const tail = h.nodes.get(C)!;
    for (let i = 10; i < 50; i++) expect((await tail.get(1, key(i)))?.value.toString()).toBe('v3');
    for (let i = 0; i < 10; i++) expect(await tail.get(1, key(i))).toBeUndefined();
    expect(await writesOf(h, [A, B, C])).toEqual([510, 510, 510]);
  });

  it('a batched forward is applied in sequence order, acked write by write, its position persisted; sent again, none of it is applied twice', async () => {
    const h = await harness([A, B]);
    const tail = h.nodes.get(B)!;
    const now = Date.now();
    const put = (key: string, value: string, etag: number): ForwardMessage['op'] => ({ kind: 'points', nowMs: now, writes: [{ key: Buffer.from(key), record: { value: Buffer.from(value), etag, updatedAtMs: now, expiresAtMs: 0 } }] });
    const base = { partitionId: 0, epoch: 1, from: A, streamId: 'batch-stream' };
    const batch: ForwardMessage[] = [
      { ...base, seq: 1, op: put('a', 'first', 1) },
      { ...base, seq: 2, op: put('b', 'b', 2) },
      { ...base, seq: 3, op: put('a', 'second', 3) },
      { ...base, seq: 4, op: { kind: 'points', nowMs: now, writes: [{ key: Buffer.from('b'), deleted: true }] } },
      { ...base, seq: 5, op: { kind: 'bulk', rows: rows(0, 20), assigned: { firstEtag: 4, nowMs: now } } },
    ];
    const acks = await tail.receiveForwards(batch);
    expect(acks.map((a) => a.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(await tail.get(1, Buffer.from('a'))).toMatchObject({ value: Buffer.from('second'), etag: 3, updatedAtMs: now });
    expect(await tail.get(1, Buffer.from('b'))).toBeUndefined();
    expect((await tail.get(1, Buffer.from('k0000019')))?.etag).toBe(23);
    expect(tail.chainProgress()[0]).toMatchObject({ lastSeq: 5, streamId: 'batch-stream' });
    const before = await digests(h, [B]);
    expect(before[0]!.count).toBe(21);
    const [written] = await writesOf(h, [B]);

    // Sent again (its answer was lost): all duplicates, acked and not applied — a changed value would show.
    const again = await tail.receiveForwards(batch.map((m) => (m.seq === 3 ? { ...m, op: put('a', 'changed', 3) } : m)));
    expect(again.map((a) => a.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(await digests(h, [B])).toEqual(before);
    expect(await writesOf(h, [B])).toEqual([written]);

    const restarted = await h.restart(B);
    expect(restarted.chainProgress()[0]).toMatchObject({ lastSeq: 5, streamId: 'batch-stream' });
    expect((await restarted.get(1, Buffer.from('a')))?.value.toString()).toBe('second');
  });

  it('fault injection: a batch whose answer is lost is cut by a chain change and sent again under the new epoch; nothing is lost or applied twice', async () => {
    const h = await harness([A, B, C], 30_000);
    const head = h.nodes.get(A)!;
    await head.put(1, Buffer.from('warm'), Buffer.from('x'), {});
    h.dropAnswers.add(B);
    const writes = Array.from({ length: 40 }, (_, i) => head.put(1, Buffer.from(`d${String(i).padStart(2, '0')}`), Buffer.from(`v${i}`), {}));
    // Delivered to B, which applies it and passes it on to C; A never hears back.
    await waitFor(async () => (await h.nodes.get(C)!.replicaDigest(0)).count === 41);
    const batched = h.calls.filter((c) => c.from === A && c.seqs.length > 1);
    expect(batched.length).toBeGreaterThan(0);
    const appliedOnce = await writesOf(h, [A, B, C]);
    expect(appliedOnce).toEqual([41, 41, 41]);
    const callsBefore = h.calls.length;

    h.dropAnswers.delete(B);
    await h.install([A, B, C], 2, 2);
    await Promise.all(writes);
    // A sent the cut batches again, whole, under epoch 2; B and C acknowledged them without applying any again.
    const resent = h.calls.slice(callsBefore).filter((c) => c.from === A).flatMap((c) => c.seqs);
    for (const c of batched) for (const seq of c.seqs) expect(resent).toContain(seq);
    expect(await writesOf(h, [A, B, C])).toEqual(appliedOnce);
    const all = await digests(h, [A, B, C]);
    expect(all[0]!.count).toBe(41);
    expect(all[1]).toEqual(all[0]);
    expect(all[2]).toEqual(all[0]);
  });

  it('a batched call stays within the node\'s --max-batch-bytes (what a node configured alike receives); a larger write goes alone', async () => {
    const h = await harness([A, B, C], 2000, 1000);
    const head = h.nodes.get(A)!;
    const writes = Array.from({ length: 30 }, (_, i) => head.put(1, Buffer.from(`b${String(i).padStart(2, '0')}`), Buffer.alloc(200, i), {}));
    await Promise.all([...writes, head.put(1, Buffer.from('big'), Buffer.alloc(900, 1), {})]);
    expect(h.calls.some((c) => c.seqs.length > 1)).toBe(true);
    for (const c of h.calls) if (c.seqs.length > 1) expect(c.bytes).toBeLessThanOrEqual(1000);
    const all = await digests(h, [A, B, C]);
    expect(all[0]!.count).toBe(31);
    expect(all[1]).toEqual(all[0]);
    expect(all[2]).toEqual(all[0]);
  });

  it('fault injection: a successor that takes one write per call (it ignores ForwardRequest.more) gets the rest of a batch one per call; every replica equal', async () => {
    const h = await harness([A, B, C]);
    h.singleWrite.add(B);
    const head = h.nodes.get(A)!;
    await Promise.all(Array.from({ length: 30 }, (_, i) => head.put(1, Buffer.from(`s${String(i).padStart(2, '0')}`), Buffer.from(`v${i}`), {})));
    const toB = h.calls.filter((c) => c.to === B);
    expect(toB.some((c) => c.seqs.length > 1)).toBe(true);
    const all = await digests(h, [A, B, C]);
    expect(all[0]!.count).toBe(30);
    expect(all[1]).toEqual(all[0]);
    expect(all[2]).toEqual(all[0]);
    expect(await writesOf(h, [A, B, C])).toEqual([30, 30, 30]);
  });
});
