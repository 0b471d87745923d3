import type { ConnectionOptions, WorkerOptions } from 'bullmq';

/** Default of `lockDurationMs` in every worker's options. */
export const DEFAULT_LOCK_DURATION_MS = 30_000;

/**
 * The BullMQ worker settings every shardpipe worker shares. A worker killed mid-job leaves the job
 * stalled: after the lock runs out another worker takes it over and continues from the job's
 * checkpoint, so a stall is not counted as a failure until it repeats ten times.
 */
export function workerSettings(connection: ConnectionOptions, lockDurationMs = DEFAULT_LOCK_DURATION_MS): Pick<WorkerOptions, 'connection' | 'lockDuration' | 'stalledInterval' | 'maxStalledCount'> {
  return {
    connection,
    lockDuration: lockDurationMs,
    stalledInterval: Math.max(1000, Math.floor(lockDurationMs / 2)),
    maxStalledCount: 10,
  };
}
