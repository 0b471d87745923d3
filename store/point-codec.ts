import {
  GetRequest,
  GetResponse,
  MultiRequest,
  MultiResponse,
  PutRequest,
  PutResponse,
  type DeleteRequest,
  type DeleteResponse,
  type Entry,
  type ForwardHop,
  type MultiOp,
  type MultiResult,
  type ServerTiming,
} from './proto/gen/shardpipe/store/v1/store.js';
import { varintSize, writeVarint } from './wire-varint.js';

/*
 * Hand codecs for the point-operation messages (Get, Put, Multi; with the writes' ServerTiming), byte for byte the generated
 * ones' wire form (test/unit/point-codec.test.ts compares both ways with random messages). They
 * exist because the generated code goes through a BinaryWriter with a fork per sub-message, turns
 * every uint64 into a string and back, and copies every bytes field: here a message is sized first
 * and written into one buffer, integers stay numbers, and decoded bytes fields are views of the
 * received message.
 *
 * Encoders take the generated code's path for anything they do not handle exactly (an integer that
 * is not a safe non-negative one, a field of the wrong type). Decoders take only the canonical
 * form — each field once, known fields with their wire type, integers within 2^53 − 1, bools 0/1 —
 * and return undefined for anything else, so the generated decoder answers odd or malformed
 * messages exactly as before (including the errors the node turns into INVALID_ARGUMENT).
 * forward-codec.ts builds the chain's Forward codec from the exported pieces below.
 */

const TEXT_ENCODER = new TextEncoder();
const TEXT_DECODER = new TextDecoder();
const EMPTY = Buffer.alloc(0);

/** Thrown inside an encoder or decoder to hand the message to the generated code. */
export const FALLBACK = Symbol('point codec fallback');

export function u64(n: unknown): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw FALLBACK;
  return n;
}

export function u32(n: unknown): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 0xffffffff) throw FALLBACK;
  return n;
}

export function bytesOf(b: unknown): Uint8Array {
  if (!(b instanceof Uint8Array)) throw FALLBACK;
  return b;
}

/** Size of a length-delimited field of `len` bytes with a one-byte tag. */
export function lenFieldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

/** An output buffer written front to back. */
export class Out {
  readonly buf: Buffer;
  pos = 0;
  /** `into`: a buffer of exactly `size` bytes to write into instead of a new one. */
  constructor(size: number, into?: Buffer) {
    this.buf = into ?? Buffer.allocUnsafe(size);
  }
  varint(n: number): void {
    this.pos = writeVarint(this.buf, this.pos, n);
  }
  bytes(tag: number, b: Uint8Array): void {
    this.buf[this.pos++] = tag;
    this.varint(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  u(tag: number, n: number): void {
    this.buf[this.pos++] = tag;
    this.varint(n);
  }
  double(tag: number, n: number): void {
    this.buf[this.pos++] = tag;
    this.buf.writeDoubleLE(n, this.pos);
    this.pos += 8;
  }
  string(tag: number, s: string, byteLength: number): void {
    this.buf[this.pos++] = tag;
    this.varint(byteLength);
    this.pos += this.buf.write(s, this.pos, byteLength, 'utf8');
  }
}

// ---- sizes (each also checks its message's field types, throwing FALLBACK) ----

function getRequestSize(m: GetRequest): number {
  // A partial get (JSON Pointers) is rare: the generated encoder writes it.
  if (m.fields !== undefined && m.fields.length > 0) throw FALLBACK;
  let s = 0;
  if (u64(m.mapVersion) !== 0) s += 1 + varintSize(m.mapVersion);
  if (bytesOf(m.key).length !== 0) s += lenFieldSize(m.key.length);
  return s;
}

function putRequestSize(m: PutRequest): number {
  let s = 0;
  if (u64(m.mapVersion) !== 0) s += 1 + varintSize(m.mapVersion);
  if (bytesOf(m.key).length !== 0) s += lenFieldSize(m.key.length);
  if (bytesOf(m.value).length !== 0) s += lenFieldSize(m.value.length);
  if (m.expectedEtag !== undefined) s += 1 + varintSize(u64(m.expectedEtag));
  if (u64(m.ttlMs) !== 0) s += 1 + varintSize(m.ttlMs);
  return s;
}

function deleteRequestSize(m: DeleteRequest): number {
  let s = 0;
  if (u64(m.mapVersion) !== 0) s += 1 + varintSize(m.mapVersion);
  if (bytesOf(m.key).length !== 0) s += lenFieldSize(m.key.length);
  if (m.expectedEtag !== undefined) s += 1 + varintSize(u64(m.expectedEtag));
  return s;
}

export function entrySize(m: Entry): number {
  let s = 0;
  if (bytesOf(m.key).length !== 0) s += lenFieldSize(m.key.length);
  if (bytesOf(m.value).length !== 0) s += lenFieldSize(m.value.length);
  if (u64(m.etag) !== 0) s += 1 + varintSize(m.etag);
  if (u64(m.updatedAtMs) !== 0) s += 1 + varintSize(m.updatedAtMs);
  if (u64(m.expiresAtMs) !== 0) s += 1 + varintSize(m.expiresAtMs);
  return s;
}

function getResponseSize(m: GetResponse): number {
  let s = 0;
  if (typeof m.found !== 'boolean') throw FALLBACK;
  if (m.found) s += 2;
  if (m.entry !== undefined) s += lenFieldSize(entrySize(m.entry));
  return s;
}

function doubleOf(n: unknown): number {
  if (typeof n !== 'number') throw FALLBACK;
  return n;
}

/** A field the generated encoder writes when `n !== 0` (so not -0 either): tag + 8 bytes. */
export function doubleFieldSize(n: unknown): number {
  return doubleOf(n) !== 0 ? 9 : 0;
}

export function forwardHopSize(m: ForwardHop): number {
  if (typeof m.node !== 'string') throw FALLBACK;
  let s = 0;
  if (m.node !== '') s += lenFieldSize(Buffer.byteLength(m.node, 'utf8'));
  return s + doubleFieldSize(m.writeMs) + doubleFieldSize(m.forwardMs);
}

function serverTimingSize(m: ServerTiming): number {
  if (!Array.isArray(m.hops)) throw FALLBACK;
  let s = doubleFieldSize(m.queueMs) + doubleFieldSize(m.writeMs) + doubleFieldSize(m.fsyncMs) + doubleFieldSize(m.forwardMs);
  for (const hop of m.hops) s += lenFieldSize(forwardHopSize(hop));
  return s;
}

function putResponseSize(m: PutResponse): number {
  let s = 0;
  if (u64(m.etag) !== 0) s += 1 + varintSize(m.etag);
  if (u64(m.updatedAtMs) !== 0) s += 1 + varintSize(m.updatedAtMs);
  if (u64(m.expiresAtMs) !== 0) s += 1 + varintSize(m.expiresAtMs);
  if (m.timing !== undefined) s += lenFieldSize(serverTimingSize(m.timing));
  return s;
}

function deleteResponseSize(m: DeleteResponse): number {
  if (typeof m.deleted !== 'boolean') throw FALLBACK;
  let s = m.deleted ? 2 : 0;
  if (m.timing !== undefined) s += lenFieldSize(serverTimingSize(m.timing));
  return s;
}

function multiOpSize(m: MultiOp): number {
  let s = 0;
  if (m.get !== undefined) s += lenFieldSize(getRequestSize(m.get));
  if (m.put !== undefined) s += lenFieldSize(putRequestSize(m.put));
  if (m.delete !== undefined) s += lenFieldSize(deleteRequestSize(m.delete));
  return s;
}

/** A result's strings, UTF-8 encoded once (set on errors only). */
interface ResultStrings {
  errorCode: Uint8Array;
  message: Uint8Array;
}

function stringBytes(s: unknown): Uint8Array {
  if (typeof s !== 'string') throw FALLBACK;
  return s === '' ? EMPTY : TEXT_ENCODER.encode(s);
}

function multiResultSize(m: MultiResult, strings: ResultStrings): number {
  let s = 0;
  if (u32(m.code) !== 0) s += 1 + varintSize(m.code);
  if (strings.errorCode.length !== 0) s += lenFieldSize(strings.errorCode.length);
  if (strings.message.length !== 0) s += lenFieldSize(strings.message.length);
  if (m.currentEtag !== undefined) s += 1 + varintSize(u64(m.currentEtag));
  if (m.mapVersion !== undefined) s += 1 + varintSize(u64(m.mapVersion));
  if (m.get !== undefined) s += lenFieldSize(getResponseSize(m.get));
  if (m.put !== undefined) s += lenFieldSize(putResponseSize(m.put));
  if (m.delete !== undefined) s += lenFieldSize(deleteResponseSize(m.delete));
  if (m.retryAfterMs !== undefined) s += 1 + varintSize(u64(m.retryAfterMs));
  return s;
}

// ---- writers (after the sizes passed, so types are known good) ----

function writeGetRequest(o: Out, m: GetRequest): void {
  if (m.mapVersion !== 0) o.u(8, m.mapVersion);
  if (m.key.length !== 0) o.bytes(18, m.key);
}

function writePutRequest(o: Out, m: PutRequest): void {
  if (m.mapVersion !== 0) o.u(8, m.mapVersion);
  if (m.key.length !== 0) o.bytes(18, m.key);
  if (m.value.length !== 0) o.bytes(26, m.value);
  if (m.expectedEtag !== undefined) o.u(32, m.expectedEtag);
  if (m.ttlMs !== 0) o.u(40, m.ttlMs);
}

function writeDeleteRequest(o: Out, m: DeleteRequest): void {
  if (m.mapVersion !== 0) o.u(8, m.mapVersion);
  if (m.key.length !== 0) o.bytes(18, m.key);
  if (m.expectedEtag !== undefined) o.u(24, m.expectedEtag);
}

export function writeEntry(o: Out, m: Entry): void {
  if (m.key.length !== 0) o.bytes(10, m.key);
  if (m.value.length !== 0) o.bytes(18, m.value);
  if (m.etag !== 0) o.u(24, m.etag);
  if (m.updatedAtMs !== 0) o.u(32, m.updatedAtMs);
  if (m.expiresAtMs !== 0) o.u(40, m.expiresAtMs);
}

function writeGetResponse(o: Out, m: GetResponse): void {
  if (m.found) o.u(8, 1);
  if (m.entry !== undefined) {
    o.u(18, entrySize(m.entry));
    writeEntry(o, m.entry);
  }
}

function writeServerTiming(o: Out, m: ServerTiming): void {
  if (m.queueMs !== 0) o.double(9, m.queueMs);
  if (m.writeMs !== 0) o.double(17, m.writeMs);
  if (m.fsyncMs !== 0) o.double(25, m.fsyncMs);
  if (m.forwardMs !== 0) o.double(33, m.forwardMs);
  for (const hop of m.hops) {
    o.u(42, forwardHopSize(hop));
    if (hop.node !== '') o.string(10, hop.node, Buffer.byteLength(hop.node, 'utf8'));
    if (hop.writeMs !== 0) o.double(17, hop.writeMs);
    if (hop.forwardMs !== 0) o.double(25, hop.forwardMs);
  }
}

function writeTimingField(o: Out, tag: number, m: ServerTiming | undefined): void {
  if (m === undefined) return;
  o.u(tag, serverTimingSize(m));
  writeServerTiming(o, m);
}

function writePutResponse(o: Out, m: PutResponse): void {
  if (m.etag !== 0) o.u(8, m.etag);
  if (m.updatedAtMs !== 0) o.u(16, m.updatedAtMs);
  if (m.expiresAtMs !== 0) o.u(24, m.expiresAtMs);
  writeTimingField(o, 34, m.timing);
}

function writeMultiOp(o: Out, m: MultiOp): void {
  if (m.get !== undefined) {
    o.u(10, getRequestSize(m.get));
    writeGetRequest(o, m.get);
  }
  if (m.put !== undefined) {
    o.u(18, putRequestSize(m.put));
    writePutRequest(o, m.put);
  }
  if (m.delete !== undefined) {
    o.u(26, deleteRequestSize(m.delete));
    writeDeleteRequest(o, m.delete);
  }
}

function writeMultiResult(o: Out, m: MultiResult, strings: ResultStrings): void {
  if (m.code !== 0) o.u(8, m.code);
  if (strings.errorCode.length !== 0) o.bytes(18, strings.errorCode);
  if (strings.message.length !== 0) o.bytes(26, strings.message);
  if (m.currentEtag !== undefined) o.u(32, m.currentEtag);
  if (m.mapVersion !== undefined) o.u(40, m.mapVersion);
  if (m.get !== undefined) {
    o.u(50, getResponseSize(m.get));
    writeGetResponse(o, m.get);
  }
  if (m.put !== undefined) {
    o.u(58, putResponseSize(m.put));
    writePutResponse(o, m.put);
  }
  if (m.delete !== undefined) {
    o.u(66, deleteResponseSize(m.delete));
    if (m.delete.deleted) o.u(8, 1);
    writeTimingField(o, 18, m.delete.timing);
  }
  if (m.retryAfterMs !== undefined) o.u(72, m.retryAfterMs);
}

/** Runs a hand encoder; the generated encoder takes over when it throws FALLBACK. */
export function encodeWith<T>(fast: (m: T) => Buffer, generated: { encode(m: T): { finish(): Uint8Array } }, m: T): Buffer {
  try {
    return fast(m);
  } catch (err) {
    if (err !== FALLBACK) throw err;
    return Buffer.from(generated.encode(m).finish());
  }
}

function sized<T>(size: (m: T) => number, write: (o: Out, m: T) => void): (m: T) => Buffer {
  return (m) => {
    const o = new Out(size(m));
    write(o, m);
    return o.buf;
  };
}

const fastGetRequest = sized(getRequestSize, writeGetRequest);
const fastGetResponse = sized(getResponseSize, writeGetResponse);
const fastPutRequest = sized(putRequestSize, writePutRequest);
const fastPutResponse = sized(putResponseSize, writePutResponse);

function fastMultiRequest(m: MultiRequest): Buffer {
  const ops = m.ops;
  if (!Array.isArray(ops)) throw FALLBACK;
  const sizes = new Array<number>(ops.length);
  let total = 0;
  for (let i = 0; i < ops.length; i++) {
    const s = multiOpSize(ops[i]!);
    sizes[i] = s;
    total += lenFieldSize(s);
  }
  const o = new Out(total);
  for (let i = 0; i < ops.length; i++) {
    o.u(10, sizes[i]!);
    writeMultiOp(o, ops[i]!);
  }
  return o.buf;
}

function fastMultiResponse(m: MultiResponse): Buffer {
  const results = m.results;
  if (!Array.isArray(results)) throw FALLBACK;
  const sizes = new Array<number>(results.length);
  const strings = new Array<ResultStrings>(results.length);
  let total = 0;
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!;
    const str = { errorCode: stringBytes(r.errorCode), message: stringBytes(r.message) };
    const s = multiResultSize(r, str);
    strings[i] = str;
    sizes[i] = s;
    total += lenFieldSize(s);
  }
  const o = new Out(total);
  for (let i = 0; i < results.length; i++) {
    o.u(10, sizes[i]!);
    writeMultiResult(o, results[i]!, strings[i]!);
  }
  return o.buf;
}

/** GetRequest on the wire (as GetRequest.encode). */
export const encodeGetRequest = (m: GetRequest): Buffer => encodeWith(fastGetRequest, GetRequest, m);
/** GetResponse on the wire (as GetResponse.encode). */
export const encodeGetResponse = (m: GetResponse): Buffer => encodeWith(fastGetResponse, GetResponse, m);
/** PutRequest on the wire (as PutRequest.encode). */
export const encodePutRequest = (m: PutRequest): Buffer => encodeWith(fastPutRequest, PutRequest, m);
/** PutResponse on the wire (as PutResponse.encode). */
export const encodePutResponse = (m: PutResponse): Buffer => encodeWith(fastPutResponse, PutResponse, m);
/** MultiRequest on the wire (as MultiRequest.encode). */
export const encodeMultiRequest = (m: MultiRequest): Buffer => encodeWith(fastMultiRequest, MultiRequest, m);
/** MultiResponse on the wire (as MultiResponse.encode). */
export const encodeMultiResponse = (m: MultiResponse): Buffer => encodeWith(fastMultiResponse, MultiResponse, m);

// ---- decoders ----

/** A cursor over a received message; every read throws FALLBACK on anything non-canonical. */
export class In {
  pos: number;
  constructor(
    readonly buf: Buffer,
    pos: number,
    readonly end: number,
  ) {
    this.pos = pos;
  }
  more(): boolean {
    return this.pos < this.end;
  }
  /** A varint up to 2^53 − 1. */
  varint(): number {
    const buf = this.buf;
    let n = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.end) throw FALLBACK;
      const b = buf[this.pos++]!;
      n += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (n > Number.MAX_SAFE_INTEGER) throw FALLBACK;
        return n;
      }
      scale *= 128;
    }
    throw FALLBACK;
  }
  /** A one-byte tag of a field 1–15. */
  tag(): number {
    const t = this.buf[this.pos++]!;
    if (t >= 0x80) throw FALLBACK;
    return t;
  }
  /** The extent of a length-delimited field; the cursor moves past it. */
  sub(): In {
    const len = this.varint();
    const start = this.pos;
    if (len > this.end - start) throw FALLBACK;
    this.pos = start + len;
    return new In(this.buf, start, start + len);
  }
  bytes(): Buffer {
    const len = this.varint();
    const start = this.pos;
    if (len > this.end - start) throw FALLBACK;
    this.pos = start + len;
    return len === 0 ? Buffer.alloc(0) : this.buf.subarray(start, start + len);
  }
  string(): string {
    const len = this.varint();
    const start = this.pos;
    if (len > this.end - start) throw FALLBACK;
    this.pos = start + len;
    return TEXT_DECODER.decode(this.buf.subarray(start, start + len));
  }
  bool(): boolean {
    if (this.pos >= this.end) throw FALLBACK;
    const b = this.buf[this.pos++];
    if (b !== 0 && b !== 1) throw FALLBACK;
    return b === 1;
  }
  u32(): number {
    const n = this.varint();
    if (n > 0xffffffff) throw FALLBACK;
    return n;
  }
  double(): number {
    if (this.end - this.pos < 8) throw FALLBACK;
    const n = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return n;
  }
}

/** Marks field `field` seen in `seen` (a bit set); a field seen twice is not canonical. */
export function once(seen: number, field: number): number {
  const bit = 1 << field;
  if (seen & bit) throw FALLBACK;
  return seen | bit;
}

function readGetRequest(r: In): GetRequest {
  const m: GetRequest = { mapVersion: 0, key: Buffer.alloc(0), fields: [] };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    // fields (3) is repeated: it may come any number of times.
    if (tag === 26) {
      m.fields.push(r.string());
      continue;
    }
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.mapVersion = r.varint();
    else if (tag === 18) m.key = r.bytes();
    else throw FALLBACK;
  }
  return m;
}

function readPutRequest(r: In): PutRequest {
  const m: PutRequest = { mapVersion: 0, key: Buffer.alloc(0), value: Buffer.alloc(0), expectedEtag: undefined, ttlMs: 0 };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.mapVersion = r.varint();
    else if (tag === 18) m.key = r.bytes();
    else if (tag === 26) m.value = r.bytes();
    else if (tag === 32) m.expectedEtag = r.varint();
    else if (tag === 40) m.ttlMs = r.varint();
    else throw FALLBACK;
  }
  return m;
}

function readDeleteRequest(r: In): DeleteRequest {
  const m: DeleteRequest = { mapVersion: 0, key: Buffer.alloc(0), expectedEtag: undefined };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.mapVersion = r.varint();
    else if (tag === 18) m.key = r.bytes();
    else if (tag === 24) m.expectedEtag = r.varint();
    else throw FALLBACK;
  }
  return m;
}

export function readEntry(r: In): Entry {
  const m: Entry = { key: Buffer.alloc(0), value: Buffer.alloc(0), etag: 0, updatedAtMs: 0, expiresAtMs: 0 };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 10) m.key = r.bytes();
    else if (tag === 18) m.value = r.bytes();
    else if (tag === 24) m.etag = r.varint();
    else if (tag === 32) m.updatedAtMs = r.varint();
    else if (tag === 40) m.expiresAtMs = r.varint();
    else throw FALLBACK;
  }
  return m;
}

function readGetResponse(r: In): GetResponse {
  const m: GetResponse = { found: false, entry: undefined };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.found = r.bool();
    else if (tag === 18) m.entry = readEntry(r.sub());
    else throw FALLBACK;
  }
  return m;
}

export function readForwardHop(r: In): ForwardHop {
  const m: ForwardHop = { node: '', writeMs: 0, forwardMs: 0 };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 10) m.node = r.string();
    else if (tag === 17) m.writeMs = r.double();
    else if (tag === 25) m.forwardMs = r.double();
    else throw FALLBACK;
  }
  return m;
}

function readServerTiming(r: In): ServerTiming {
  const m: ServerTiming = { queueMs: 0, writeMs: 0, fsyncMs: 0, forwardMs: 0, hops: [] };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    // hops (5) is repeated: it may come any number of times.
    if (tag === 42) {
      m.hops.push(readForwardHop(r.sub()));
      continue;
    }
    seen = once(seen, tag >>> 3);
    if (tag === 9) m.queueMs = r.double();
    else if (tag === 17) m.writeMs = r.double();
    else if (tag === 25) m.fsyncMs = r.double();
    else if (tag === 33) m.forwardMs = r.double();
    else throw FALLBACK;
  }
  return m;
}

function readPutResponse(r: In): PutResponse {
  const m: PutResponse = { etag: 0, updatedAtMs: 0, expiresAtMs: 0, timing: undefined };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.etag = r.varint();
    else if (tag === 16) m.updatedAtMs = r.varint();
    else if (tag === 24) m.expiresAtMs = r.varint();
    else if (tag === 34) m.timing = readServerTiming(r.sub());
    else throw FALLBACK;
  }
  return m;
}

function readDeleteResponse(r: In): DeleteResponse {
  const m: DeleteResponse = { deleted: false, timing: undefined };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.deleted = r.bool();
    else if (tag === 18) m.timing = readServerTiming(r.sub());
    else throw FALLBACK;
  }
  return m;
}

function readMultiOp(r: In): MultiOp {
  const m: MultiOp = { get: undefined, put: undefined, delete: undefined };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 10) m.get = readGetRequest(r.sub());
    else if (tag === 18) m.put = readPutRequest(r.sub());
    else if (tag === 26) m.delete = readDeleteRequest(r.sub());
    else throw FALLBACK;
  }
  return m;
}

function readMultiResult(r: In): MultiResult {
  const m: MultiResult = {
    code: 0,
    errorCode: '',
    message: '',
    currentEtag: undefined,
    mapVersion: undefined,
    get: undefined,
    put: undefined,
    delete: undefined,
    retryAfterMs: undefined,
  };
  let seen = 0;
  while (r.more()) {
    const tag = r.tag();
    seen = once(seen, tag >>> 3);
    if (tag === 8) m.code = r.u32();
    else if (tag === 18) m.errorCode = r.string();
    else if (tag === 26) m.message = r.string();
    else if (tag === 32) m.currentEtag = r.varint();
    else if (tag === 40) m.mapVersion = r.varint();
    else if (tag === 50) m.get = readGetResponse(r.sub());
    else if (tag === 58) m.put = readPutResponse(r.sub());
    else if (tag === 66) m.delete = readDeleteResponse(r.sub());
    else if (tag === 72) m.retryAfterMs = r.varint();
    else throw FALLBACK;
  }
  return m;
}

function readMultiRequest(r: In): MultiRequest {
  const ops: MultiOp[] = [];
  while (r.more()) {
    if (r.tag() !== 10) throw FALLBACK;
    ops.push(readMultiOp(r.sub()));
  }
  return { ops };
}

function readMultiResponse(r: In): MultiResponse {
  const results: MultiResult[] = [];
  while (r.more()) {
    if (r.tag() !== 10) throw FALLBACK;
    results.push(readMultiResult(r.sub()));
  }
  return { results };
}

export function decodeWith<T>(read: (r: In) => T): (bytes: Buffer) => T | undefined {
  return (bytes) => {
    try {
      return read(new In(bytes, 0, bytes.length));
    } catch (err) {
      if (err !== FALLBACK) throw err;
      return undefined;
    }
  };
}

/*
 * Decoders of the canonical form, bytes fields as views of `bytes`; undefined when the message is
 * not in that form (the generated decoder then takes it).
 */
export const decodeGetRequest = decodeWith(readGetRequest);
export const decodeGetResponse = decodeWith(readGetResponse);
export const decodePutRequest = decodeWith(readPutRequest);
export const decodePutResponse = decodeWith(readPutResponse);
export const decodeMultiRequest = decodeWith(readMultiRequest);
export const decodeMultiResponse = decodeWith(readMultiResponse);

/**
 * The hand codecs by service method name, for the client's and the node's service definitions,
 * with the generated message codecs they match (their fallback, and bench/point-codec-bench's baseline).
 */
export const POINT_CODECS = {
  get: { encodeRequest: encodeGetRequest, decodeRequest: decodeGetRequest, encodeResponse: encodeGetResponse, decodeResponse: decodeGetResponse, generated: { request: GetRequest, response: GetResponse } },
  put: { encodeRequest: encodePutRequest, decodeRequest: decodePutRequest, encodeResponse: encodePutResponse, decodeResponse: decodePutResponse, generated: { request: PutRequest, response: PutResponse } },
  multi: {
    encodeRequest: encodeMultiRequest,
    decodeRequest: decodeMultiRequest,
    encodeResponse: encodeMultiResponse,
    decodeResponse: decodeMultiResponse,
    generated: { request: MultiRequest, response: MultiResponse },
  },
} as const;
