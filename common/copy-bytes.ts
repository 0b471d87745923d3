/**
 * Copies `length` bytes of `from` at `start` into `to` at `at`: a plain loop for short runs (keys),
 * where making a view to `set` from costs more than the copy. Pass plain Uint8Array views on hot
 * paths: a Buffer's `subarray` costs more than a Uint8Array's.
 */
export function copyBytes(from: Uint8Array, start: number, length: number, to: Uint8Array, at: number): void {
  if (length <= 32) {
    for (let i = 0; i < length; i++) to[at + i] = from[start + i]!;
  } else if (start === 0 && length === from.length) {
    to.set(from, at);
  } else {
    to.set(from.subarray(start, start + length), at);
  }
}
