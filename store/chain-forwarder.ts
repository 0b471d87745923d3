import { ForwardRequest, type ForwardResponse } from './proto/gen/shardpipe/store/v1/store.js';
import type { ForwardAck, ForwardMessage, ForwardTransport } from './chain-replica.js';
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

  constructor(private readonly credentials: StoreCredentials) {}

  async send(node: string, message: ForwardMessage, options: { timeoutMs: number; signal: AbortSignal }): Promise<ForwardAck> {
    if (this.closed) throw new StoreError('STORE_CLOSED', 'the chain forwarder is closed');
    let conn = this.connections.get(node);
    if (conn === undefined) {
      conn = new NodeConnection(node, this.credentials);
      this.connections.set(node, conn);
    }
    const reply = await conn.unary('forward', forwardToProto(message), { deadline: Date.now() + options.timeoutMs, signal: options.signal });
    return forwardAckFromProto(reply);
  }

  /** Closes every channel. Idempotent. */
  close(): void {
    this.closed = true;
    for (const conn of this.connections.values()) conn.close();
    this.connections.clear();
  }
}

/** The wire form of a forward: a bulk batch's buffers as views (no copy), or the point records. */
export function forwardToProto(m: ForwardMessage): ForwardRequest {
  const base = { partitionId: m.partitionId, epoch: m.epoch, from: m.from, streamId: m.streamId, seq: m.seq, headSeq: m.headSeq ?? 0 };
  if (m.op.kind === 'bulk') return { ...base, packed: m.op.rows.toMessage(), firstEtag: m.op.assigned.firstEtag, nowMs: m.op.assigned.nowMs, points: [] };
  return {
    ...base,
    firstEtag: 0,
    nowMs: m.op.nowMs,
    points: m.op.writes.map((w) =>
      'deleted' in w
        ? { entry: { key: w.key, value: Buffer.alloc(0), etag: 0, updatedAtMs: 0, expiresAtMs: 0 }, deleted: true }
        : { entry: { key: w.key, value: w.record.value, etag: w.record.etag, updatedAtMs: w.record.updatedAtMs, expiresAtMs: w.record.expiresAtMs }, deleted: false },
    ),
  };
}

/** A received forward (field ranges already checked), as the chain replica takes it. */
export function forwardFromProto(req: ForwardRequest): ForwardMessage {
  const base = { partitionId: req.partitionId, epoch: req.epoch, from: req.from, streamId: req.streamId, seq: req.seq, ...(req.headSeq > 0 ? { headSeq: req.headSeq } : {}) };
  if (req.packed !== undefined) {
    if (req.points.length > 0) throw new StoreError('STORE_INVALID_ARGUMENT', 'ForwardRequest has both packed and points: a forward is one bulk write or point writes');
    return { ...base, op: { kind: 'bulk', rows: PackedRows.fromMessage(req.packed, 'ForwardRequest.packed'), assigned: { firstEtag: req.firstEtag, nowMs: req.nowMs } } };
  }
  if (req.points.length === 0) throw new StoreError('STORE_INVALID_ARGUMENT', 'ForwardRequest carries neither packed nor points');
  return {
    ...base,
    op: {
      kind: 'points',
      nowMs: req.nowMs,
      writes: req.points.map((p, i) => {
        const e = p.entry;
        if (e === undefined) throw new StoreError('STORE_INVALID_ARGUMENT', `ForwardRequest.points[${i}].entry is missing`);
        return p.deleted ? { key: e.key, deleted: true as const } : { key: e.key, record: { value: e.value, etag: e.etag, updatedAtMs: e.updatedAtMs, expiresAtMs: e.expiresAtMs } };
      }),
    },
  };
}

/** Bytes a forward takes on the wire (its encoded ForwardRequest): for the bench's bytes forwarded per row. */
export function forwardWireBytes(message: ForwardMessage): number {
  return ForwardRequest.encode(forwardToProto(message)).finish().length;
}

export function forwardAckToProto(ack: ForwardAck): ForwardResponse {
  return { seq: ack.seq, hops: ack.hops };
}

function forwardAckFromProto(reply: ForwardResponse): ForwardAck {
  return { seq: reply.seq, hops: reply.hops.map((h) => ({ node: h.node, writeMs: h.writeMs, forwardMs: h.forwardMs })) };
}
