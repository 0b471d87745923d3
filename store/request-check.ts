import { createFileRegistry, fromBinary, ScalarType, type DescField, type DescMessage, type DescService } from '@bufbuild/protobuf';
import { base64Decode } from '@bufbuild/protobuf/wire';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { Key } from './key.js';
import { PackedRows, type PackedRowsMessage } from './packed-rows.js';
import { FIELD_LIMITS, describeLimit, truncateForMessage, type FieldLimit, type FieldLimitContext } from './field-limits.js';
import { STORE_PROTO_DESCRIPTOR_BASE64 } from './proto/gen/shardpipe/store/v1/store-descriptor.js';
import { StoreError, type StoreErrorCode } from './store-errors.js';

/** The Store service as described by store.proto (reflection: every method, message and field). */
export const STORE_SERVICE_DESC: DescService = loadService();

function loadService(): DescService {
  const file = fromBinary(FileDescriptorProtoSchema, base64Decode(STORE_PROTO_DESCRIPTOR_BASE64));
  const service = createFileRegistry(file, () => undefined).getService('shardpipe.store.v1.Store');
  if (service === undefined) throw new Error('store.proto descriptor has no service shardpipe.store.v1.Store: run npm run gen');
  return service;
}

const requestDescs = new Map(STORE_SERVICE_DESC.methods.map((m) => [m.name, m.input]));

/** The request message of a Store method, by its proto name (`Get`, `BulkInsert`, …). */
export function requestDescOf(method: string): DescMessage {
  const found = requestDescs.get(method);
  if (found === undefined) throw new TypeError(`the Store service has no method ${method}`);
  return found;
}

/** The range of a field; every field of every request message has one (a unit test checks). */
export function limitOf(message: DescMessage, field: DescField): FieldLimit {
  const limit = FIELD_LIMITS[message.name]?.[field.name];
  if (limit === undefined) throw new TypeError(`no range documented for ${message.name}.${field.name} (store/field-limits.ts)`);
  return limit;
}

/**
 * Checks a decoded request against FIELD_LIMITS and throws StoreError (INVALID_ARGUMENT) naming
 * the first field out of range, its value and the allowed range. Works on the generated
 * (number-typed) messages and on reflective ones (bigint-typed) alike. `path` names the message
 * in errors (default its type name; `MultiRequest.ops[3].put` for an op of a Multi).
 */
export function checkRequest(desc: DescMessage, message: object, ctx: FieldLimitContext, path: string = desc.name): void {
  checkMessage(desc, message as Record<string, unknown>, path, ctx);
}

/**
 * The error for a request the generated code could not decode (an integer beyond 2^53 − 1, or
 * malformed bytes): decodes it again by reflection, with 64-bit integers as bigint, to name the field.
 */
export function undecodableRequestError(desc: DescMessage, bytes: Uint8Array, cause: unknown, ctx: FieldLimitContext): StoreError {
  try {
    checkRequest(desc, fromBinary(desc, bytes), ctx);
  } catch (err) {
    if (err instanceof StoreError) return err;
    return new StoreError('STORE_INVALID_ARGUMENT', `${desc.name} is not a valid protobuf message: ${truncateForMessage(describe(err), 200)}`, { cause: err });
  }
  return new StoreError('STORE_INVALID_ARGUMENT', `${desc.name} could not be decoded: ${truncateForMessage(describe(cause), 200)}`, { cause });
}

/** A message's fields with their ranges, resolved once per message type (BulkInsert checks every row). */
interface FieldPlan {
  field: DescField;
  limit: FieldLimit;
}
const plans = new Map<DescMessage, FieldPlan[]>();

function planOf(desc: DescMessage): FieldPlan[] {
  let plan = plans.get(desc);
  if (plan === undefined) {
    plan = desc.fields.map((field) => ({ field, limit: limitOf(desc, field) }));
    plans.set(desc, plan);
  }
  return plan;
}

// Paths are built only for the error: a BulkInsert of 50k rows checks 250k fields.
function pathOf(path: string, name: string, index?: number): string {
  return index === undefined ? `${path}.${name}` : `${path}.${name}[${index}]`;
}

function checkMessage(desc: DescMessage, message: Record<string, unknown>, path: string, ctx: FieldLimitContext): void {
  if (desc.name === 'BulkInsertRequest') checkOneRowForm(message, path);
  for (const { field, limit } of planOf(desc)) {
    const value = message[field.localName];
    if (field.fieldKind === 'list') {
      if (limit.kind !== 'list') throw new TypeError(`${pathOf(path, field.name)} is repeated but its range is not a list`);
      const items = (value ?? []) as unknown[];
      if (items.length > limit.maxItems || items.length < (limit.minItems ?? 0)) {
        fail('STORE_INVALID_ARGUMENT', pathOf(path, field.name), `has ${items.length} items, out of range: allowed ${limit.minItems ?? 0}–${limit.maxItems}`, items.length, limit, ctx);
      }
      for (let i = 0; i < items.length; i++) {
        if (field.listKind === 'message') checkMessage(field.message, items[i] as Record<string, unknown>, pathOf(path, field.name, i), ctx);
        else checkScalar(limit.item, items[i], path, field.name, i, ctx);
      }
    } else if (field.fieldKind === 'message') {
      if (value === undefined || value === null) {
        if (limit.kind === 'message' && limit.required) fail('STORE_INVALID_ARGUMENT', pathOf(path, field.name), 'is missing', undefined, limit, ctx);
      } else {
        checkMessage(field.message, value as Record<string, unknown>, pathOf(path, field.name), ctx);
      }
    } else if (field.fieldKind === 'scalar') {
      if (field.scalar === ScalarType.BOOL) continue;
      checkScalar(limit, value, path, field.name, undefined, ctx);
    } else {
      throw new TypeError(`${pathOf(path, field.name)}: ${field.fieldKind} fields have no range check`);
    }
  }
  if (desc.name === 'PackedRows') {
    const packed = PackedRows.fromMessage(asPackedMessage(message), path);
    checkPackedRows(packed, ctx, path);
    checkedBatches.set(message, packed);
  }
}

/** The batch each checked PackedRows message decoded to (checkedPackedRows). */
const checkedBatches = new WeakMap<object, PackedRows>();

/**
 * The batch checkRequest decoded and checked for this PackedRows message (undefined when it did not
 * check this very object): the handler takes it instead of decoding the message a second time, and
 * the node skips its own row checks (PackedRows.checkedWithin). The message must not change between.
 */
export function checkedPackedRows(message: object): PackedRows | undefined {
  return checkedBatches.get(message);
}

/** A BulkInsert carries its rows one way: per-row `rows` or one `packed` batch. */
function checkOneRowForm(message: Record<string, unknown>, path: string): void {
  const rows = message.rows as unknown[] | undefined;
  if (message.packed !== undefined && message.packed !== null && rows !== undefined && rows.length > 0) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `${path}.rows (${rows.length} rows) and ${path}.packed are both set: send the rows one way, per-row \`rows\` or one \`packed\` batch`, {
      context: { field: `${path}.packed` },
    });
  }
}

/** The generated (Buffer) and reflective (Uint8Array) forms of a PackedRows message alike. */
function asPackedMessage(message: Record<string, unknown>): PackedRowsMessage {
  const bytes = (v: unknown): Buffer => {
    const u8 = (v ?? new Uint8Array(0)) as Uint8Array;
    return Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
  };
  return { format: Number(message.format ?? 0), count: Number(message.count ?? 0), lengths: bytes(message.lengths), data: bytes(message.data), meta: bytes(message.meta) };
}

const BULK_ROW_LIMITS = FIELD_LIMITS.BulkRow!;
const PACKED_META_FIELDS = [
  { name: 'etag', limit: BULK_ROW_LIMITS.etag as Extract<FieldLimit, { kind: 'int' }> },
  { name: 'updated_at_ms', limit: BULK_ROW_LIMITS.updated_at_ms as Extract<FieldLimit, { kind: 'int' }> },
  { name: 'expires_at_ms', limit: BULK_ROW_LIMITS.expires_at_ms as Extract<FieldLimit, { kind: 'int' }> },
] as const;

/**
 * Checks every row of a packed batch against the ranges of BulkRow's fields, with the per-row
 * form's codes and messages, naming the row as `<path>[i].<field>`. Reads lengths and metadata in
 * place: no row objects.
 */
export function checkPackedRows(packed: PackedRows, ctx: FieldLimitContext, path = 'BulkInsertRequest.packed'): void {
  const count = packed.count;
  for (let i = 0; i < count; i++) {
    const keyLength = packed.keyLength(i);
    if (keyLength === 0 || keyLength > ctx.maxKeyBytes) {
      const problem = Key.problem(packed.key(i), ctx.maxKeyBytes)!;
      fail('STORE_INVALID_KEY', `${path}[${i}].key`, `: ${problem}`, keyLength, BULK_ROW_LIMITS.key!, ctx);
    }
    const valueLength = packed.valueLength(i);
    if (valueLength > ctx.maxValueBytes) {
      fail('STORE_VALUE_TOO_LARGE', `${path}[${i}].value`, `: value is ${valueLength} bytes, over the limit of ${ctx.maxValueBytes} bytes`, valueLength, BULK_ROW_LIMITS.value!, ctx);
    }
  }
  if (!packed.hasMeta) {
    packed.noteChecked(ctx.maxKeyBytes, ctx.maxValueBytes);
    return;
  }
  for (let i = 0; i < count; i++) {
    for (let f = 0; f < 3; f++) {
      const { name, limit } = PACKED_META_FIELDS[f]!;
      if (packed.metaField(i, f as 0 | 1 | 2) > limit.max) {
        const exact = packed.metaFieldExact(i, f as 0 | 1 | 2);
        fail('STORE_INVALID_ARGUMENT', `${path}[${i}].${name}`, `is ${exact}, out of range: allowed ${describeLimit(limit, ctx)}`, exact, limit, ctx);
      }
    }
  }
  packed.noteChecked(ctx.maxKeyBytes, ctx.maxValueBytes);
}

function checkScalar(limit: FieldLimit, value: unknown, path: string, name: string, index: number | undefined, ctx: FieldLimitContext): void {
  switch (limit.kind) {
    case 'int': {
      // Absent optional fields (expected_etag) are fine; numbers and bigints compare directly.
      if (value === undefined) return;
      const n = value as number | bigint;
      if (typeof n === 'number' && !Number.isInteger(n)) fail('STORE_INVALID_ARGUMENT', pathOf(path, name, index), `is ${n}, not a whole number`, n, limit, ctx);
      if (n < limit.min || n > limit.max) fail('STORE_INVALID_ARGUMENT', pathOf(path, name, index), `is ${String(n)}, out of range: allowed ${describeLimit(limit, ctx)}`, n, limit, ctx);
      return;
    }
    case 'key':
    case 'bound': {
      const bytes = value as Uint8Array;
      if (limit.kind === 'bound' && bytes.length === 0) return;
      const problem = Key.problem(bytes, ctx.maxKeyBytes);
      if (problem !== undefined) fail('STORE_INVALID_KEY', pathOf(path, name, index), `: ${problem}`, bytes.length, limit, ctx);
      return;
    }
    case 'value': {
      const bytes = value as Uint8Array;
      if (bytes.length > ctx.maxValueBytes) {
        fail('STORE_VALUE_TOO_LARGE', pathOf(path, name, index), `: value is ${bytes.length} bytes, over the limit of ${ctx.maxValueBytes} bytes`, bytes.length, limit, ctx);
      }
      return;
    }
    case 'string': {
      const text = value as string;
      // UTF-8 takes at most 3 bytes per UTF-16 unit: short strings need no byte count.
      if (text.length * 3 <= limit.maxBytes) return;
      const bytes = Buffer.byteLength(text, 'utf8');
      if (bytes > limit.maxBytes) {
        fail('STORE_INVALID_ARGUMENT', pathOf(path, name, index), `"${truncateForMessage(text, 32)}" is ${bytes} bytes, over the limit of ${limit.maxBytes} bytes`, bytes, limit, ctx);
      }
      return;
    }
    case 'bytes':
      // Checked as a whole by the message's own check (checkPackedRows).
      return;
    default:
      throw new TypeError(`${pathOf(path, name, index)}: a ${limit.kind} range on a scalar field`);
  }
}

function fail(code: StoreErrorCode, where: string, problem: string, value: number | bigint | undefined, limit: FieldLimit, ctx: FieldLimitContext): never {
  const text = problem.startsWith(':') ? `${where}${problem}` : `${where} ${problem}`;
  throw new StoreError(code, text, { context: { field: where, value: value === undefined ? undefined : String(value), allowed: describeLimit(limit, ctx) } });
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
