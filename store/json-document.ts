import { applyPatch, type Operation } from 'rfc6902';
import { displayBytes } from './key.js';
import { MAX_PATCH_OPS, truncateForMessage } from './field-limits.js';
import { StoreError } from './store-errors.js';

/** How a Patch changes a document: JSON Merge Patch (RFC 7396) or JSON Patch (RFC 6902). */
export type PatchMode = 'merge' | 'json-patch';

/** PatchRequest.mode on the wire. */
export const PATCH_MODES: readonly PatchMode[] = ['merge', 'json-patch'];


const JSON_PATCH_OPS = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);
// rfc6902's pointer evaluation skips these tokens (its guard against prototype pollution), so a
// path through them would land somewhere else: refused instead.
const UNSAFE_TOKENS = new Set(['__proto__', 'constructor', 'prototype']);
const ARRAY_INDEX = /^(0|[1-9][0-9]*)$/;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * The reference tokens of a JSON Pointer (RFC 6901): "" is the whole document, otherwise it starts
 * with "/" and `~0` / `~1` stand for `~` / `/`. `what` names the pointer in errors.
 */
export function parsePointer(pointer: string, what: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `${what} "${truncateForMessage(pointer)}" is not a JSON Pointer: it must be empty (the whole document) or start with "/" (RFC 6901)`, {
      context: { field: what, value: truncateForMessage(pointer) },
    });
  }
  return pointer
    .slice(1)
    .split('/')
    .map((token) => {
      if (/~(?![01])/.test(token)) {
        throw new StoreError('STORE_INVALID_ARGUMENT', `${what} "${truncateForMessage(pointer)}" has a "~" not followed by 0 or 1: write "~" as "~0" and "/" inside a name as "~1" (RFC 6901)`, {
          context: { field: what, value: truncateForMessage(pointer) },
        });
      }
      return token.replace(/~1/g, '/').replace(/~0/g, '~');
    });
}

/** Checks the syntax of a partial get's pointers (their count and sizes are field ranges) before anything is read. */
export function checkPointers(fields: readonly string[], what = 'GetRequest.fields'): void {
  fields.forEach((f, i) => parsePointer(f, `${what}[${i}]`));
}

/**
 * The document `value` reduced to the paths `fields` point at, as UTF-8 JSON: each found path keeps
 * its place (objects keep their members' names, an array keeps the chosen elements in their order,
 * without the others); a path that is not in the document is left out. Throws STORE_NOT_JSON naming
 * `key` when the value is not a JSON document.
 */
export function projectDocument(key: Buffer, value: Buffer, fields: readonly string[]): Buffer {
  const doc = parseDocument(key, value, false);
  const tree: SelectTree = new Map();
  let whole = false;
  for (let i = 0; i < fields.length; i++) {
    const tokens = parsePointer(fields[i]!, `GetRequest.fields[${i}]`);
    if (tokens.length === 0) whole = true;
    else select(tree, tokens);
  }
  const out = whole ? doc : (materialize(doc, tree) ?? (Array.isArray(doc) ? [] : {}));
  checkPrecision(key, out, 'which JSON numbers here would round: read the whole value with a plain get');
  return Buffer.from(JSON.stringify(out));
}

/**
 * Applies `patch` to the stored document `current` of `key` and returns the new document as UTF-8
 * JSON. Throws STORE_NOT_JSON (the stored value is not JSON), STORE_INVALID_ARGUMENT (the patch is
 * not valid for its mode, a path is malformed or missing — naming key, operation and path) or
 * STORE_PATCH_TEST_FAILED (a JSON Patch `test` did not hold).
 */
export function patchDocument(key: Buffer, current: Buffer, patch: Buffer, mode: PatchMode): Buffer {
  const doc = parseDocument(key, current);
  const patchDoc = parsePatch(key, patch);
  const result = mode === 'merge' ? mergePatch(doc, patchDoc) : jsonPatch(key, doc, patchDoc);
  return Buffer.from(JSON.stringify(result));
}

function parseDocument(key: Buffer, value: Buffer, exact = true): Json {
  let doc: Json;
  try {
    doc = JSON.parse(value.toString('utf8')) as Json;
  } catch (err) {
    throw new StoreError('STORE_NOT_JSON', `the value of key "${displayBytes(key)}" is not a JSON document (${(err as Error).message}): partial get and patch work only on JSON values; read or write it whole with Get/Put`, {
      context: { key: displayBytes(key) },
    });
  }
  if (exact) checkPrecision(key, doc, 'which a patch would round: change it with Put instead');
  return doc;
}

/** Refuses a document holding an integer JSON.parse could not keep exactly (beyond 2^53 − 1). */
function checkPrecision(key: Buffer, doc: Json, why: string): void {
  const unsafe = unsafeIntegerPath(doc, '');
  if (unsafe !== undefined) {
    throw new StoreError('STORE_NOT_JSON', `the JSON document of key "${displayBytes(key)}" holds an integer beyond 2^53 − 1 at "${unsafe}", ${why}`, {
      context: { key: displayBytes(key), path: unsafe },
    });
  }
}

function parsePatch(key: Buffer, patch: Buffer): Json {
  try {
    return JSON.parse(patch.toString('utf8')) as Json;
  } catch (err) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `PatchRequest.patch for key "${displayBytes(key)}" is not JSON: ${(err as Error).message}`, { context: { field: 'PatchRequest.patch', key: displayBytes(key) } });
  }
}

/** The first integer that is not exactly representable (JSON.parse rounded it), as a pointer. */
function unsafeIntegerPath(value: Json, path: string): string | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && !Number.isSafeInteger(value) ? path || '/' : undefined;
  if (value === null || typeof value !== 'object') return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unsafeIntegerPath(value[i]!, `${path}/${i}`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  for (const [k, v] of Object.entries(value)) {
    const found = unsafeIntegerPath(v, `${path}/${escapeToken(k)}`);
    if (found !== undefined) return found;
  }
  return undefined;
}

function escapeToken(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** RFC 7396 §2, as its pseudocode. Members are set as own properties, so `__proto__` is a plain name. */
function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return patch;
  const out: { [key: string]: Json } = isObject(target) ? target : {};
  for (const [name, value] of Object.entries(patch)) {
    if (value === null) delete out[name];
    else setOwn(out, name, mergePatch(Object.hasOwn(out, name) ? out[name]! : null, value));
  }
  return out;
}

function jsonPatch(key: Buffer, doc: Json, patch: Json): Json {
  const k = displayBytes(key);
  if (!Array.isArray(patch)) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `PatchRequest.patch for key "${k}" is not a JSON Patch: it must be an array of operations (RFC 6902)`, { context: { field: 'PatchRequest.patch', key: k } });
  }
  if (patch.length > MAX_PATCH_OPS) {
    throw new StoreError('STORE_INVALID_ARGUMENT', `PatchRequest.patch for key "${k}" has ${patch.length} operations, out of range: allowed 0–${MAX_PATCH_OPS}`, { context: { field: 'PatchRequest.patch', key: k } });
  }
  // The document sits under one member of a holder, so operations on the root ("") work like any other.
  const holder: { [key: string]: Json } = { d: doc };
  patch.forEach((raw, i) => {
    const op = checkOperation(k, raw, i);
    const moved: Operation = { ...op, path: `/d${op.path}`, ...('from' in op ? { from: `/d${op.from}` } : {}) } as Operation;
    const [error] = applyPatch(holder, [moved]);
    if (error === null || error === undefined) return;
    const where = `operation ${i} (${op.op} "${truncateForMessage(op.path)}")`;
    if (error.name === 'TestError') {
      throw new StoreError('STORE_PATCH_TEST_FAILED', `JSON Patch of key "${k}": ${where} failed: the value at "${truncateForMessage(op.path)}" is not the one tested; nothing was written`, {
        context: { key: k, path: op.path, operation: i },
      });
    }
    const at = (error as { path?: string }).path;
    const missing = error.name === 'MissingError' && at !== undefined ? `"${truncateForMessage(at.slice(2))}" is not in the document` : error.message;
    throw new StoreError('STORE_INVALID_ARGUMENT', `JSON Patch of key "${k}": ${where} cannot be applied: ${missing}; nothing was written`, {
      context: { key: k, path: op.path, operation: i },
    });
  });
  return holder.d!;
}

/** One operation of a JSON Patch, its shape checked (RFC 6902 §4) with our messages. */
function checkOperation(key: string, raw: Json, i: number): Operation {
  const bad = (why: string, path?: string): never => {
    throw new StoreError('STORE_INVALID_ARGUMENT', `JSON Patch of key "${key}": operation ${i} ${why}`, { context: { key, operation: i, ...(path === undefined ? {} : { path }) } });
  };
  if (!isObject(raw)) return bad('is not an object');
  const op = raw.op;
  if (typeof op !== 'string' || !JSON_PATCH_OPS.has(op)) return bad(`has op ${JSON.stringify(op) ?? 'missing'}: allowed add, remove, replace, move, copy, test`);
  const pointer = (name: 'path' | 'from'): string => {
    const p = raw[name];
    if (typeof p !== 'string') return bad(`(${op}) needs a string "${name}"`);
    for (const token of parsePointer(p, `JSON Patch of key "${key}": operation ${i} ${name}`)) {
      if (UNSAFE_TOKENS.has(token)) bad(`(${op}) ${name} "${truncateForMessage(p)}" goes through "${token}", which JSON Patch here does not support: change that member with a merge patch or Put`, p);
    }
    return p;
  };
  const path = pointer('path');
  if ((op === 'add' || op === 'replace' || op === 'test') && !Object.hasOwn(raw, 'value')) return bad(`(${op} "${truncateForMessage(path)}") needs a "value"`, path);
  if (op === 'move' || op === 'copy') {
    const from = pointer('from');
    if (op === 'move' && path.startsWith(`${from}/`)) bad(`(move) cannot move "${truncateForMessage(from)}" into its own child "${truncateForMessage(path)}"`, path);
    return { op, path, from } as Operation;
  }
  return { ...raw, op, path } as unknown as Operation;
}

type SelectTree = Map<string, SelectTree | true>;

function select(tree: SelectTree, tokens: readonly string[]): void {
  let node = tree;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    const last = i === tokens.length - 1;
    const existing = node.get(token);
    if (existing === true) return; // an ancestor is selected whole
    if (last) {
      node.set(token, true);
      return;
    }
    if (existing === undefined) {
      const child: SelectTree = new Map();
      node.set(token, child);
      node = child;
    } else {
      node = existing;
    }
  }
}

/** The part of `value` the tree selects; undefined when it selects nothing there. */
function materialize(value: Json, tree: SelectTree): Json | undefined {
  if (Array.isArray(value)) {
    const picked = [...tree.entries()].filter(([t]) => ARRAY_INDEX.test(t) && Number(t) < value.length).sort(([a], [b]) => Number(a) - Number(b));
    const out: Json[] = [];
    for (const [t, sub] of picked) {
      const part = sub === true ? value[Number(t)]! : materialize(value[Number(t)]!, sub);
      if (part !== undefined) out.push(part);
    }
    return out.length > 0 ? out : undefined;
  }
  if (!isObject(value)) return undefined;
  const out: { [key: string]: Json } = {};
  let any = false;
  for (const [t, sub] of tree) {
    if (!Object.hasOwn(value, t)) continue;
    const part = sub === true ? value[t]! : materialize(value[t]!, sub);
    if (part === undefined) continue;
    setOwn(out, t, part);
    any = true;
  }
  return any ? out : undefined;
}

function isObject(v: Json | undefined): v is { [key: string]: Json } {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Sets a member as an own property, also one named `__proto__` (plain assignment would change the prototype). */
function setOwn(target: { [key: string]: Json }, name: string, value: Json): void {
  Object.defineProperty(target, name, { value, enumerable: true, writable: true, configurable: true });
}
