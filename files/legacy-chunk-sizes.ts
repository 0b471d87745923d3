import type { FileHandle } from 'node:fs/promises';
import { CompactReader, encodeI64, fieldList, fieldNumber, fieldStruct, type ThriftStruct } from './thrift-compact.js';

/** A replacement for a Parquet file's footer: the bytes from `footerStart` to the end of the file. */
export interface FooterPatch {
  footerStart: number;
  /** New footer, its 4-byte length and the closing `PAR1`. */
  tail: Uint8Array;
}

const MAX_FOOTER_BYTES = 64 * 1024 * 1024;
/** Page headers are small; statistics in them can make one a few KiB. */
const PAGE_HEADER_READ_BYTES = 64 * 1024;
/** Stop walking a chunk after this many pages (a chunk of a legacy file has a handful). */
const MAX_PAGES_PER_CHUNK = 100_000;
const DATA_PAGE = 0;
const DATA_PAGE_V2 = 3;

/**
 * PARQUET-816 (IMPALA-694): parquet-mr up to 1.2.8 left the dictionary page header out of a column
 * chunk's `total_compressed_size`, so the chunk's declared byte range ends before its last page.
 * arrow-rs then reads a cut-off page and traps (nation.dict-malformed.parquet). Arrow C++ pads such
 * ranges; we do better and measure them: for files written by those versions, walk each chunk's page
 * headers until its values are all accounted for, and when that extent is larger than declared,
 * return a footer with the measured sizes. Undefined when the file needs no repair or the walk fails
 * (the decoder then reports what it finds).
 */
export async function repairLegacyChunkSizes(handle: FileHandle, sizeBytes: number): Promise<FooterPatch | undefined> {
  if (sizeBytes < 12) return undefined;
  const trailer = Buffer.alloc(8);
  await handle.read(trailer, 0, 8, sizeBytes - 8);
  const footerLength = trailer.readUInt32LE(0);
  if (trailer.toString('latin1', 4) !== 'PAR1' || footerLength > MAX_FOOTER_BYTES || footerLength > sizeBytes - 12) return undefined;
  const footerStart = sizeBytes - 8 - footerLength;
  const footer = Buffer.alloc(footerLength);
  await handle.read(footer, 0, footerLength, footerStart);

  let metadata: ThriftStruct;
  try {
    metadata = new CompactReader(footer).readStruct();
  } catch {
    // An unreadable footer is the decoder's to report, with its own message.
    return undefined;
  }
  const createdBy = metadata.fields.get(6)?.value;
  if (!(createdBy instanceof Uint8Array) || !isAffectedWriter(Buffer.from(createdBy).toString('utf8'))) return undefined;

  const splices: Array<{ start: number; end: number; bytes: Uint8Array }> = [];
  for (const rowGroup of fieldList(metadata, 4)) {
    if (rowGroup === null || typeof rowGroup !== 'object' || !('fields' in rowGroup)) continue;
    for (const chunk of fieldList(rowGroup, 1)) {
      if (chunk === null || typeof chunk !== 'object' || !('fields' in chunk)) continue;
      const meta = fieldStruct(chunk, 3);
      const declared = meta?.fields.get(7);
      if (meta === undefined || declared === undefined || typeof declared.value !== 'bigint') continue;
      const numValues = fieldNumber(meta, 5);
      const dataOffset = fieldNumber(meta, 9);
      const dictOffset = fieldNumber(meta, 11);
      if (numValues === undefined || dataOffset === undefined) continue;
      const start = dictOffset !== undefined && dictOffset > 0 ? Math.min(dictOffset, dataOffset) : dataOffset;
      const extent = await measureChunk(handle, start, numValues, footerStart);
      if (extent === undefined || BigInt(extent) <= declared.value) continue;
      splices.push({ start: declared.start, end: declared.end, bytes: encodeI64(BigInt(extent)) });
    }
  }
  if (splices.length === 0) return undefined;

  const parts: Uint8Array[] = [];
  let at = 0;
  for (const s of splices) {
    parts.push(footer.subarray(at, s.start), s.bytes);
    at = s.end;
  }
  parts.push(footer.subarray(at));
  const newFooter = Buffer.concat(parts);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(newFooter.byteLength, 0);
  return { footerStart, tail: Buffer.concat([newFooter, length, Buffer.from('PAR1', 'latin1')]) };
}

/** parquet-mr before 1.2.9, or without a version (as Arrow C++ reads `created_by`). */
export function isAffectedWriter(createdBy: string): boolean {
  const m = /^parquet-mr(?: version (\d+)\.(\d+)\.(\d+))?/.exec(createdBy);
  if (m === null) return false;
  if (m[1] === undefined) return true;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return major < 1 || (major === 1 && (minor < 2 || (minor === 2 && patch < 9)));
}

/** Bytes from `start` through the page that completes `numValues` values; undefined if the pages do not parse. */
async function measureChunk(handle: FileHandle, start: number, numValues: number, limit: number): Promise<number | undefined> {
  const buffer = Buffer.alloc(PAGE_HEADER_READ_BYTES);
  let position = start;
  let values = 0;
  for (let pages = 0; values < numValues && pages < MAX_PAGES_PER_CHUNK; pages++) {
    if (position >= limit) return undefined;
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.byteLength, limit - position), position);
    let header: ThriftStruct;
    const reader = new CompactReader(buffer.subarray(0, bytesRead));
    try {
      header = reader.readStruct();
    } catch {
      // Not a page header where one should be: leave the chunk as declared.
      return undefined;
    }
    const type = fieldNumber(header, 1);
    const compressed = fieldNumber(header, 3);
    if (type === undefined || compressed === undefined || compressed < 0) return undefined;
    if (type === DATA_PAGE) values += fieldNumber(fieldStruct(header, 5) ?? { fields: new Map() }, 1) ?? 0;
    if (type === DATA_PAGE_V2) values += fieldNumber(fieldStruct(header, 8) ?? { fields: new Map() }, 1) ?? 0;
    position += reader.offset + compressed;
  }
  return values >= numValues && position <= limit ? position - start : undefined;
}
