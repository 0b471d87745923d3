import { describe, expect, it } from 'vitest';
import { AuthTokens, ConfigError, checkBind, isLoopback, redactUrl, roleAllows } from '../../common/index.js';

const A = 'admin-token-0123456789abcdef';
const W = 'write-token-0123456789abcdef';
const R = 'read-token-0123456789abcdef';

describe('AuthTokens', () => {
  const tokens = AuthTokens.parse(`# comment\n\nadmin ${A}\r\nwrite   ${W}\nread ${R}\n`);

  it('gives each token its role and refuses unknown, missing and prefix tokens', () => {
    expect(tokens.check(A)).toEqual({ ok: true, role: 'admin' });
    expect(tokens.check(W)).toEqual({ ok: true, role: 'write' });
    expect(tokens.check(R)).toEqual({ ok: true, role: 'read' });
    expect(tokens.check(undefined)).toEqual({ ok: false, reason: 'missing' });
    expect(tokens.check('')).toEqual({ ok: false, reason: 'missing' });
    expect(tokens.check(A.slice(0, -1))).toEqual({ ok: false, reason: 'invalid' });
    expect(tokens.check(`${A}x`)).toEqual({ ok: false, reason: 'invalid' });
  });

  it('presents the weakest role to peers', () => {
    expect(tokens.peerToken).toBe(R);
    expect(AuthTokens.parse(`admin ${A}`).peerToken).toBe(A);
  });

  it('roles nest: admin ⊇ write ⊇ read', () => {
    expect(roleAllows('admin', 'admin') && roleAllows('admin', 'write') && roleAllows('admin', 'read')).toBe(true);
    expect(roleAllows('write', 'write') && roleAllows('write', 'read')).toBe(true);
    expect(roleAllows('write', 'admin')).toBe(false);
    expect(roleAllows('read', 'write')).toBe(false);
  });

  it('the replica role stands apart: only a replica token may forward, and it may do nothing else; peers are shown a client role', () => {
    for (const role of ['read', 'write', 'admin'] as const) {
      expect(roleAllows(role, 'replica')).toBe(false);
      expect(roleAllows('replica', role)).toBe(false);
    }
    expect(roleAllows('replica', 'replica')).toBe(true);
    const withReplica = AuthTokens.parse(`replica ${A}\nread ${R}`);
    expect(withReplica.replicaToken).toBe(A);
    expect(withReplica.peerToken).toBe(R);
    expect(withReplica.check(A)).toEqual({ ok: true, role: 'replica' });
    expect(() => AuthTokens.parse(`replica ${A}`)).toThrow(/only replica tokens/);
  });

  it.each([
    [`admin ${A}\nroot ${W}`, 'tokens line 2: unknown role "root"'],
    [`admin ${A}\nwrite`, 'tokens line 2: expected "ROLE TOKEN"'],
    [`admin ${A} extra`, 'tokens line 1: expected "ROLE TOKEN"'],
    ['read short', 'tokens line 1: the token is 5 characters, at least 16'],
    [`admin ${A}\nread ${A}`, 'tokens line 2: the same token appears twice'],
    ['# only a comment\n', 'tokens: no tokens'],
  ])('refuses %j naming the line', (text, message) => {
    expect(() => AuthTokens.parse(text, 'tokens')).toThrow(message);
    expect(() => AuthTokens.parse(text, 'tokens')).toThrow(ConfigError);
  });

  it('never puts a token in its errors', () => {
    try {
      AuthTokens.parse(`superuser ${A}`, 'tokens');
    } catch (err) {
      expect((err as Error).message).not.toContain(A);
    }
  });

  it('reads Bearer and Basic (token as password) authorization headers', () => {
    expect(AuthTokens.tokenOfHeader(`Bearer ${A}`)).toBe(A);
    expect(AuthTokens.tokenOfHeader(`bearer ${A}`)).toBe(A);
    expect(AuthTokens.tokenOfHeader(`Basic ${Buffer.from(`me:${R}`).toString('base64')}`)).toBe(R);
    expect(AuthTokens.tokenOfHeader(`Token ${A}`)).toBeUndefined();
    expect(AuthTokens.tokenOfHeader(undefined)).toBeUndefined();
  });
});

describe('protected mode', () => {
  it.each([
    ['127.0.0.1', true], ['127.8.9.10', true], ['::1', true], ['[::1]', true], ['::ffff:127.0.0.1', true], ['localhost', true],
    ['0.0.0.0', false], ['::', false], ['10.0.0.1', false], ['::ffff:10.0.0.1', false], ['store-0', false], [undefined, false],
  ])('%s is loopback: %s', (address, loopback) => {
    expect(isLoopback(address)).toBe(loopback);
  });

  it('refuses a non-loopback bind unless authenticated or --insecure', () => {
    expect(() => checkBind('0.0.0.0', { what: 'store node', authenticated: false, insecure: false })).toThrow(/refusing to bind the store node to 0\.0\.0\.0.*--insecure/);
    expect(() => checkBind('0.0.0.0', { what: 'store node', authenticated: true, insecure: false })).not.toThrow();
    expect(() => checkBind('0.0.0.0', { what: 'store node', authenticated: false, insecure: true })).not.toThrow();
    expect(() => checkBind('127.0.0.1', { what: 'store node', authenticated: false, insecure: false })).not.toThrow();
  });
});

describe('redactUrl', () => {
  it('masks passwords and lone user names, keeps the rest', () => {
    expect(redactUrl('redis://:s3cret@h:6379/2')).toBe('redis://:***@h:6379/2');
    expect(redactUrl('rediss://user:s3cret@h:6380')).toBe('rediss://user:***@h:6380');
    expect(redactUrl('redis://h:6379')).toBe('redis://h:6379');
  });
});
