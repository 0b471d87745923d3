import { describe, expect, it } from 'vitest';
import { StoreError, parsePointer, patchDocument, projectDocument } from '../../store/index.js';
import { thrownBy } from '../helpers/rejection.js';

const KEY = Buffer.from('doc');
const buf = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const merge = (target: unknown, patch: unknown): unknown => JSON.parse(patchDocument(KEY, buf(target), buf(patch), 'merge').toString());
const project = (doc: unknown, fields: string[]): unknown => JSON.parse(projectDocument(KEY, buf(doc), fields).toString());

describe('JSON Merge Patch (RFC 7396)', () => {
  // RFC 7396 Appendix A, every example (a non-object target or patch included).
  it.each([
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [['a', 'b'], ['c', 'd'], ['c', 'd']],
    [{ a: 'b' }, ['c'], ['c']],
    [{ a: 'foo' }, null, null],
    [{ a: 'foo' }, 'bar', 'bar'],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ])('%j patched with %j is %j', (target, patch, result) => {
    expect(merge(target, patch)).toEqual(result);
  });

  it('treats "__proto__" as a plain member name (no prototype change)', () => {
    const out = patchDocument(KEY, buf({}), Buffer.from('{"__proto__":{"polluted":true}}'), 'merge');
    expect(out.toString()).toBe('{"__proto__":{"polluted":true}}');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('JSON Pointer (RFC 6901) and partial get', () => {
  it('parses the RFC 6901 examples', () => {
    expect(parsePointer('', 'p')).toEqual([]);
    expect(parsePointer('/foo/0', 'p')).toEqual(['foo', '0']);
    expect(parsePointer('/', 'p')).toEqual(['']);
    expect(parsePointer('/a~1b', 'p')).toEqual(['a/b']);
    expect(parsePointer('/m~0n', 'p')).toEqual(['m~n']);
    expect(parsePointer('/~01', 'p')).toEqual(['~1']);
    expect(thrownBy(() => parsePointer('foo', 'GetRequest.fields[0]'), StoreError).code).toBe('STORE_INVALID_ARGUMENT');
    expect(thrownBy(() => parsePointer('/a~2', 'p'), StoreError).message).toContain('"~" not followed by 0 or 1');
  });

  it('keeps each found path in place, arrays with the chosen elements in order; a parent selected whole wins', () => {
    const doc = { foo: ['bar', 'baz', 'qux'], '': 0, 'a/b': 1, k: { x: 1, y: { z: 2 } } };
    expect(project(doc, ['/foo/2', '/foo/0', '/a~1b', '/'])).toEqual({ foo: ['bar', 'qux'], 'a/b': 1, '': 0 });
    expect(project(doc, ['/k/y/z', '/k'])).toEqual({ k: { x: 1, y: { z: 2 } } });
    expect(project(doc, ['/foo/01', '/foo/-', '/foo/9', '/k/x/deeper'])).toEqual({});
    expect(project([{ a: 1, b: 2 }, { a: 3 }], ['/1/a'])).toEqual([{ a: 3 }]);
    expect(project(doc, [''])).toEqual(doc);
  });

  it('refuses a value that is not JSON, naming the key', () => {
    const err = thrownBy(() => projectDocument(KEY, Buffer.from('{"a":'), ['/a']), StoreError);
    expect(err.code).toBe('STORE_NOT_JSON');
    expect(err.message).toContain('key "doc"');
  });

  it('refuses to return an integer JSON would round, but reads the rest of such a document', () => {
    const raw = Buffer.from('{"id":123456789012345678901,"n":1}');
    expect(JSON.parse(projectDocument(KEY, raw, ['/n']).toString())).toEqual({ n: 1 });
    expect(thrownBy(() => projectDocument(KEY, raw, ['/id']), StoreError).message).toContain('"/id"');
  });
});

describe('JSON Patch (RFC 6902) through rfc6902', () => {
  const apply = (doc: unknown, ops: unknown): unknown => JSON.parse(patchDocument(KEY, buf(doc), buf(ops), 'json-patch').toString());

  it('applies the operations in order, also on the root', () => {
    expect(apply({ foo: 'bar' }, [{ op: 'add', path: '/baz', value: 'qux' }, { op: 'remove', path: '/foo' }])).toEqual({ baz: 'qux' });
    expect(apply({ foo: ['bar', 'baz'] }, [{ op: 'add', path: '/foo/1', value: 'qux' }])).toEqual({ foo: ['bar', 'qux', 'baz'] });
    expect(apply({ a: 1 }, [{ op: 'replace', path: '', value: [1] }])).toEqual([1]);
    expect(apply({ a: { b: 1 } }, [{ op: 'move', from: '/a/b', path: '/c' }, { op: 'copy', from: '/c', path: '/d' }])).toEqual({ a: {}, c: 1, d: 1 });
  });

  it('names the failing operation: a test that does not hold, a missing path, a bad shape', () => {
    const test = thrownBy(() => apply({ a: 1 }, [{ op: 'test', path: '/a', value: 2 }]), StoreError);
    expect(test.code).toBe('STORE_PATCH_TEST_FAILED');
    const missing = thrownBy(() => apply({ a: 1 }, [{ op: 'add', path: '/x', value: 1 }, { op: 'replace', path: '/b', value: 1 }]), StoreError);
    expect(missing.code).toBe('STORE_INVALID_ARGUMENT');
    expect(missing.message).toContain('operation 1 (replace "/b")');
    expect(thrownBy(() => apply({}, [{ op: 'add', path: '/a' }]), StoreError).message).toContain('needs a "value"');
    expect(thrownBy(() => apply({ a: {} }, [{ op: 'move', from: '/a', path: '/a/b' }]), StoreError).message).toContain('into its own child');
    expect(thrownBy(() => apply({}, [{ op: 'add', path: '/constructor/x', value: 1 }]), StoreError).message).toContain('goes through "constructor"');
  });
});
