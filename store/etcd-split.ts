import { z } from 'zod';
import { ETCD_PREFIX } from './etcd-map-store.js';

const partitionId = z.number().int().min(0).max(0xffffffff);
const hexKey = z.string().regex(/^(?:[0-9a-fA-F]{2})+$/, 'a key must be hex bytes');

/**
 * `prepare/P` (no lease; written and removed by the leading coordinator): every replica of P copies
 * P's rows of `[at, P.end)` into a new LevelDB for `newPartition` and tracks the keys written there
 * since. Without `at` (a split `--auto`), P's read replica reports the median key instead.
 */
const prepareSchema = z.object({
  operation: z.string(),
  kind: z.literal('split'),
  partition: partitionId,
  epoch: z.number().int().min(1),
  newPartition: partitionId,
  at: hexKey.optional(),
  requestedAtMs: z.number(),
});
export type SplitPrepareRequest = z.infer<typeof prepareSchema>;

/**
 * `merge/P` (no lease; the coordinator's): every replica of P and its upper neighbour `other` copies
 * `other`'s rows into P's LevelDB and tracks the keys written to `other` since.
 */
const mergeSchema = z.object({
  operation: z.string(),
  partition: partitionId,
  epoch: z.number().int().min(1),
  other: partitionId,
  otherEpoch: z.number().int().min(1),
  requestedAtMs: z.number(),
});
export type MergePrepareRequest = z.infer<typeof mergeSchema>;

/**
 * `prepared/P/NODE` (under the node's lease): `key` (the read replica's median of P, for an auto
 * split), `prepared` (the copy is done and writes are tracked), or `failed`.
 */
const preparedSchema = z.object({
  operation: z.string(),
  node: z.string(),
  epoch: z.number().int().min(1),
  state: z.enum(['key', 'prepared', 'failed']),
  at: hexKey.optional(),
  rows: z.number().int().min(0).optional(),
  error: z.string().optional(),
  updatedAtMs: z.number(),
});
export type SplitPreparedReport = z.infer<typeof preparedSchema>;

/** `pause/P` (no lease; the coordinator's): the head of P holds new writes (store/write-pause.ts). */
const pauseSchema = z.object({
  operation: z.string(),
  epoch: z.number().int().min(1),
  reason: z.string(),
  maxPauseMs: z.number().int().min(1),
  requestedAtMs: z.number(),
});
export type PauseRequest = z.infer<typeof pauseSchema>;

/**
 * `paused/P/HEAD` (under the head's lease): `paused` once every write it applied is acknowledged
 * by the whole chain (all replicas at `stream`/`seq`); `released` when it let the writes go on
 * (`reason`: the map changed, the pause ran out, the request went), with the pause measured.
 */
const pausedSchema = z.object({
  operation: z.string(),
  node: z.string(),
  epoch: z.number().int().min(1),
  state: z.enum(['paused', 'released']),
  stream: z.string().optional(),
  seq: z.number().int().min(0).optional(),
  /** The map version the head held the writes under. */
  mapVersion: z.number().int().min(1),
  heldAtMs: z.number(),
  ms: z.number().min(0).optional(),
  heldWrites: z.number().int().min(0).optional(),
  reason: z.string().optional(),
});
export type PausedReport = z.infer<typeof pausedSchema>;

/** The split keys besides `pause/` and `paused/` (store/etcd-operations.ts operationKeys). */
export function splitEtcdKeys(prefix = ETCD_PREFIX): {
  prepare: string;
  prepareOf: (partition: number) => string;
  prepared: string;
  preparedOf: (partition: number, node: string) => string;
  merge: string;
  mergeOf: (partition: number) => string;
} {
  return {
    prepare: `${prefix}/prepare/`,
    prepareOf: (partition) => `${prefix}/prepare/${partition}`,
    prepared: `${prefix}/prepared/`,
    preparedOf: (partition, node) => `${prefix}/prepared/${partition}/${node}`,
    merge: `${prefix}/merge/`,
    mergeOf: (partition) => `${prefix}/merge/${partition}`,
  };
}

function parse<T>(schema: z.ZodType<T>, value: Buffer | string): T | undefined {
  let json: unknown;
  try {
    json = JSON.parse(value.toString());
  } catch {
    return undefined;
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

/** Parsers of the values under those keys; undefined for anything unreadable (left alone). */
export const splitValues = {
  prepare: (v: Buffer | string): SplitPrepareRequest | undefined => parse(prepareSchema, v),
  merge: (v: Buffer | string): MergePrepareRequest | undefined => parse(mergeSchema, v),
  prepared: (v: Buffer | string): SplitPreparedReport | undefined => parse(preparedSchema, v),
  pause: (v: Buffer | string): PauseRequest | undefined => parse(pauseSchema, v),
  paused: (v: Buffer | string): PausedReport | undefined => parse(pausedSchema, v),
};
