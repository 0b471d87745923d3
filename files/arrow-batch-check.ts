import { DataType, type Data, type RecordBatch } from 'apache-arrow';

/**
 * Checks that a record batch decoded from an Arrow IPC file is structurally sound: every column is
 * there, has the batch's length, and its buffers are large enough for it (offsets ascending and
 * inside their data, dictionary indexes inside their dictionary). apache-arrow decodes without such
 * checks, so a damaged file would otherwise surface as a crash in the mapper or as values read from
 * the wrong bytes. O(rows) per batch. Returns the problem, or undefined when the batch is sound.
 *
 * Parquet batches come from arrow-rs, which validates what it builds, and skip this.
 */
export function arrowBatchProblem(batch: RecordBatch): string | undefined {
  const fields = batch.schema.fields;
  const columns = batch.data.children;
  if (columns.length !== fields.length) return `the batch has ${columns.length} columns but its schema ${fields.length}`;
  for (let c = 0; c < columns.length; c++) {
    const data = columns[c];
    if (data === undefined) return `column "${fields[c]!.name}" is missing`;
    const problem = dataProblem(data, batch.numRows, 0);
    if (problem !== undefined) return `column "${fields[c]!.name}": ${problem}`;
  }
  return undefined;
}

const MAX_DEPTH = 64;

function dataProblem(data: Data, minLength: number, depth: number): string | undefined {
  if (depth > MAX_DEPTH) return `nested deeper than ${MAX_DEPTH} levels`;
  const type = data.type as DataType;
  const length = data.length;
  if (!Number.isSafeInteger(length) || length < minLength) return `${length} values where ${minLength} are needed`;
  const bitmap = data.nullBitmap as Uint8Array | undefined;
  if (bitmap !== undefined && bitmap.byteLength > 0 && bitmap.byteLength * 8 < data.offset + length) {
    return `a validity bitmap of ${bitmap.byteLength} bytes for ${length} values`;
  }
  if (DataType.isNull(type)) return undefined;
  if (DataType.isBool(type)) {
    const values = data.values as Uint8Array;
    return values.byteLength * 8 < data.offset + length ? `${values.byteLength} bytes of booleans for ${length} values` : undefined;
  }
  if (
    DataType.isInt(type) ||
    DataType.isFloat(type) ||
    DataType.isDecimal(type) ||
    DataType.isDate(type) ||
    DataType.isTime(type) ||
    DataType.isTimestamp(type) ||
    DataType.isDuration(type) ||
    DataType.isInterval(type) ||
    DataType.isFixedSizeBinary(type)
  ) {
    const values = data.values as ArrayLike<unknown>;
    return values.length < length * data.stride ? `${values.length} slots of data for ${length} values of ${String(type)}` : undefined;
  }
  if (DataType.isUtf8(type) || DataType.isLargeUtf8(type) || DataType.isBinary(type) || DataType.isLargeBinary(type)) {
    return offsetsProblem(data.valueOffsets as Int32Array | BigInt64Array, length, (data.values as Uint8Array).byteLength);
  }
  if (DataType.isList(type) || DataType.isLargeList(type) || DataType.isMap(type)) {
    const child = data.children[0];
    if (child === undefined) return `${String(type)} without its child values`;
    const offsets = data.valueOffsets as Int32Array | BigInt64Array;
    const problem = offsetsProblem(offsets, length, child.length);
    if (problem !== undefined) return problem;
    return dataProblem(child, length === 0 ? 0 : Number(offsets[length]), depth + 1);
  }
  if (DataType.isFixedSizeList(type)) {
    const child = data.children[0];
    if (child === undefined) return `${String(type)} without its child values`;
    return dataProblem(child, length * type.listSize, depth + 1);
  }
  if (DataType.isStruct(type)) {
    if (data.children.length !== type.children.length) return `a struct with ${data.children.length} of its ${type.children.length} fields`;
    for (const child of data.children) {
      const problem = dataProblem(child, length, depth + 1);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  if (DataType.isDictionary(type)) {
    const dictionary = data.dictionary;
    if (dictionary === undefined) return 'dictionary-encoded without a dictionary';
    const indices = data.values as ArrayLike<number | bigint>;
    if (indices.length < length) return `${indices.length} dictionary indexes for ${length} values`;
    const size = dictionary.length;
    for (let i = 0; i < length; i++) {
      const index = Number(indices[i]);
      if ((index < 0 || index >= size) && data.getValid(i)) return `dictionary index ${index} at row ${i}, outside a dictionary of ${size}`;
    }
    for (const chunk of dictionary.data) {
      const problem = dataProblem(chunk, 0, depth + 1);
      if (problem !== undefined) return `its dictionary: ${problem}`;
    }
    return undefined;
  }
  // Unions and view types: rare in files; apache-arrow's own reads are all there is.
  return undefined;
}

function offsetsProblem(offsets: Int32Array | BigInt64Array, length: number, limit: number): string | undefined {
  if (length === 0) return undefined;
  if (offsets.length < length + 1) return `${offsets.length} offsets for ${length} values`;
  let previous = Number(offsets[0]);
  if (previous < 0) return `a negative offset (${previous})`;
  for (let i = 1; i <= length; i++) {
    const next = Number(offsets[i]);
    if (next < previous) return `offsets go backwards at value ${i - 1} (${previous} → ${next})`;
    previous = next;
  }
  return previous > limit ? `offsets reach ${previous}, past the ${limit} bytes or values they index` : undefined;
}
