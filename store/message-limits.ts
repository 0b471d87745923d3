/**
 * Largest gRPC message a store node sends and a client accepts (responses: a scan batch is at most
 * `scanBatchMaxBytes`, default 4 MiB, or one entry of at most `maxKeyBytes + maxValueBytes`; a
 * SplitKeys answer at most 1000 keys). Requests are bounded by each node's own receive limit,
 * `maxBatchBytes` + 1 MiB. 64 MiB.
 */
export const MAX_RESPONSE_MESSAGE_BYTES = 64 * 1024 * 1024;
