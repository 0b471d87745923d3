import { describe, expect, it } from 'vitest';
import { BackupError, backupIdTimeMs, isBackupId, newBackupId, parseBackupUrl, parseManifest, serializeManifest, shardFileName, type BackupManifest } from '../../backup/index.js';
import { thrownBy } from '../helpers/rejection.js';

const ID = '20261124T020000Z-3fa9c1';

function manifest(): BackupManifest {
  return {
    formatVersion: 1,
    backupId: ID,
    startedAt: '2026-11-24T02:00:00.000Z',
    finishedAt: '2026-11-24T02:01:12.345Z',
    mapVersion: 3,
    snapshotAt: '2026-11-24T02:00:00.120Z',
    partitions: [{ id: 0, start: '', end: '8000', node: '127.0.0.1:7001', rows: 5 }, { id: 1, start: '8000', end: '', node: '127.0.0.1:7002', rows: 4 }],
    shards: [
      { index: 0, start: '', end: '4000', file: 'shard-00000.parquet', rows: 4, bytes: 100, checksum: 'a'.repeat(64) },
      { index: 1, start: '4000', end: '', file: 'shard-00001.parquet', rows: 5, bytes: 200, checksum: 'b'.repeat(64) },
    ],
    totals: { rows: 9, bytes: 300 },
  };
}

function refusal(text: string, expect_: Parameters<typeof parseManifest>[1] = {}): BackupError {
  return thrownBy(() => parseManifest(text, expect_), BackupError);
}

describe('backup ids', () => {
  it('sort by start time and carry it', () => {
    const a = newBackupId(new Date('2026-11-24T02:00:00Z'));
    const b = newBackupId(new Date('2026-11-24T02:00:01Z'));
    expect(isBackupId(a)).toBe(true);
    expect(a < b).toBe(true);
    expect(a).toMatch(/^20261124T020000Z-[0-9a-f]{6}$/);
    expect(backupIdTimeMs(a)).toBe(Date.parse('2026-11-24T02:00:00Z'));
    expect(isBackupId('20261124T020000Z-3FA9C1')).toBe(false);
    expect(shardFileName(7)).toBe('shard-00007.parquet');
  });
});

describe('parseBackupUrl', () => {
  it('accepts file:///DIR and az://CONTAINER/PREFIX', () => {
    expect(parseBackupUrl('file:///var/backups/')).toEqual({ kind: 'file', dir: '/var/backups' });
    expect(parseBackupUrl('az://backups')).toEqual({ kind: 'az', container: 'backups', prefix: '' });
    expect(parseBackupUrl('az://backups/prod/eu')).toEqual({ kind: 'az', container: 'backups', prefix: 'prod/eu/' });
  });

  it.each(['s3://bucket/x', 'file://relative/dir', 'az://Bad_Container/x', 'az://backups/a//b', 'az://backups/../x', '/plain/path'])('refuses %s with BACKUP_INVALID_TARGET', (url) => {
    expect(() => parseBackupUrl(url)).toThrowError(expect.objectContaining({ code: 'BACKUP_INVALID_TARGET' }));
  });
});

describe('manifest schema (FORMAT.md)', () => {
  it('round-trips a valid manifest', () => {
    expect(parseManifest(serializeManifest(manifest()), { backupId: ID })).toEqual(manifest());
  });

  it('refuses an unknown formatVersion as such, before anything else', () => {
    const err = refusal(JSON.stringify({ formatVersion: 3, anything: true }));
    expect(err.code).toBe('BACKUP_UNSUPPORTED_VERSION');
    expect(err.message).toContain('formatVersion 3');
    expect(refusal('{}').code).toBe('BACKUP_UNSUPPORTED_VERSION');
  });

  it('format 2: every shard has a content hash; format 1 has none; both round-trip', () => {
    const v2 = { ...manifest(), formatVersion: 2 as const, shards: manifest().shards.map((s, i) => ({ ...s, contentHash: String(i).repeat(64) })) };
    expect(parseManifest(serializeManifest(v2), { backupId: ID })).toEqual(v2);
    const missing = { ...v2, shards: [v2.shards[0], manifest().shards[1]] };
    expect(refusal(JSON.stringify(missing)).message).toMatch(/shards\[1\] has no contentHash/);
    const extra = { ...manifest(), shards: [v2.shards[0], manifest().shards[1]] };
    expect(refusal(JSON.stringify(extra)).message).toMatch(/shards\[0\] has a contentHash, which format 1 does not have/);
    expect(refusal(JSON.stringify({ ...v2, shards: [{ ...v2.shards[0], contentHash: 'ABC' }, v2.shards[1]] })).message).toMatch(/contentHash must be 64 lowercase hex/);
  });

  it.each([
    ['not JSON', () => '{', /not JSON/],
    ['a gap between shards', () => JSON.stringify({ ...manifest(), shards: [manifest().shards[0], { ...manifest().shards[1], start: '4001' }] }), /contiguous/],
    ['no shard reaching the end', () => JSON.stringify({ ...manifest(), shards: [{ ...manifest().shards[0], end: '4000' }], totals: { rows: 4, bytes: 100 } }), /end of the keyspace/],
    ['totals that do not add up', () => JSON.stringify({ ...manifest(), totals: { rows: 10, bytes: 300 } }), /totals.rows/],
    ['a file name that does not match the index', () => JSON.stringify({ ...manifest(), shards: [{ ...manifest().shards[0], file: 'shard-00009.parquet' }, manifest().shards[1]] }), /expected shard-00000/],
    ['uppercase hex keys', () => JSON.stringify({ ...manifest(), shards: [{ ...manifest().shards[0], end: '40AB' }, { ...manifest().shards[1], start: '40AB' }] }), /lowercase hex/],
    ['a short checksum', () => JSON.stringify({ ...manifest(), shards: [{ ...manifest().shards[0], checksum: 'abc' }, manifest().shards[1]] }), /checksum/],
  ])('refuses %s with BACKUP_MANIFEST_INVALID', (_what, text, message) => {
    const err = refusal(text());
    expect(err.code).toBe('BACKUP_MANIFEST_INVALID');
    expect(err.message).toMatch(message);
  });

  it("refuses another backup's manifest", () => {
    expect(refusal(serializeManifest(manifest()), { backupId: '20261125T020000Z-000000' }).message).toContain('names backup');
  });
});
