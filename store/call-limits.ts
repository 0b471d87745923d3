/** The limits of one RPC attempt. */
export interface CallLimits {
  /** Absolute deadline (Date.now() based). */
  deadline: number;
  signal?: AbortSignal;
}
