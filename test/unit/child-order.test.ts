import { describe, expect, it } from 'vitest';
import { spreadOverNodes, type ChildKeyRange } from '../../jobs/index.js';

const key = (i: number): Buffer => Buffer.from(`k${String(i).padStart(15, '0')}`);

/** The ingest bench's layout: 1M sorted keys in 8 files, 6 equal partitions on 3 nodes round-robin. */
function benchLayout(): { files: ChildKeyRange[]; nodesOf: (a: Buffer, b: Buffer) => string[] } {
  const splits = Array.from({ length: 5 }, (_, i) => key(Math.floor(((i + 1) * 1_000_000) / 6)));
  const partitions = Array.from({ length: 6 }, (_, i) => ({ start: i === 0 ? Buffer.alloc(0) : splits[i - 1]!, end: i === 5 ? Buffer.alloc(0) : splits[i]!, node: `n${i % 3}` }));
  const nodesOf = (a: Buffer, b: Buffer): string[] => [...new Set(partitions.filter((p) => Buffer.compare(p.start, b) <= 0 && (p.end.length === 0 || Buffer.compare(p.end, a) > 0)).map((p) => p.node))];
  const files = Array.from({ length: 8 }, (_, f) => ({ keyMin: key(Math.floor((f * 1_000_000) / 8)), keyMax: key(Math.floor(((f + 1) * 1_000_000) / 8) - 1) }));
  return { files, nodesOf };
}

describe('spreadOverNodes: the queue order of an ingest’s children', () => {
  it('a sorted drop: children queued next to each other write to different nodes, each child once', () => {
    const { files, nodesOf } = benchLayout();
    // In plan order files 0 and 1 both write to n0 (and 4 and 5 too): the order this replaces.
    expect(nodesOf(files[0]!.keyMin!, files[0]!.keyMax!)).toEqual(['n0']);
    expect(nodesOf(files[1]!.keyMin!, files[1]!.keyMax!)).toContain('n0');
    const order = spreadOverNodes(files, { concurrency: 2, nodesOf });
    expect([...order].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    /** Neighbours in a queue order that share a node. */
    const sharing = (o: number[]): string[] =>
      o.slice(1).flatMap((c, i) => {
        const a = nodesOf(files[o[i]!]!.keyMin!, files[o[i]!]!.keyMax!);
        const b = nodesOf(files[c]!.keyMin!, files[c]!.keyMax!);
        return a.some((n) => b.includes(n)) ? [`${o[i]}-${c}`] : [];
      });
    expect(sharing([0, 1, 2, 3, 4, 5, 6, 7])).toHaveLength(6);
    // Only the last two, when nothing else is left to choose from.
    expect(sharing(order)).toEqual([order.slice(-2).join('-')]);
  });

  it('keeps the plan order where spreading gains nothing: one child at a time, one node, or no key statistics', () => {
    const { files, nodesOf } = benchLayout();
    expect(spreadOverNodes(files, { concurrency: 1, nodesOf })).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(spreadOverNodes(files, { concurrency: 3, nodesOf: () => ['only'] })).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(spreadOverNodes([{}, {}, {}], { concurrency: 2, nodesOf })).toEqual([0, 1, 2]);
    expect(spreadOverNodes([], { concurrency: 2, nodesOf })).toEqual([]);
  });

  it('with more children at once, avoids the nodes of all of the last ones queued', () => {
    // Nodes a a b b c c in plan order, 3 at once: a b c a b c.
    const nodes = ['a', 'a', 'b', 'b', 'c', 'c'];
    const children = nodes.map((_, i) => ({ keyMin: Buffer.from([i]), keyMax: Buffer.from([i]) }));
    const order = spreadOverNodes(children, { concurrency: 3, nodesOf: (k) => [nodes[k[0]!]!] });
    expect(order.map((i) => nodes[i])).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
  });

  it('refuses a concurrency below 1', () => {
    expect(() => spreadOverNodes([], { concurrency: 0, nodesOf: () => [] })).toThrow(RangeError);
  });
});
