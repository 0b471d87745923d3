import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { STORE_ERROR_CODES } from '../../store/index.js';

const doc = readFileSync(resolve(import.meta.dirname, '../../ERRORS.md'), 'utf8');
const rows = new Map(
  doc
    .split('\n')
    .map((line) => /^\| `([A-Z_]+)` \| ([A-Z_]+) \| (yes|no) \|/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [m[1]!, { grpc: m[2]!, retryable: m[3] === 'yes' }]),
);
const grpcNames: Record<number, string> = {
  1: 'CANCELLED', 2: 'UNKNOWN', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED', 5: 'NOT_FOUND', 8: 'RESOURCE_EXHAUSTED',
  9: 'FAILED_PRECONDITION', 10: 'ABORTED', 13: 'INTERNAL', 14: 'UNAVAILABLE',
};

describe('ERRORS.md', () => {
  it.each(Object.entries(STORE_ERROR_CODES))('documents %s with its gRPC status and retryability', (code, spec) => {
    expect(rows.get(code), `${code} has no row in ERRORS.md`).toEqual({ grpc: grpcNames[spec.grpc], retryable: spec.retryable });
  });

  it('lists no code the store does not have', () => {
    for (const code of rows.keys()) expect(Object.keys(STORE_ERROR_CODES)).toContain(code);
  });
});
