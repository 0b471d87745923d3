/** Bytes a protobuf varint of the safe integer `n` (≥ 0) takes. */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Writes `n` (a safe integer ≥ 0) as a protobuf varint at `pos`; returns the position after it. */
export function writeVarint(out: Buffer, pos: number, n: number): number {
  while (n >= 128) {
    out[pos++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[pos++] = n;
  return pos;
}

/** A varint up to 2^53 − 1 at `r.pos` (advancing it); undefined when larger or cut off. */
export function readVarint(bytes: Uint8Array, r: { pos: number }): number | undefined {
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
