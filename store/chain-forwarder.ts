import { type ForwardRequest, type ForwardPoint, type ForwardResponse, type ForwardWrite, type PackedRows as PackedRowsMessage } from './proto/gen/shardpipe/store/v1/store.js';
import type { ForwardAck, ForwardMessage, ForwardTransport } from './chain-replica.js';
import { BatchBufferPool } from '../common/index.js';
import { encodeForwardRequest, encodeForwardRequestPooled, releaseEncodedForwardRequest } from './forward-codec.js';
import { NodeConnection, type StoreCredentials } from './node-connection.js';
import { PackedRows } from './packed-rows.js';
import { StoreError } from './store-errors.js';

/**
 * The Forward RPC as a chain replica's transport: one channel per successor, kept while the node
 * runs, authenticated with the node's `replica` token. A call's deadline is the forward timeout.
 */
export class ChainForwarder implements ForwardTransport {
  private readonly connections = new Map<string, NodeConnection>();
  private closed = false;
  /**
   * The encoded requests' buffers, reused: a bulk forward is up to a few MiB, and a fresh one per
   * call is memory outside the JS heap that makes V8 run a full GC every few dozen MiB.
   */
  private readonly encoded = new BatchBufferPool({ maxFree: 4, maxBytes: 8 * 1024 * 1024 });

  constructor(private readonly credentials: StoreCredentials) {}

  async send(node: string, messages: readonly ForwardMessage[], options: { timeoutMs: number; signal: AbortSignal }): Promise<ForwardAck[]> {
    if (this.closed) throw new StoreError('STORE_CLOSED', 'the chain forwarder is closed');
    let conn = this.connections.get(node);
    if (conn === undefined) {
      conn = new NodeConnection(node, this.credentials);
      this.connections.set(node, conn);
    }
    const request = encodeForwardRequestPooled(forwardsToProto(messages), this.encoded);
    const reply = await conn.unary('forward', request, { deadline: Date.now() + options.timeoutMs, signal: options.signal });
    releaseEncodedForwardRequest(request);
    return forwardAcksFromProto(reply);
  }

  /** Closes every channel. Idempotent. */
  close(): void {
    this.closed = true;
    for (const conn of this.connections.values()) conn.close();
    this.connections.clear();
  }
}

/** The wire form of one write of a forward: a bulk batch's buffers as views (no copy), or the point records. */
function writeToProto(m: ForwardMessage): { packed?: PackedRowsMessage; firstEtag: number; nowMs: number; points: ForwardPoint[] } {
  if (m.op.kind === 'bulk') return { packed: m.op.rows.toMessage(), firstEtag: m.op.assigned.firstEtag, nowMs: m.op.assigned.nowMs, points: [] };
  return {
    firstEtag: 0,
    nowMs: m.op.nowMs,
    points: m.op.writes.map((w) =>
      'deleted' in w
        ? { entry: { key: w.key, value: Buffer.alloc(0), etag: 0, updatedAtMs: 0, expiresAtMs: 0 }, deleted: true }
        : { entry: { key: w.key, value: w.record.value, etag: w.record.etag, updatedAtMs: w.record.updatedAtMs, expiresAtMs: w.record.expiresAtMs }, deleted: false },
    ),
  };
}

/** The wire form of a forward. */
export function forwardToProto(m: ForwardMessage): ForwardRequest {
  return forwardsToProto([m]);
}

/**
 * The wire form of consecutive forwards of one partition and stream (group commit per hop): the
 * first as the request's own fields, the others in `more` (each with its seq and head_seq).
 */
export function forwardsToProto(messages: readonly ForwardMessage[]): ForwardRequest {
  const m = messages[0];
  if (m === undefined) throw new RangeError('a forward carries at least one write');
  const more: ForwardWrite[] = [];
  for (let i = 1; i < messages.length; i++) {
    const next = messages[i]!;
    more.push({ seq: next.seq, headSeq: next.headSeq ?? 0, ...writeToProto(next) });
  }
  return { partitionId: m.partitionId, epoch: m.epoch, from: m.from, streamId: m.streamId, seq: m.seq, headSeq: m.headSeq ?? 0, ...writeToProto(m), more };
}

/** A received write's op (field ranges already checked). */
function opFromProto(w: { packed?: PackedRowsMessage | undefined; firstEtag: number; nowMs: number; points: ForwardPoint[] }, path: string): ForwardMessage['op'] {
  if (w.packed !== undefined) {
    if (w.points.length > 0) throw new StoreError('STORE_INVALID_ARGUMENT', `${path} has both packed and points: a forward is one bulk write or point writes`);
    return { kind: 'bulk', rows: PackedRows.fromMessage(w.packed, `${path}.packed`), assigned: { firstEtag: w.firstEtag, nowMs: w.nowMs } };
  }
  if (w.points.length === 0) throw new StoreError('STORE_INVALID_ARGUMENT', `${path} carries neither packed nor points`);
  return {
    kind: 'points',
    nowMs: w.nowMs,
    writes: w.points.map((p, i) => {
      const e = p.entry;
      if (e === undefined) throw new StoreError('STORE_INVALID_ARGUMENT', `${path}.points[${i}].entry is missing`);
      return p.deleted ? { key: e.key, deleted: true as const } : { key: e.key, record: { value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs } };
    }),
  };
}

/**
 * The writes of a received forward (field ranges already checked), in the order sent; those in
 * `more` share the request's partition, epoch, sender and stream and must follow its seq in order.
 */
export function forwardsFromProto(req: ForwardRequest): ForwardMessage[] {
  const base = { partitionId: req.partitionId, epoch: req.epoch, from: req.from, streamId: req.streamId };
  const out: ForwardMessage[] = [{ ...base, seq: req.seq, ...(req.headSeq > 0 ? { headSeq: req.headSeq } : {}), op: opFromProto(req, 'ForwardRequest') }];
  for (let i = 0; i < req.more.length; i++) {
    const w = req.more[i]!;
    const previous = out[out.length - 1]!.seq;
    if (w.seq <= previous) throw new StoreError('STORE_INVALID_ARGUMENT', `ForwardRequest.more[${i}].seq is ${w.seq}, not after ${previous}: a batched forward's writes are in sequence order`);
    out.push({ ...base, seq: w.seq, ...(w.headSeq > 0 ? { headSeq: w.headSeq } : {}), op: opFromProto(w, `ForwardRequest.more[${i}]`) });
  }
  return out;
}

/** Bytes a forward takes on the wire (its encoded ForwardRequest): for the bench's bytes forwarded per row. */
export function forwardWireBytes(message: ForwardMessage): number {
  return encodeForwardRequest(forwardToProto(message)).length;
}

/** The answer to a forward: the first write's ack, the others' in `more`, in order. */
export function forwardAcksToProto(acks: readonly ForwardAck[]): ForwardResponse {
  const [first, ...more] = acks;
  if (first === undefined) throw new RangeError('a forward is answered with at least one ack');
  return { seq: first.seq, hops: first.hops, more: more.map((a) => ({ seq: a.seq, hops: a.hops, more: [] })) };
}

function forwardAcksFromProto(reply: ForwardResponse): ForwardAck[] {
  const one = (r: ForwardResponse): ForwardAck => ({ seq: r.seq, hops: r.hops.map((h) => ({ node: h.node, writeMs: h.writeMs, forwardMs: h.forwardMs })) });
  return [one(reply), ...reply.more.map(one)];
}
