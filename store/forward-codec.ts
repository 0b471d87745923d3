import {
  ForwardRequest,
  ForwardResponse,
  type ForwardPoint,
  type ForwardWrite,
  type PackedRows,
} from './proto/gen/shardpipe/store/v1/store.js';
import type { BatchBufferPool } from '../common/index.js';
import { varintSize } from './wire-varint.js';
import {
  FALLBACK,
  In,
  Out,
  bytesOf,
  decodeWith,
  encodeWith,
  entrySize,
  forwardHopSize,
  lenFieldSize,
  once,
  readEntry,
  readForwardHop,
  u32,
  u64,
  writeEntry,
} from './point-codec.js';

/*
 * Hand codecs for the chain's Forward call (ForwardRequest, ForwardResponse), byte for byte the
 * generated ones' wire form (test/unit/forward-codec.test.ts compares both ways with random
 * messages); the rules are point-codec.ts's. A bulk forward is mostly one packed batch (up to 4 MiB
 * per call): the generated encoder copies its bytes at every fork/join level, in finish() and again
 * in Buffer.from (about four copies per hop), and its decoder copies every bytes field. Here a
 * request is sized first and its packed bytes copied once into the one buffer sent; received, they
 * stay views of the message grpc-js handed over — a replica passes the batch it got on to its
 * successor without decoding rows or re-encoding it.
 */

function stringSize(s: unknown): number {
  if (typeof s !== 'string') throw FALLBACK;
  return s === '' ? 0 : lenFieldSize(Buffer.byteLength(s, 'utf8'));
}

function packedRowsSize(m: PackedRows): number {
  let s = 0;
  if (u32(m.format) !== 0) s += 1 + varintSize(m.format);
  if (u32(m.count) !== 0) s += 1 + varintSize(m.count);
  if (bytesOf(m.lengths).length !== 0) s += lenFieldSize(m.lengths.length);
  if (bytesOf(m.data).length !== 0) s += lenFieldSize(m.data.length);
  if (bytesOf(m.meta).length !== 0) s += lenFieldSize(m.meta.length);
  return s;
}

function forwardPointSize(m: ForwardPoint): number {
  if (typeof m.deleted !== 'boolean') throw FALLBACK;
  let s = m.deleted ? 2 : 0;
  if (m.entry !== undefined) s += lenFieldSize(entrySize(m.entry));
  return s;
}

/** Size of the fields a request and a ForwardWrite share (packed, first_etag, now_ms, points), by the request's tags. */
function writeFieldsSize(m: Pick<ForwardRequest, 'packed' | 'firstEtag' | 'nowMs' | 'points'>): number {
  let s = 0;
  if (m.packed !== undefined) s += lenFieldSize(packedRowsSize(m.packed));
  if (u64(m.firstEtag) !== 0) s += 1 + varintSize(m.firstEtag);
  if (u64(m.nowMs) !== 0) s += 1 + varintSize(m.nowMs);
  if (!Array.isArray(m.points)) throw FALLBACK;
  for (const p of m.points) s += lenFieldSize(forwardPointSize(p));
  return s;
}

function forwardWriteSize(m: ForwardWrite): number {
  let s = writeFieldsSize(m);
  if (u64(m.seq) !== 0) s += 1 + varintSize(m.seq);
  if (u64(m.headSeq) !== 0) s += 1 + varintSize(m.headSeq);
  return s;
}

function forwardRequestSize(m: ForwardRequest): number {
  let s = writeFieldsSize(m);
  if (u32(m.partitionId) !== 0) s += 1 + varintSize(m.partitionId);
  if (u64(m.epoch) !== 0) s += 1 + varintSize(m.epoch);
  s += stringSize(m.from) + stringSize(m.streamId);
  if (u64(m.seq) !== 0) s += 1 + varintSize(m.seq);
  if (u64(m.headSeq) !== 0) s += 1 + varintSize(m.headSeq);
  if (!Array.isArray(m.more)) throw FALLBACK;
  for (const w of m.more) s += lenFieldSize(forwardWriteSize(w));
  return s;
}

/** Deepest `more` nesting the hand codec writes or reads in a ForwardResponse (a node sends 1). */
const MAX_RESPONSE_DEPTH = 4;

function forwardResponseSize(m: ForwardResponse, depth = 0): number {
  if (depth > MAX_RESPONSE_DEPTH || !Array.isArray(m.hops) || !Array.isArray(m.more)) throw FALLBACK;
  let s = 0;
  if (u64(m.seq) !== 0) s += 1 + varintSize(m.seq);
  for (const hop of m.hops) s += lenFieldSize(forwardHopSize(hop));
  for (const more of m.more) s += lenFieldSize(forwardResponseSize(more, depth + 1));
  return s;
}

function writeString(o: Out, tag: number, s: string): void {
  if (s !== '') o.string(tag, s, Buffer.byteLength(s, 'utf8'));
}

function writePackedRows(o: Out, tag: number, m: PackedRows): void {
  o.u(tag, packedRowsSize(m));
  if (m.format !== 0) o.u(8, m.format);
  if (m.count !== 0) o.u(16, m.count);
  if (m.lengths.length !== 0) o.bytes(26, m.lengths);
  if (m.data.length !== 0) o.bytes(34, m.data);
  if (m.meta.length !== 0) o.bytes(42, m.meta);
}

function writePoints(o: Out, tag: number, points: readonly ForwardPoint[]): void {
  for (const p of points) {
    o.u(tag, forwardPointSize(p));
    if (p.entry !== undefined) {
      o.u(10, entrySize(p.entry));
      writeEntry(o, p.entry);
    }
    if (p.deleted) o.u(16, 1);
  }
}

function writeForwardWrite(o: Out, m: ForwardWrite): void {
  if (m.seq !== 0) o.u(8, m.seq);
  if (m.packed !== undefined) writePackedRows(o, 18, m.packed);
  if (m.firstEtag !== 0) o.u(24, m.firstEtag);
  if (m.nowMs !== 0) o.u(32, m.nowMs);
  writePoints(o, 42, m.points);
  if (m.headSeq !== 0) o.u(48, m.headSeq);
}

function writeForwardRequest(o: Out, m: ForwardRequest): void {
  if (m.partitionId !== 0) o.u(8, m.partitionId);
  if (m.epoch !== 0) o.u(16, m.epoch);
  writeString(o, 26, m.from);
  writeString(o, 34, m.streamId);
  if (m.seq !== 0) o.u(40, m.seq);
  if (m.packed !== undefined) writePackedRows(o, 50, m.packed);
  if (m.firstEtag !== 0) o.u(56, m.firstEtag);
  if (m.nowMs !== 0) o.u(64, m.nowMs);
  writePoints(o, 74, m.points);
  if (m.headSeq !== 0) o.u(80, m.headSeq);
  for (const w of m.more) {
    o.u(90, forwardWriteSize(w));
    writeForwardWrite(o, w);
  }
}

function writeForwardResponse(o: Out, m: ForwardResponse): void {
  if (m.seq !== 0) o.u(8, m.seq);
  for (const hop of m.hops) {
    o.u(18, forwardHopSize(hop));
    writeString(o, 10, hop.node);
    if (hop.writeMs !== 0) o.double(17, hop.writeMs);
    if (hop.forwardMs !== 0) o.double(25, hop.forwardMs);
  }
  for (const more of m.more) {
    o.u(26, forwardResponseSize(more));
    writeForwardResponse(o, more);
  }
}

/** Requests to encode into a pooled buffer (see encodeForwardRequestPooled), and the buffer each got. */
const encodePools = new WeakMap<ForwardRequest, BatchBufferPool>();
const pooledOutputs = new WeakMap<ForwardRequest, Buffer>();
/** Smaller requests (point writes) take Node's own slab allocation; pooling pays for batches. */
const POOL_MIN_BYTES = 64 * 1024;

/**
 * Has `encodeForwardRequest` write this request into a buffer from `pool` (the gRPC serializer
 * sees only the request), taken in a power-of-two size so batches of varying size reuse the same
 * buffers. Give it back with `releaseEncodedForwardRequest` once the call succeeded: the receiver
 * answers only after reading the whole request, so grpc-js has copied the bytes into its frame by
 * then. After a failure nothing is given back (the GC takes it).
 */
export function encodeForwardRequestPooled(request: ForwardRequest, pool: BatchBufferPool): ForwardRequest {
  encodePools.set(request, pool);
  return request;
}

/** Gives the buffer a pooled request was encoded into back to its pool (once; a no-op otherwise). */
export function releaseEncodedForwardRequest(request: ForwardRequest): void {
  const out = pooledOutputs.get(request);
  if (out === undefined) return;
  pooledOutputs.delete(request);
  encodePools.get(request)?.give(out);
}

function fastForwardRequest(m: ForwardRequest): Buffer {
  const size = forwardRequestSize(m);
  const pool = size >= POOL_MIN_BYTES ? encodePools.get(m) : undefined;
  const into = pool?.take(2 ** Math.ceil(Math.log2(size))).subarray(0, size);
  if (into !== undefined) pooledOutputs.set(m, into);
  const o = new Out(size, into);
  writeForwardRequest(o, m);
  return o.buf;
}

function fastForwardResponse(m: ForwardResponse): Buffer {
  const o = new Out(forwardResponseSize(m));
  writeForwardResponse(o, m);
  return o.buf;
}

/** A ForwardRequest's wire bytes, its packed batches copied once (the generated encoder for what it cannot write exactly). */
export const encodeForwardRequest = (m: ForwardRequest): Buffer => encodeWith(fastForwardRequest, ForwardRequest, m);
/** A ForwardResponse's wire bytes. */
export const encodeForwardResponse = (m: ForwardResponse): Buffer => encodeWith(fastForwardResponse, ForwardResponse, m);

// ---- decoders ----

function readPackedRows(r: In): PackedRows {
  const m: PackedRows = { format: 0, count: 0, lengths: Buffer.alloc(0), data: Buffer.alloc(0), meta: Buffer.alloc(0) };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.format = r.u32();
    else if (tag === 16) m.count = r.u32();
    else if (tag === 26) m.lengths = r.bytes();
    else if (tag === 34) m.data = r.bytes();
    else if (tag === 42) m.meta = r.bytes();
    else throw FALLBACK;
  }
  return m;
}

function readForwardPoint(r: In): ForwardPoint {
  const m: ForwardPoint = { entry: undefined, deleted: false };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 10) m.entry = readEntry(r.sub());
    else if (tag === 16) m.deleted = r.bool();
    else throw FALLBACK;
  }
  return m;
}

function readForwardWrite(r: In): ForwardWrite {
  const m: ForwardWrite = { seq: 0, packed: undefined, firstEtag: 0, nowMs: 0, points: [], headSeq: 0 };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    // points (5) is repeated: it may come any number of times.
    if (tag === 42) {
      m.points.push(readForwardPoint(r.sub()));
      continue;
    }
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.seq = r.varint();
    else if (tag === 18) m.packed = readPackedRows(r.sub());
    else if (tag === 24) m.firstEtag = r.varint();
    else if (tag === 32) m.nowMs = r.varint();
    else if (tag === 48) m.headSeq = r.varint();
    else throw FALLBACK;
  }
  return m;
}

function readForwardRequest(r: In): ForwardRequest {
  const m: ForwardRequest = { partitionId: 0, epoch: 0, from: '', streamId: '', seq: 0, packed: undefined, firstEtag: 0, nowMs: 0, points: [], headSeq: 0, more: [] };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    // points (9) and more (11) are repeated: they may come any number of times.
    if (tag === 74) {
      m.points.push(readForwardPoint(r.sub()));
      continue;
    }
    if (tag === 90) {
      m.more.push(readForwardWrite(r.sub()));
      continue;
    }
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.partitionId = r.u32();
    else if (tag === 16) m.epoch = r.varint();
    else if (tag === 26) m.from = r.string();
    else if (tag === 34) m.streamId = r.string();
    else if (tag === 40) m.seq = r.varint();
    else if (tag === 50) m.packed = readPackedRows(r.sub());
    else if (tag === 56) m.firstEtag = r.varint();
    else if (tag === 64) m.nowMs = r.varint();
    else if (tag === 80) m.headSeq = r.varint();
    else throw FALLBACK;
  }
  return m;
}

function readForwardResponse(r: In, depth = 0): ForwardResponse {
  if (depth > MAX_RESPONSE_DEPTH) throw FALLBACK;
  const m: ForwardResponse = { seq: 0, hops: [], more: [] };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    if (tag === 18) {
      m.hops.push(readForwardHop(r.sub()));
      continue;
    }
    if (tag === 26) {
      m.more.push(readForwardResponse(r.sub(), depth + 1));
      continue;
    }
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.seq = r.varint();
    else throw FALLBACK;
  }
  return m;
}

/**
 * A ForwardRequest in the canonical form, its packed batches' `lengths`, `data` and `meta` as views
 * of `bytes`; undefined otherwise (the generated decoder then takes it, with its answers).
 */
export const decodeForwardRequest = decodeWith(readForwardRequest);
/** A ForwardResponse in the canonical form; undefined otherwise. */
export const decodeForwardResponse = decodeWith((r) => readForwardResponse(r));

/** The generated message codecs the hand ones match (their fallback, and the test's reference). */
export const FORWARD_GENERATED = { request: ForwardRequest, response: ForwardResponse } as const;

