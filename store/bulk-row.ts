/** A row to bulk-insert. Optional metadata (etag, times) is kept as given, for restores. */
export interface BulkRowInput {
  key: Buffer;
  value: Buffer;
  /** > 0: keep this etag (the node's sequence moves past it). 0: assign the next one. */
  etag?: number;
  updatedAtMs?: number;
  /** Absolute expiry (Unix ms); 0 = none. Rows already expired are skipped. */
  expiresAtMs?: number;
}
