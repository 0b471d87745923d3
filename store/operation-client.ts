import { newOperationId, parseOperationRecord, type OperationRecord } from './etcd-operations.js';
import { NodeConnection, type StoreCredentials } from './node-connection.js';
import type { OperationSubmission, OperationsApi } from './operation-admin.js';
import { StoreError } from './store-errors.js';

/** Options of `OperationClient`. */
export interface OperationClientOptions {
  /** Store nodes HOST:PORT, asked in turn until one answers. Required, at least one. */
  seeds: readonly string[];
  /** The token must have role admin. */
  credentials?: StoreCredentials;
  /** Deadline of each call, ms. Default 10000. */
  rpcDeadlineMs?: number;
}

/** Codes after which the next seed is asked: the node did not answer, or cannot right now. */
const NEXT_SEED: ReadonlySet<string> = new Set(['STORE_UNAVAILABLE', 'STORE_DEADLINE_EXCEEDED', 'STORE_FENCED', 'STORE_CLOSED', 'STORE_ETCD_UNAVAILABLE']);

/**
 * The operation RPCs of store nodes (SubmitOperation & co.), for `cluster …` commands given
 * `--seeds` only: the node checks and records the operation in etcd on the caller's behalf. Every
 * record that comes back is checked against the record schema before it is used.
 */
export class OperationClient implements OperationsApi {
  private readonly connections: NodeConnection[];
  private readonly deadlineMs: number;

  constructor(options: OperationClientOptions) {
    if (options.seeds.length === 0) throw new TypeError('OperationClient needs at least one seed');
    this.connections = options.seeds.map((s) => new NodeConnection(s, options.credentials ?? {}));
    this.deadlineMs = options.rpcDeadlineMs ?? 10_000;
  }

  /** Another seed is asked only with the same id: a submission whose answer was lost is found, never made twice. */
  async submit(submission: OperationSubmission): Promise<OperationRecord> {
    const limits = submission.limits ?? {};
    const id = submission.id ?? newOperationId();
    const reply = await this.call((c) =>
      c.unary('submitOperation', { argsJson: JSON.stringify(submission.args), maxBytesPerSecond: limits.maxBytesPerSecond ?? 0, maxMovements: limits.maxMovements ?? 0, maxPauseMs: limits.maxPauseMs ?? 0, requestedBy: submission.requestedBy, id }, this.limits()),
    );
    return recordOf(reply.recordJson, reply.node);
  }

  async list(options: { all?: boolean } = {}): Promise<OperationRecord[]> {
    const reply = await this.call((c) => c.unary('listOperations', { all: options.all ?? false }, this.limits()));
    return reply.recordsJson.map((json) => recordOf(json, reply.node));
  }

  async draining(): Promise<Set<string>> {
    const reply = await this.call((c) => c.unary('listOperations', { all: false }, this.limits()));
    return new Set(reply.drainingNodes);
  }

  async get(id: string): Promise<OperationRecord> {
    const reply = await this.call((c) => c.unary('getOperation', { id }, this.limits()));
    return recordOf(reply.recordJson, reply.node);
  }

  async cancel(id: string, requestedBy: string): Promise<OperationRecord> {
    const reply = await this.call((c) => c.unary('cancelOperation', { id, requestedBy }, this.limits()));
    return recordOf(reply.recordJson, reply.node);
  }

  close(): void {
    for (const c of this.connections) c.close();
  }

  private limits(): { deadline: number } {
    return { deadline: Date.now() + this.deadlineMs };
  }

  /** Asks the seeds in turn; the first answer, or the last seed's error. */
  private async call<T extends object>(fn: (c: NodeConnection) => Promise<T>): Promise<T & { node: string }> {
    let last: unknown;
    for (const c of this.connections) {
      try {
        return { ...(await fn(c)), node: c.address };
      } catch (err) {
        last = err;
        if (!(err instanceof StoreError) || !NEXT_SEED.has(err.code)) throw err;
      }
    }
    throw last;
  }
}

function recordOf(json: string, node: string): OperationRecord {
  try {
    return parseOperationRecord(JSON.parse(json));
  } catch (err) {
    throw new StoreError('STORE_INTERNAL', `node ${node} answered an operation record that is not valid: ${(err as Error).message.slice(0, 300)}`, { cause: err });
  }
}
