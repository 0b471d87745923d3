/** Where an ingest's rows land: what `spreadOverNodes` needs to queue children apart. */
export interface ChildPlacement {
  /** The store nodes that own some key of [keyMin, keyMax] (both inclusive). */
  nodesOf(keyMin: Buffer, keyMax: Buffer): readonly string[];
  /** Children the worker runs at once (the local worker's `--concurrency`), ≥ 1. */
  concurrency: number;
}

/** A child's key bounds from its row groups' statistics; absent: unknown. */
export interface ChildKeyRange {
  keyMin?: Buffer;
  keyMax?: Buffer;
}

/** How far past the first waiting child the order looks for one on other nodes. */
const LOOKAHEAD = 64;

/**
 * The order to queue children in (indices into `children`), so that the children a worker runs
 * at once write to different nodes. A sorted drop's files are neighbours in key order, so in plan
 * order the files running together all land in one or two partitions — on a 3-node cluster one
 * node then sits idle while the others queue. Greedy and stable: each next child is the first of
 * the next `LOOKAHEAD` waiting ones that shares the fewest nodes with the `concurrency − 1` children
 * queued just before it; a child without key statistics shares nothing. Pure.
 */
export function spreadOverNodes(children: readonly ChildKeyRange[], placement: ChildPlacement): number[] {
  const { concurrency } = placement;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be an integer ≥ 1, got ${concurrency}`);
  const nodes = children.map((c) => (c.keyMin === undefined || c.keyMax === undefined ? [] : placement.nodesOf(c.keyMin, c.keyMax)));
  const waiting = children.map((_, i) => i);
  const recent: Array<readonly string[]> = [];
  const order: number[] = [];
  while (waiting.length > 0) {
    const busy = new Set(recent.flat());
    let best = 0;
    let bestShared = Number.POSITIVE_INFINITY;
    for (let w = 0; w < Math.min(LOOKAHEAD, waiting.length) && bestShared > 0; w++) {
      const shared = nodes[waiting[w]!]!.filter((n) => busy.has(n)).length;
      if (shared < bestShared) {
        best = w;
        bestShared = shared;
      }
    }
    const [picked] = waiting.splice(best, 1);
    order.push(picked!);
    recent.push(nodes[picked!]!);
    if (recent.length > concurrency - 1) recent.shift();
  }
  return order;
}
