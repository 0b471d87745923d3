/** One partition's held writes: when the hold started and what releases them. */
interface Hold {
  startedAtMs: number;
  /** Writes that arrived while held and wait for the release. */
  held: number;
  released: Promise<void>;
  release: () => void;
}

/** A finished hold, measured from its start (the pause request) to its release. */
export interface WritePauseRecord {
  partitionId: number;
  ms: number;
  held: number;
  reason: string;
}

/**
 * The write gate of a head's partitions (store/README.md "Split and merge"): while a partition is
 * held, new writes wait (queued, not refused) until it is released. Writes admitted before the
 * hold are in the partition's write queue already (admission and queueing happen in one turn), so
 * the holder knows none is left once the queue is idle and every forward acknowledged. Pure
 * bookkeeping: no I/O.
 */
export class WritePause {
  private readonly holds = new Map<number, Hold>();
  private readonly listeners = new Set<(record: WritePauseRecord) => void>();

  /** True while any partition is held (the write path's fast check). */
  get active(): boolean {
    return this.holds.size > 0;
  }

  /** Undefined when `partitionId` takes writes now; else resolves when it is released. */
  wait(partitionId: number): Promise<void> | undefined {
    const hold = this.holds.get(partitionId);
    if (hold === undefined) return undefined;
    hold.held++;
    return hold.released;
  }

  /** Holds new writes of `partitionId` (idempotent: an existing hold keeps its start). */
  hold(partitionId: number, nowMs = Date.now()): void {
    if (this.holds.has(partitionId)) return;
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    this.holds.set(partitionId, { startedAtMs: nowMs, held: 0, released, release });
  }

  heldPartitions(): number[] {
    return [...this.holds.keys()];
  }

  isHeld(partitionId: number): boolean {
    return this.holds.has(partitionId);
  }

  /** When the hold of `partitionId` started (Unix ms), undefined when not held. */
  heldSince(partitionId: number): number | undefined {
    return this.holds.get(partitionId)?.startedAtMs;
  }

  /** Lets the held writes go on; resolves the pause's measure (undefined when it was not held). */
  release(partitionId: number, reason: string, nowMs = Date.now()): WritePauseRecord | undefined {
    const hold = this.holds.get(partitionId);
    if (hold === undefined) return undefined;
    this.holds.delete(partitionId);
    hold.release();
    const record = { partitionId, ms: Math.max(0, nowMs - hold.startedAtMs), held: hold.held, reason };
    for (const listener of this.listeners) listener(record);
    return record;
  }

  /** Called after every release (metrics). */
  onRelease(listener: (record: WritePauseRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
