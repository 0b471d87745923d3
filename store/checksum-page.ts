/**
 * Entries one Checksum call digests at most (`max_entries`): about a second's work on a loaded
 * node, so the checksum of a partition of any size never runs into an RPC deadline (in one call,
 * the digest alone took 1.3 s per 1M entries at load 8, so some 4M entries reached the 10 s deadline).
 */
export const CHECKSUM_PAGE_ENTRIES = 200_000;
