import { StoreError } from './store-errors.js';

/** Default and hard limits of a key's length in bytes. */
export const DEFAULT_MAX_KEY_BYTES = 4096;

/**
 * A validated key: a non-empty byte string of bounded length, ordered bytewise. The one key type
 * used by the store, the client, ingest, backup and restore.
 */
export class Key {
  /** The key's bytes. Treat as read-only. */
  readonly bytes: Buffer;

  private constructor(bytes: Buffer) {
    this.bytes = bytes;
  }

  /**
   * Wraps bytes without copying, after checking them. Throws StoreError STORE_INVALID_KEY
   * (INVALID_ARGUMENT on the wire) saying why.
   */
  static fromBytes(bytes: Uint8Array, maxKeyBytes = DEFAULT_MAX_KEY_BYTES): Key {
    const problem = Key.problem(bytes, maxKeyBytes);
    if (problem !== undefined) {
      throw new StoreError('STORE_INVALID_KEY', problem, { context: { keyHex: Key.preview(bytes) } });
    }
    return new Key(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }

  static fromUtf8(text: string, maxKeyBytes = DEFAULT_MAX_KEY_BYTES): Key {
    return Key.fromBytes(Buffer.from(text, 'utf8'), maxKeyBytes);
  }

  static fromHex(hex: string, maxKeyBytes = DEFAULT_MAX_KEY_BYTES): Key {
    if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) {
      throw new StoreError('STORE_INVALID_KEY', `invalid hex key "${hex.slice(0, 64)}": expected an even number of hex digits`);
    }
    return Key.fromBytes(Buffer.from(hex, 'hex'), maxKeyBytes);
  }

  /** Why `bytes` is not a valid key, or undefined when it is. Cheap: for per-row validation. */
  static problem(bytes: Uint8Array | undefined | null, maxKeyBytes = DEFAULT_MAX_KEY_BYTES): string | undefined {
    if (bytes === undefined || bytes === null) return 'key is missing';
    if (bytes.byteLength === 0) return 'key is empty: keys must be 1 or more bytes';
    if (bytes.byteLength > maxKeyBytes) return `key is ${bytes.byteLength} bytes, over the limit of ${maxKeyBytes} bytes`;
    return undefined;
  }

  /** A short hex rendering for error messages and logs. */
  static preview(bytes: Uint8Array, maxBytes = 32): string {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, maxBytes));
    return buf.toString('hex') + (bytes.byteLength > maxBytes ? '…' : '');
  }

  /** Bytewise comparison: negative, zero or positive. */
  static compare(a: Uint8Array, b: Uint8Array): number {
    return Buffer.compare(a, b);
  }

  compare(other: Key): number {
    return Buffer.compare(this.bytes, other.bytes);
  }

  equals(other: Key): boolean {
    return this.bytes.equals(other.bytes);
  }

  toHex(): string {
    return this.bytes.toString('hex');
  }

  /** The key as UTF-8 text (lossy for keys that are not valid UTF-8). */
  toUtf8(): string {
    return this.bytes.toString('utf8');
  }

  /** Printable ASCII as is, anything else as 0x-prefixed hex: for tables and messages. */
  toDisplay(): string {
    return displayBytes(this.bytes);
  }

  toString(): string {
    return this.toDisplay();
  }
}

/** Renders bytes as printable ASCII when they are, otherwise as 0x-hex. Empty renders as "". */
export function displayBytes(bytes: Uint8Array): string {
  for (const b of bytes) {
    if (b < 0x20 || b > 0x7e) return `0x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')}`;
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** The smallest key after `key`: where a scan continues after it. */
export function successor(key: Uint8Array): Buffer {
  const out = Buffer.alloc(key.byteLength + 1);
  out.set(key);
  return out;
}
