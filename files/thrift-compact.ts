/**
 * A minimal reader of the Thrift compact protocol that Parquet uses for its footer and page headers,
 * keeping each field's byte range so a value can be rewritten in place (legacy-chunk-sizes.ts).
 * Bounded: lengths and counts are checked against the input, nesting depth is capped, so corrupt
 * bytes end in an Error, never in a huge allocation or a loop.
 */

/** A field of a struct: its id, compact type, decoded value, and where the value's bytes are. */
export interface ThriftField {
  id: number;
  type: number;
  /** Offset of the value's first byte (after the field header). */
  start: number;
  /** Offset after the value's last byte. */
  end: number;
  value: ThriftValue;
}

export interface ThriftStruct {
  fields: Map<number, ThriftField>;
}

export type ThriftValue = boolean | number | bigint | Uint8Array | ThriftStruct | ThriftValue[] | null;

const T_STOP = 0;
const T_TRUE = 1;
const T_FALSE = 2;
const T_BYTE = 3;
const T_I16 = 4;
const T_I32 = 5;
const T_I64 = 6;
const T_DOUBLE = 7;
const T_BINARY = 8;
const T_LIST = 9;
const T_SET = 10;
const T_MAP = 11;
const T_STRUCT = 12;
const MAX_DEPTH = 64;

export class CompactReader {
  offset: number;
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array, offset = 0) {
    this.#bytes = bytes;
    this.offset = offset;
  }

  readStruct(depth = 0): ThriftStruct {
    if (depth > MAX_DEPTH) throw new Error(`thrift nesting deeper than ${MAX_DEPTH} at byte ${this.offset}`);
    const fields = new Map<number, ThriftField>();
    let lastId = 0;
    for (;;) {
      const header = this.#byte();
      const type = header & 0x0f;
      if (type === T_STOP) return { fields };
      const delta = header >> 4;
      const id = delta === 0 ? zigzag32(this.#varint32()) : lastId + delta;
      lastId = id;
      const start = this.offset;
      const value = this.#value(type, depth, true);
      fields.set(id, { id, type, start, end: this.offset, value });
    }
  }

  #value(type: number, depth: number, inField: boolean): ThriftValue {
    switch (type) {
      case T_TRUE:
        // In a field the type carries the value; as a list element a boolean is one byte.
        return inField ? true : this.#byte() === 1;
      case T_FALSE:
        return inField ? false : this.#byte() === 1;
      case T_BYTE:
        return this.#byte();
      case T_I16:
      case T_I32:
        return zigzag32(this.#varint32());
      case T_I64:
        return zigzag64(this.#varint64());
      case T_DOUBLE:
        this.#need(8);
        this.offset += 8;
        return null;
      case T_BINARY: {
        const length = this.#varint32();
        this.#need(length);
        const out = this.#bytes.subarray(this.offset, this.offset + length);
        this.offset += length;
        return out;
      }
      case T_LIST:
      case T_SET: {
        const header = this.#byte();
        let size = header >> 4;
        if (size === 15) size = this.#varint32();
        const elementType = header & 0x0f;
        // Every element takes at least one byte: a count beyond the input is corrupt.
        this.#need(size);
        const out: ThriftValue[] = [];
        for (let i = 0; i < size; i++) out.push(this.#value(elementType, depth + 1, false));
        return out;
      }
      case T_MAP: {
        const size = this.#varint32();
        if (size === 0) return [];
        const kinds = this.#byte();
        this.#need(size * 2);
        for (let i = 0; i < size; i++) {
          this.#value(kinds >> 4, depth + 1, false);
          this.#value(kinds & 0x0f, depth + 1, false);
        }
        return null;
      }
      case T_STRUCT:
        return this.readStruct(depth + 1);
      default:
        throw new Error(`unknown thrift type ${type} at byte ${this.offset}`);
    }
  }

  #need(n: number): void {
    if (n < 0 || this.offset + n > this.#bytes.byteLength) {
      throw new Error(`thrift value at byte ${this.offset} needs ${n} bytes, ${this.#bytes.byteLength - this.offset} left`);
    }
  }

  #byte(): number {
    this.#need(1);
    return this.#bytes[this.offset++]!;
  }

  #varint32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.#byte();
      result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result >>> 0;
    }
    throw new Error(`varint longer than 5 bytes at byte ${this.offset}`);
  }

  #varint64(): bigint {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = this.#byte();
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new Error(`varint longer than 10 bytes at byte ${this.offset}`);
  }
}

function zigzag32(n: number): number {
  return (n >>> 1) ^ -(n & 1);
}

function zigzag64(n: bigint): bigint {
  return (n >> 1n) ^ -(n & 1n);
}

/** The compact encoding of an i64 value (zigzag varint). */
export function encodeI64(value: bigint): Uint8Array {
  let n = value >= 0n ? value << 1n : ((-value) << 1n) - 1n;
  const out: number[] = [];
  do {
    let b = Number(n & 0x7fn);
    n >>= 7n;
    if (n !== 0n) b |= 0x80;
    out.push(b);
  } while (n !== 0n);
  return Uint8Array.from(out);
}

export function fieldNumber(struct: ThriftStruct, id: number): number | undefined {
  const v = struct.fields.get(id)?.value;
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
}

export function fieldStruct(struct: ThriftStruct, id: number): ThriftStruct | undefined {
  const v = struct.fields.get(id)?.value;
  return v !== null && typeof v === 'object' && 'fields' in v ? v : undefined;
}

export function fieldList(struct: ThriftStruct, id: number): ThriftValue[] {
  const v = struct.fields.get(id)?.value;
  return Array.isArray(v) ? v : [];
}
