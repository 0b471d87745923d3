import type { CancelOperationRequest, GetOperationRequest, ListOperationsRequest, ListOperationsResponse, OperationReply, SubmitOperationRequest } from './proto/gen/shardpipe/store/v1/store.js';
import type { OperationAdmin } from './operation-admin.js';
import type { OperationRecord } from './etcd-operations.js';
import { StoreError } from './store-errors.js';
import { MAX_REQUESTED_BY_CHARS } from './field-limits.js';

/**
 * The operation RPCs of an etcd-mode node (SubmitOperation, ListOperations, GetOperation,
 * CancelOperation), for clients that reach the cluster through `--seeds` only. The node works with
 * its own etcd connection; a static-map node (no `admin`) refuses with STORE_OPERATIONS_NEED_ETCD.
 * Field ranges were checked by the service (store/field-limits.ts); the JSON and every value in it
 * are checked here, as a submission through etcd is.
 */
export class OperationService {
  constructor(
    private readonly admin: OperationAdmin | undefined,
    /** This node, for messages. */
    private readonly node: string,
  ) {}

  async submit(req: SubmitOperationRequest, peer: string): Promise<OperationReply> {
    let args: unknown;
    try {
      args = JSON.parse(req.argsJson);
    } catch (err) {
      throw new StoreError('STORE_OPERATION_INVALID', `SubmitOperationRequest.args_json is not JSON: ${(err as Error).message}`, { context: { field: 'SubmitOperationRequest.args_json' } });
    }
    const limits = {
      ...(req.maxBytesPerSecond > 0 ? { maxBytesPerSecond: req.maxBytesPerSecond } : {}),
      ...(req.maxMovements > 0 ? { maxMovements: req.maxMovements } : {}),
      ...(req.maxPauseMs > 0 ? { maxPauseMs: req.maxPauseMs } : {}),
    };
    const requestedBy = req.requestedBy ? `${req.requestedBy} via ${this.node}` : `rpc ${peer} via ${this.node}`;
    return reply(await this.adminOf('SubmitOperation').submit({ args, limits, requestedBy: requestedBy.slice(0, MAX_REQUESTED_BY_CHARS), ...(req.id ? { id: req.id } : {}) }));
  }

  async list(req: ListOperationsRequest): Promise<ListOperationsResponse> {
    const admin = this.adminOf('ListOperations');
    const records = await admin.list({ all: req.all });
    return { recordsJson: records.map((r) => JSON.stringify(r)), drainingNodes: [...(await admin.draining())].sort() };
  }

  async get(req: GetOperationRequest): Promise<OperationReply> {
    return reply(await this.adminOf('GetOperation').get(req.id));
  }

  async cancel(req: CancelOperationRequest, peer: string): Promise<OperationReply> {
    const by = req.requestedBy ? `${req.requestedBy} via ${this.node}` : `rpc ${peer} via ${this.node}`;
    return reply(await this.adminOf('CancelOperation').cancel(req.id, by.slice(0, MAX_REQUESTED_BY_CHARS)));
  }

  private adminOf(method: string): OperationAdmin {
    if (this.admin !== undefined) return this.admin;
    throw new StoreError(
      'STORE_OPERATIONS_NEED_ETCD',
      `${method}: node ${this.node} serves a static partition map; operations (move, drain-node, set-replicas, split, merge, rebalance) exist only in clusters on etcd — ask a node started with --etcd, or pass --etcd URL`,
    );
  }
}

function reply(record: OperationRecord): OperationReply {
  return { recordJson: JSON.stringify(record) };
}
