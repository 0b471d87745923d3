import type { ConnectionOptions, JobsOptions, KeepJobs } from 'bullmq';
import { FlowProducer, Job, Queue } from './commonjs-libraries.js';

/** A flow to create: one parent job and its children, which carry references, never rows. */
export interface FanOut<ParentData, ChildData> {
  parent: { name: string; queue: string; id: string; data: ParentData; opts?: Omit<JobsOptions, 'jobId'> };
  children: {
    name: string;
    queue: string;
    /** Attempts per child (a retry continues from the child's checkpoint or rewrites it). Default 5. */
    attempts?: number;
    /** How long finished children stay in Redis. Default: BullMQ's (kept). */
    keep?: KeepJobs;
    jobs: ReadonlyArray<{ id: string; data: ChildData }>;
  };
  /** W3C `traceparent` of the operation's span, carried in the data of the parent and every child (see TracedJobData). */
  traceparent?: string;
}

/** What the skeleton adds to every job's data: the span its worker's span is a child of. */
export interface TracedJobData {
  traceparent?: string;
}

/** What became of a submitted flow whose id may already be in Redis. */
export type FanOutState = 'new' | 'resumed' | 'finished';

/**
 * The options of every child job: retried with exponential backoff from one second, and a child
 * that fails for good does not fail its parent — the parent runs once every child has finished and
 * reports the failed ones by name, while the other children still finish.
 */
export function childJobOptions(jobId: string, attempts = 5, keep?: KeepJobs): JobsOptions {
  return {
    jobId,
    attempts,
    backoff: { type: 'exponential', delay: 1000 },
    ignoreDependencyOnFailure: true,
    ...(keep ? { removeOnComplete: keep, removeOnFail: keep } : {}),
  };
}

/**
 * Creates the flow. With `resume`, a parent of the same id found in Redis is kept when it completed
 * ('finished') or is still going ('resumed': its workers carry on); a failed one is removed with its
 * children and the flow created again.
 */
export async function addFanOut<ParentData, ChildData>(connection: ConnectionOptions, flow: FanOut<ParentData, ChildData>, options: { resume?: boolean } = {}): Promise<FanOutState> {
  if (options.resume) {
    const parents = new Queue(flow.parent.queue, { connection });
    try {
      const existing = await Job.fromId(parents, flow.parent.id);
      if (existing) {
        const state = await existing.getState();
        if (state === 'completed') return 'finished';
        if (state !== 'failed') return 'resumed';
        await existing.remove({ removeChildren: true });
      }
    } finally {
      await parents.close();
    }
  }
  const { children } = flow;
  const flows = new FlowProducer({ connection });
  try {
    await flows.add({
      name: flow.parent.name,
      queueName: flow.parent.queue,
      data: traced(flow.parent.data, flow.traceparent),
      opts: { ...flow.parent.opts, jobId: flow.parent.id },
      children: children.jobs.map((child) => ({ name: children.name, queueName: children.queue, data: traced(child.data, flow.traceparent), opts: childJobOptions(child.id, children.attempts, children.keep) })),
    });
  } finally {
    await flows.close();
  }
  return 'new';
}

function traced<Data>(data: Data, traceparent: string | undefined): Data | (Data & TracedJobData) {
  return traceparent === undefined ? data : { ...data, traceparent };
}
