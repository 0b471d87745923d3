import type { BulkInsertRequest } from './proto/gen/shardpipe/store/v1/store.js';

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const TWO_32 = 2 ** 32;

/**
 * Decodes a BulkInsertRequest that carries a packed batch — only `map_version` and `packed`, each
 * at most once — with `lengths`, `data` and `meta` as views of `bytes` instead of copies (the
 * generated decoder copies every bytes field). Anything else (per-row `rows`, unknown or repeated
 * fields, a varint beyond its type, malformed framing) returns undefined, and the generated
 * decoder takes the request, with its answers for malformed ones.
 */
export function decodePackedBulkInsert(bytes: Buffer): BulkInsertRequest | undefined {
  const r = { pos: 0 };
  let mapVersion: number | undefined;
  let packed: BulkInsertRequest['packed'];
  while (r.pos < bytes.length) {
    const tag = varint(bytes, r);
    if (tag === undefined) return undefined;
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 1 && wire === WIRE_VARINT && mapVersion === undefined) {
      mapVersion = varint(bytes, r);
      if (mapVersion === undefined) return undefined;
    } else if (field === 3 && wire === WIRE_LEN && packed === undefined) {
      const body = lengthDelimited(bytes, r);
      packed = body && decodePackedRows(body);
      if (packed === undefined) return undefined;
    } else {
      return undefined;
    }
  }
  if (packed === undefined) return undefined;
  return { mapVersion: mapVersion ?? 0, rows: [], packed };
}

function decodePackedRows(bytes: Buffer): BulkInsertRequest['packed'] {
  const r = { pos: 0 };
  const message: NonNullable<BulkInsertRequest['packed']> = { format: 0, count: 0, lengths: EMPTY, data: EMPTY, meta: EMPTY };
  const seen = new Set<number>();
  while (r.pos < bytes.length) {
    const tag = varint(bytes, r);
    if (tag === undefined) return undefined;
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (seen.has(field)) return undefined;
    seen.add(field);
    if ((field === 1 || field === 2) && wire === WIRE_VARINT) {
      const n = varint(bytes, r);
      if (n === undefined || n >= TWO_32) return undefined;
      if (field === 1) message.format = n;
      else message.count = n;
    } else if (field >= 3 && field <= 5 && wire === WIRE_LEN) {
      const view = lengthDelimited(bytes, r);
      if (view === undefined) return undefined;
      if (field === 3) message.lengths = view;
      else if (field === 4) message.data = view;
      else message.meta = view;
    } else {
      return undefined;
    }
  }
  return message;
}

const EMPTY: Buffer = Buffer.alloc(0);

/** A varint up to 2^53 − 1 at `r.pos` (advancing it); undefined when larger or cut off. */
function varint(bytes: Buffer, r: { pos: number }): number | undefined {
  let n = 0;
  let scale = 1;
  for (let i = 0; i < 8; i++) {
    if (r.pos >= bytes.length) return undefined;
    const b = bytes[r.pos++]!;
    n += (b & 0x7f) * scale;
    if (b < 0x80) return Number.isSafeInteger(n) ? n : undefined;
    scale *= 128;
  }
  return undefined;
}

function lengthDelimited(bytes: Buffer, r: { pos: number }): Buffer | undefined {
  const length = varint(bytes, r);
  if (length === undefined || r.pos + length > bytes.length) return undefined;
  const view = bytes.subarray(r.pos, r.pos + length);
  r.pos += length;
  return view;
}
