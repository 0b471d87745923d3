import type { Etcd3 } from 'etcd3';
import { etcdCall } from './etcd-connection.js';
import { EtcdMapStore, ETCD_PREFIX } from './etcd-map-store.js';
import { DEFAULT_MAX_MOVEMENTS, DEFAULT_MAX_PAUSE_MS, EtcdOperationStore, isFinalOperationState, newOperationId, type OperationRecord } from './etcd-operations.js';
import { checkOperation, checkOperationId, checkOperationLimits, checkRequestedBy, checkedOperationArgs, type OperationLimitsInput } from './operation-validation.js';
import { StoreError } from './store-errors.js';

/** Finished operations `list` returns beside the unfinished ones (all of them with `all`). */
export const RECENT_FINISHED_OPERATIONS = 10;

/** A submission: arguments as `cluster …` builds them (checked here), limits, who asks. */
export interface OperationSubmission {
  args: unknown;
  limits?: OperationLimitsInput;
  /** "cli HOST:PID", "rpc PEER"; at most 200 printable characters. */
  requestedBy: string;
  /**
   * The id, chosen by the submitter (newOperationId) so a retry after a lost answer finds the record
   * its first attempt made rather than submitting twice. Default: a fresh one.
   */
  id?: string;
}

/** What `cluster …` commands need of operations, through etcd (OperationAdmin) or a node (OperationClient). */
export interface OperationsApi {
  submit(submission: OperationSubmission): Promise<OperationRecord>;
  list(options?: { all?: boolean }): Promise<OperationRecord[]>;
  get(id: string): Promise<OperationRecord>;
  cancel(id: string, requestedBy: string): Promise<OperationRecord>;
  /** Nodes with a `draining/` mark. */
  draining(): Promise<Set<string>>;
}

/**
 * What `cluster move` & co. do to etcd, whether the CLI holds an etcd client (`--etcd`) or a node
 * does on its behalf (the SubmitOperation RPC, `--seeds`): every submission is checked against the
 * current map and registrations before its record is created; cancelling is a compare-and-swap.
 */
export class OperationAdmin implements OperationsApi {
  readonly maps: EtcdMapStore;
  readonly operations: EtcdOperationStore;

  constructor(
    private readonly etcd: Etcd3,
    /** The etcd URL without secrets, for messages. */
    readonly display: string,
    prefix = ETCD_PREFIX,
  ) {
    this.maps = new EtcdMapStore(etcd, display, prefix);
    this.operations = new EtcdOperationStore(etcd, display, prefix);
  }

  /**
   * Checks the submission against the map and registrations, then creates its record (state
   * pending). A submission whose id exists with the same arguments and limits is a retry: it gets
   * that record back, unchecked (the map may have moved on because of it).
   */
  async submit(submission: OperationSubmission, nowMs = Date.now()): Promise<OperationRecord> {
    const args = checkedOperationArgs(submission.args);
    const limits = checkOperationLimits(submission.limits ?? {});
    const requestedBy = checkRequestedBy(submission.requestedBy);
    const chosenId = submission.id === undefined ? undefined : checkOperationId(submission.id);
    if (chosenId !== undefined) {
      const earlier = await this.retried(chosenId, args, limits);
      if (earlier !== undefined) return earlier;
    }
    const stored = await this.maps.read();
    if (stored === undefined) throw new StoreError('STORE_OPERATION_INVALID', `etcd at ${this.display} holds no partition map yet: run shardpipe cluster init --etcd first`);
    const { nodes } = await this.maps.nodes();
    checkOperation(args, { map: stored.map, nodes: new Set(nodes.keys()), draining: await this.draining() });
    const record: OperationRecord = {
      id: chosenId ?? newOperationId(nowMs),
      args,
      state: 'pending',
      createdAtMs: nowMs,
      updatedAtMs: nowMs,
      ...(requestedBy ? { requestedBy } : {}),
      limits: {
        ...(limits.maxBytesPerSecond === undefined ? {} : { maxBytesPerSecond: limits.maxBytesPerSecond }),
        maxMovements: limits.maxMovements ?? DEFAULT_MAX_MOVEMENTS,
        maxPauseMs: limits.maxPauseMs ?? DEFAULT_MAX_PAUSE_MS,
      },
      steps: [],
      pauses: [],
      message: `submitted against map version ${stored.map.version}`,
    };
    if (chosenId !== undefined) {
      if (await this.operations.create(record)) return record;
      // Created meanwhile: by this submission's first attempt (same arguments), or it is another's id.
      const earlier = await this.retried(chosenId, args, limits);
      if (earlier !== undefined) return earlier;
      throw new StoreError('STORE_OPERATION_INVALID', `operation id ${chosenId} belongs to another operation: submit again with a fresh id`, { context: { operation: chosenId } });
    }
    // Ids carry 24 random bits: a clash within one second is retried with a fresh id, never overwritten.
    for (let attempt = 0; attempt < 3; attempt++) {
      const candidate = attempt === 0 ? record : { ...record, id: newOperationId(nowMs) };
      if (await this.operations.create(candidate)) return candidate;
    }
    throw new StoreError('STORE_INTERNAL', `could not find a free operation id in etcd at ${this.display}`);
  }

  /** The record `id` when it holds these arguments and limits (an earlier attempt of the same submission); undefined when there is none. */
  private async retried(id: string, args: OperationRecord['args'], limits: OperationLimitsInput): Promise<OperationRecord | undefined> {
    const existing = await this.operations.get(id);
    if (existing === undefined) return undefined;
    const r = existing.record;
    const same =
      JSON.stringify(r.args) === JSON.stringify(args) &&
      r.limits.maxBytesPerSecond === limits.maxBytesPerSecond &&
      r.limits.maxMovements === (limits.maxMovements ?? DEFAULT_MAX_MOVEMENTS) &&
      r.limits.maxPauseMs === (limits.maxPauseMs ?? DEFAULT_MAX_PAUSE_MS);
    if (!same) throw new StoreError('STORE_OPERATION_INVALID', `operation id ${id} belongs to another operation: submit again with a fresh id`, { context: { operation: id } });
    return r;
  }

  /** Unfinished operations and the most recently finished ones (every one with `all`), oldest first. */
  async list(options: { all?: boolean } = {}): Promise<OperationRecord[]> {
    const records = (await this.operations.list()).operations.map((o) => o.record);
    if (options.all) return records;
    const finished = records.filter((r) => isFinalOperationState(r.state)).sort((a, b) => (b.finishedAtMs ?? b.updatedAtMs) - (a.finishedAtMs ?? a.updatedAtMs));
    const keep = new Set(finished.slice(0, RECENT_FINISHED_OPERATIONS).map((r) => r.id));
    return records.filter((r) => !isFinalOperationState(r.state) || keep.has(r.id));
  }

  /** The record; STORE_OPERATION_NOT_FOUND when there is none. */
  async get(id: string): Promise<OperationRecord> {
    const stored = await this.operations.get(checkOperationId(id));
    if (stored === undefined) throw notFound(id, this.display);
    return stored.record;
  }

  /**
   * Asks the coordinator to stop the operation: `cancelling`, by compare-and-swap (a coordinator
   * advancing it at the same time never loses its step nor overwrites the request). Refused with
   * STORE_OPERATION_FINISHED for a final state; a second cancel leaves it as it is.
   */
  async cancel(id: string, requestedBy: string): Promise<OperationRecord> {
    checkOperationId(id);
    const by = checkRequestedBy(requestedBy);
    let finished: OperationRecord | undefined;
    const record = await this.operations.update(id, (r) => {
      finished = undefined;
      if (isFinalOperationState(r.state)) {
        finished = r;
        return undefined;
      }
      if (r.state === 'cancelling') return undefined;
      return { ...r, state: 'cancelling', message: `cancel asked${by ? ` by ${by}` : ''}` };
    });
    if (record === undefined) throw notFound(id, this.display);
    if (finished !== undefined) {
      throw new StoreError('STORE_OPERATION_FINISHED', `operation ${id} is ${finished.state} already: there is nothing to cancel`, { context: { operation: id, state: finished.state } });
    }
    return record;
  }

  /** Nodes with a `draining/HOST:PORT` mark (being drained, or drained and holding nothing). */
  async draining(): Promise<Set<string>> {
    const prefix = this.operations.keys.draining;
    const keys = await etcdCall(this.display, 'reading draining marks', () => this.etcd.getAll().prefix(prefix).keys());
    return new Set(keys.map((k) => k.slice(prefix.length)));
  }
}

function notFound(id: string, display: string): StoreError {
  return new StoreError('STORE_OPERATION_NOT_FOUND', `no operation ${id} in etcd at ${display}: cluster operations --all lists every one`, { context: { operation: id } });
}
