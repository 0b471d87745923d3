import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BACKUP_ERROR_CODES } from '../../backup/index.js';
import { CONFIG_ERROR_CODES } from '../../common/index.js';
import { FILE_ERROR_CODES } from '../../files/index.js';
import { GATEWAY_ERROR_CODES } from '../../gateway/index.js';
import { RESTORE_ERROR_CODES } from '../../restore/index.js';
import { INGEST_ERROR_CODES } from '../../ingest/index.js';
import { JOBS_ERROR_CODES } from '../../jobs/index.js';
import { METRICS_ERROR_CODES } from '../../metrics-server/index.js';
import { STORE_ERROR_CODES } from '../../store/index.js';

const doc = readFileSync(resolve(import.meta.dirname, '../../ERRORS.md'), 'utf8');
const storeRows = new Map(
  [...doc.matchAll(/^\| `(STORE_[A-Z_]+)` \| ([A-Z_]+) \| (yes|no) \|/gm)].map((m) => [m[1]!, { grpc: m[2]!, retryable: m[3] === 'yes' }]),
);
const gatewayRows = new Map(
  [...doc.matchAll(/^\| `(GATEWAY_[A-Z_]+)` \| ([A-Z_]+) \| (yes|no) \|/gm)].map((m) => [m[1]!, { grpc: m[2]!, retryable: m[3] === 'yes' }]),
);
const otherRows = new Map([...doc.matchAll(/^\| `((?:FILE|INGEST|JOBS|BACKUP|RESTORE|METRICS|CONFIG)_[A-Z_]+)` \| (yes|no) \|/gm)].map((m) => [m[1]!, { retryable: m[2] === 'yes' }]));
const grpcNames: Record<number, string> = {
  1: 'CANCELLED', 2: 'UNKNOWN', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED', 5: 'NOT_FOUND', 8: 'RESOURCE_EXHAUSTED',
  7: 'PERMISSION_DENIED', 9: 'FAILED_PRECONDITION', 10: 'ABORTED', 13: 'INTERNAL', 14: 'UNAVAILABLE', 16: 'UNAUTHENTICATED',
};

describe('ERRORS.md', () => {
  it.each(Object.entries(STORE_ERROR_CODES))('documents %s with its gRPC status and retryability', (code, spec) => {
    expect(storeRows.get(code), `${code} has no row in ERRORS.md`).toEqual({ grpc: grpcNames[spec.grpc], retryable: spec.retryable });
  });

  it.each(Object.entries(GATEWAY_ERROR_CODES))('documents %s with its gRPC status and retryability', (code, spec) => {
    expect(gatewayRows.get(code), `${code} has no row in ERRORS.md`).toEqual({ grpc: grpcNames[spec.grpc], retryable: spec.retryable });
  });

  it.each(Object.entries({ ...FILE_ERROR_CODES, ...INGEST_ERROR_CODES, ...JOBS_ERROR_CODES, ...BACKUP_ERROR_CODES, ...RESTORE_ERROR_CODES, ...METRICS_ERROR_CODES, ...CONFIG_ERROR_CODES }))('documents %s with its retryability', (code, spec) => {
    expect(otherRows.get(code), `${code} has no row in ERRORS.md`).toEqual({ retryable: spec.retryable });
  });

  it('lists no code the code base does not have', () => {
    const known = [...Object.keys(STORE_ERROR_CODES), ...Object.keys(GATEWAY_ERROR_CODES), ...Object.keys(FILE_ERROR_CODES), ...Object.keys(INGEST_ERROR_CODES), ...Object.keys(JOBS_ERROR_CODES), ...Object.keys(BACKUP_ERROR_CODES), ...Object.keys(RESTORE_ERROR_CODES), ...Object.keys(METRICS_ERROR_CODES), ...Object.keys(CONFIG_ERROR_CODES)];
    for (const code of [...storeRows.keys(), ...gatewayRows.keys(), ...otherRows.keys()]) expect(known).toContain(code);
  });
});
