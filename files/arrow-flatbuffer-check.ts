/**
 * Bounds checks for the flatbuffers of Arrow IPC metadata (messages and the file footer), run before
 * apache-arrow decodes them. apache-arrow trusts every length it reads: in a damaged file a vector
 * length of 2^31 makes it loop and allocate until the process runs out of memory (seen in fuzzing).
 * This walks only what the decoder will walk — tables, vectors, strings of Message, Schema, Field,
 * RecordBatch, DictionaryBatch, Footer — and throws Error at the first reference outside the buffer,
 * a vector longer than the bytes behind it, nesting deeper than 64, or more than 1,000,000 tables.
 */

/** A record batch or dictionary block of the Arrow file footer. */
export interface ArrowBlock {
  offset: number;
  metaDataLength: number;
  bodyLength: number;
}

const MAX_DEPTH = 64;
const MAX_TABLES = 1_000_000;
const HEADER_SCHEMA = 1;
const HEADER_DICTIONARY_BATCH = 2;
const HEADER_RECORD_BATCH = 3;
const TYPE_UNION = 14;
const FIELD_NODE_BYTES = 16;
const BUFFER_BYTES = 16;
const BLOCK_BYTES = 24;

class Checker {
  readonly #view: DataView;
  #tables = 0;

  constructor(bytes: Uint8Array) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get size(): number {
    return this.#view.byteLength;
  }

  u32(pos: number): number {
    this.#need(pos, 4);
    return this.#view.getUint32(pos, true);
  }

  i64(pos: number): number {
    this.#need(pos, 8);
    const value = this.#view.getBigInt64(pos, true);
    if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`a length of ${value} at byte ${pos}`);
    return Number(value);
  }

  u8(pos: number): number {
    this.#need(pos, 1);
    return this.#view.getUint8(pos);
  }

  /** Position of the table the root offset points to. */
  root(): number {
    return this.#target(0);
  }

  /** Position of field `index` of the table at `table`, or undefined when absent. */
  field(table: number, index: number, depth: number): number | undefined {
    if (depth > MAX_DEPTH) throw new Error(`metadata nested deeper than ${MAX_DEPTH}`);
    if (++this.#tables > MAX_TABLES) throw new Error(`metadata with more than ${MAX_TABLES} tables`);
    this.#need(table, 4);
    const vtable = table - this.#view.getInt32(table, true);
    this.#need(vtable, 4);
    const vtableSize = this.#view.getUint16(vtable, true);
    const entry = 4 + 2 * index;
    if (entry + 2 > vtableSize) return undefined;
    this.#need(vtable, vtableSize);
    const offset = this.#view.getUint16(vtable + entry, true);
    return offset === 0 ? undefined : table + offset;
  }

  /** The table, vector or string a reference field points to. */
  ref(table: number, index: number, depth: number): number | undefined {
    const at = this.field(table, index, depth);
    return at === undefined ? undefined : this.#target(at);
  }

  /** A vector field: its element start and length, with `length × elementBytes` inside the buffer. */
  vector(table: number, index: number, elementBytes: number, depth: number): { start: number; length: number } | undefined {
    const at = this.ref(table, index, depth);
    if (at === undefined) return undefined;
    const length = this.u32(at);
    this.#need(at + 4, length * elementBytes);
    return { start: at + 4, length };
  }

  /** Tables of a vector of tables. */
  *tables(table: number, index: number, depth: number): Generator<number> {
    const vec = this.vector(table, index, 4, depth);
    if (vec === undefined) return;
    for (let i = 0; i < vec.length; i++) yield this.#target(vec.start + 4 * i);
  }

  #target(at: number): number {
    const target = at + this.u32(at);
    this.#need(target, 4);
    return target;
  }

  #need(pos: number, bytes: number): void {
    if (!Number.isSafeInteger(pos) || pos < 0 || bytes < 0 || pos + bytes > this.#view.byteLength) {
      throw new Error(`a reference to bytes ${pos}–${pos + bytes} of ${this.#view.byteLength}-byte metadata`);
    }
  }
}

function checkKeyValues(c: Checker, table: number, index: number, depth: number): void {
  for (const kv of c.tables(table, index, depth)) {
    c.vector(kv, 0, 1, depth + 1);
    c.vector(kv, 1, 1, depth + 1);
  }
}

function checkField(c: Checker, field: number, depth: number): void {
  c.vector(field, 0, 1, depth); // name
  const typeType = c.field(field, 2, depth);
  const type = c.ref(field, 3, depth);
  if (type !== undefined) {
    c.field(type, 0, depth + 1);
    if (typeType !== undefined && c.u8(typeType) === TYPE_UNION) c.vector(type, 1, 4, depth + 1);
  }
  const dictionary = c.ref(field, 4, depth);
  if (dictionary !== undefined) {
    const indexType = c.ref(dictionary, 1, depth + 1);
    if (indexType !== undefined) c.field(indexType, 0, depth + 2);
  }
  for (const child of c.tables(field, 5, depth)) checkField(c, child, depth + 1);
  checkKeyValues(c, field, 6, depth);
}

function checkSchema(c: Checker, schema: number, depth: number): void {
  for (const field of c.tables(schema, 1, depth)) checkField(c, field, depth + 1);
  checkKeyValues(c, schema, 2, depth);
  c.vector(schema, 3, 8, depth);
}

function checkRecordBatch(c: Checker, batch: number, depth: number): void {
  c.vector(batch, 1, FIELD_NODE_BYTES, depth);
  c.vector(batch, 2, BUFFER_BYTES, depth);
  const compression = c.ref(batch, 3, depth);
  if (compression !== undefined) c.field(compression, 0, depth + 1);
  c.vector(batch, 4, 8, depth);
}

/** Throws Error when an IPC message's metadata flatbuffer is not safe to decode. */
export function checkArrowMessage(bytes: Uint8Array): void {
  const c = new Checker(bytes);
  const message = c.root();
  const headerTypeAt = c.field(message, 1, 0);
  const header = c.ref(message, 2, 0);
  checkKeyValues(c, message, 4, 0);
  if (headerTypeAt === undefined || header === undefined) return;
  const headerType = c.u8(headerTypeAt);
  if (headerType === HEADER_SCHEMA) checkSchema(c, header, 1);
  else if (headerType === HEADER_RECORD_BATCH) checkRecordBatch(c, header, 1);
  else if (headerType === HEADER_DICTIONARY_BATCH) {
    const data = c.ref(header, 1, 1);
    if (data !== undefined) checkRecordBatch(c, data, 2);
  }
}

/**
 * Throws Error when the Arrow file footer flatbuffer is not safe to decode; otherwise returns its
 * record batch and dictionary blocks.
 */
export function checkArrowFooter(bytes: Uint8Array): { recordBatches: ArrowBlock[]; dictionaries: ArrowBlock[] } {
  const c = new Checker(bytes);
  const footer = c.root();
  const schema = c.ref(footer, 1, 0);
  if (schema !== undefined) checkSchema(c, schema, 1);
  checkKeyValues(c, footer, 4, 0);
  const blocks = (index: number): ArrowBlock[] => {
    const vec = c.vector(footer, index, BLOCK_BYTES, 0);
    const out: ArrowBlock[] = [];
    if (vec === undefined) return out;
    for (let i = 0; i < vec.length; i++) {
      const at = vec.start + i * BLOCK_BYTES;
      const metaDataLength = c.u32(at + 8);
      out.push({ offset: c.i64(at), metaDataLength, bodyLength: c.i64(at + 16) });
    }
    return out;
  };
  return { dictionaries: blocks(2), recordBatches: blocks(3) };
}
