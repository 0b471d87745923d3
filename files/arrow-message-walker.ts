import type { FileHandle } from 'node:fs/promises';
import { Message, MessageHeader } from 'apache-arrow';
import { checkArrowFooter, checkArrowMessage, type ArrowBlock } from './arrow-flatbuffer-check.js';

/** One IPC message's framing and decoded header; the body is not read. */
export interface ArrowMessageInfo {
  /** Byte offset of the message (its continuation marker or length prefix) in the file. */
  offset: number;
  /** Framing + metadata + body, in bytes. */
  totalBytes: number;
  message: Message;
}

/** Metadata of one message is a small flatbuffer; anything larger means a corrupt length. */
const MAX_METADATA_BYTES = 64 * 1024 * 1024;
const CONTINUATION = -1;

/**
 * Walks the IPC messages of an Arrow file or stream by reading only their headers and skipping their
 * bodies: memory stays at one message header however large the file. Stops at the end-of-stream
 * marker, at `end`, or at the end of the file. Throws Error describing the problem (with the byte
 * offset) when the framing does not fit the file.
 */
export async function* walkArrowMessages(handle: FileHandle, start: number, end: number): AsyncGenerator<ArrowMessageInfo> {
  const prefix = Buffer.alloc(8);
  let offset = start;
  while (offset + 4 <= end) {
    const { bytesRead } = await handle.read(prefix, 0, Math.min(8, end - offset), offset);
    if (bytesRead < 4) throw new Error(`message at byte ${offset} is cut off`);
    let headerBytes = 4;
    let metadataLength = prefix.readInt32LE(0);
    if (metadataLength === CONTINUATION) {
      if (bytesRead < 8) throw new Error(`message at byte ${offset} is cut off after its continuation marker`);
      headerBytes = 8;
      metadataLength = prefix.readInt32LE(4);
    }
    if (metadataLength === 0) return; // end-of-stream marker
    if (metadataLength < 0 || metadataLength > MAX_METADATA_BYTES || offset + headerBytes + metadataLength > end) {
      throw new Error(`message at byte ${offset} declares ${metadataLength} bytes of metadata, which does not fit the file (${end - offset} bytes left)`);
    }
    const metadata = Buffer.alloc(metadataLength);
    await handle.read(metadata, 0, metadataLength, offset + headerBytes);
    let message: Message;
    try {
      checkArrowMessage(metadata);
      message = Message.decode(metadata);
    } catch (err) {
      throw new Error(`message at byte ${offset} has unreadable metadata: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    const bodyLength = Number(message.bodyLength);
    const totalBytes = headerBytes + metadataLength + bodyLength;
    if (!Number.isSafeInteger(bodyLength) || bodyLength < 0 || offset + totalBytes > end) {
      throw new Error(
        `message at byte ${offset} declares ${headerBytes + metadataLength} bytes of framing and metadata and a ${String(message.bodyLength)}-byte body, ` +
          `but only ${end - offset} bytes are left`,
      );
    }
    yield { offset, totalBytes, message };
    offset += totalBytes;
  }
}

export function isRecordBatchMessage(message: Message): boolean {
  return message.headerType === MessageHeader.RecordBatch;
}

export function isSchemaMessage(message: Message): boolean {
  return message.headerType === MessageHeader.Schema;
}

const FILE_MAGIC_BYTES = 8; // "ARROW1" + 2 bytes of padding
const FILE_TRAILER_BYTES = 10; // footer length (4) + "ARROW1"

/** Where an Arrow IPC file's footer is, after checking that it is safe to decode. */
export interface ArrowFileLayout {
  /** Offset of the footer flatbuffer; the messages end here. */
  footerStart: number;
  recordBatches: ArrowBlock[];
  dictionaries: ArrowBlock[];
}

/**
 * Reads and checks the footer of an Arrow IPC *file* (the format starting with `ARROW1`). Throws
 * Error describing the problem.
 */
export async function readArrowFileLayout(handle: FileHandle, size: number): Promise<ArrowFileLayout> {
  if (size < FILE_MAGIC_BYTES + FILE_TRAILER_BYTES) throw new Error(`${size} bytes is too short for an Arrow file`);
  const trailer = Buffer.alloc(4);
  await handle.read(trailer, 0, 4, size - FILE_TRAILER_BYTES);
  const footerLength = trailer.readInt32LE(0);
  const footerStart = size - FILE_TRAILER_BYTES - footerLength;
  if (footerLength <= 0 || footerLength > MAX_METADATA_BYTES || footerStart < FILE_MAGIC_BYTES) {
    throw new Error(`the footer length (${footerLength}) does not fit the file (${size} bytes)`);
  }
  const footer = Buffer.alloc(footerLength);
  await handle.read(footer, 0, footerLength, footerStart);
  const { recordBatches, dictionaries } = checkArrowFooter(footer);
  return { footerStart, recordBatches, dictionaries };
}

/**
 * Checks every piece of metadata apache-arrow will decode when reading the file: for the file format
 * the footer and the message each footer block points to, for the stream format every message. Reads
 * headers only. Throws Error describing the first problem.
 */
export async function verifyArrowMetadata(handle: FileHandle, size: number): Promise<void> {
  const head = Buffer.alloc(6);
  await handle.read(head, 0, 6, 0);
  if (head.toString('latin1') !== 'ARROW1') {
    for await (const _ of walkArrowMessages(handle, 0, size)) {
      // walkArrowMessages checks each message's metadata as it goes.
    }
    return;
  }
  const layout = await readArrowFileLayout(handle, size);
  for (const [kind, blocks] of [['record batch', layout.recordBatches], ['dictionary', layout.dictionaries]] as const) {
    for (let i = 0; i < blocks.length; i++) {
      const block = blocks[i]!;
      const end = block.offset + block.metaDataLength + block.bodyLength;
      if (block.offset < FILE_MAGIC_BYTES || block.metaDataLength < 8 || block.metaDataLength > MAX_METADATA_BYTES || end > layout.footerStart) {
        throw new Error(`${kind} block ${i} (byte ${block.offset}, ${block.metaDataLength} + ${block.bodyLength} bytes) does not fit the file`);
      }
      const metadata = Buffer.alloc(block.metaDataLength);
      await handle.read(metadata, 0, block.metaDataLength, block.offset);
      const framed = metadata.readInt32LE(0) === CONTINUATION;
      const length = metadata.readInt32LE(framed ? 4 : 0);
      const start = framed ? 8 : 4;
      if (length < 0 || start + length > metadata.byteLength) throw new Error(`${kind} block ${i} declares ${length} bytes of metadata in a ${block.metaDataLength}-byte block`);
      checkArrowMessage(metadata.subarray(start, start + length));
    }
  }
}
