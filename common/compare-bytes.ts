/**
 * Up to this many bytes in common a loop compares faster than a native Buffer.compare, whose call
 * costs more than comparing 64 bytes (it stops at the first difference).
 */
const LOOP_COMPARE_MAX_BYTES = 64;

/**
 * Bytewise order of `a[aStart, aEnd)` and `b[bStart, bEnd)` (-1, 0 or 1, as Buffer.compare): a
 * loop for short keys, native for long ones. The hot paths compare a key per row (sortedness,
 * ranges), where the native call's cost was a tenth of a restore's main thread.
 */
export function compareBytes(a: Uint8Array, aStart: number, aEnd: number, b: Uint8Array, bStart: number, bEnd: number): number {
  const aLength = aEnd - aStart;
  const bLength = bEnd - bStart;
  const n = Math.min(aLength, bLength);
  if (n > LOOP_COMPARE_MAX_BYTES) return Buffer.compare(a.subarray(aStart, aEnd), b.subarray(bStart, bEnd));
  for (let k = 0; k < n; k++) {
    const d = a[aStart + k]! - b[bStart + k]!;
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return aLength === bLength ? 0 : aLength < bLength ? -1 : 1;
}
