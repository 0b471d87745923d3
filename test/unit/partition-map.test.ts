import { describe, expect, it } from 'vitest';
import { PartitionMap, StoreError, partitionContains, type Partition, type PartitionMapJson, type PartitionSpec } from '../../store/index.js';
import { PartitionMapProto } from '../../store/proto/gen/shardpipe/store/v1/store.js';
import { thrownBy } from '../helpers/rejection.js';

const NODES = ['127.0.0.1:7001', '127.0.0.1:7002', '127.0.0.1:7003'];
const b = (text: string) => Buffer.from(text, 'latin1');
const hex = (h: string) => Buffer.from(h, 'hex');

function part(id: number, start: string, end: string, node = NODES[0]!): PartitionSpec {
  return { id, start: b(start), end: b(end), node };
}

/** Runs `fn`, expecting StoreError STORE_INVALID_MAP; returns its message. */
function invalidMapMessage(fn: () => unknown): string {
  const err = thrownBy(fn, StoreError);
  expect(err.code).toBe('STORE_INVALID_MAP');
  return err.message;
}

/** Reference lookup: the one partition whose [start, end) holds the key. */
function linearLookup(map: PartitionMap, key: Uint8Array): Partition {
  const owners = map.partitions.filter((p) => partitionContains(p, key));
  if (owners.length !== 1) throw new Error(`key ${Buffer.from(key).toString('hex')} has ${owners.length} owners`);
  return owners[0]!;
}

/** Keys whose binary-search lookup disagrees with the linear scan, as hex (empty = all agree). */
function disagreements(map: PartitionMap, keys: readonly Uint8Array[]): string[] {
  return keys.filter((k) => map.lookup(k) !== linearLookup(map, k)).map((k) => Buffer.from(k).toString('hex'));
}

/** Deterministic PRNG (mulberry32), so a failure is reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(next: () => number, maxLen: number): Buffer {
  const len = Math.floor(next() * (maxLen + 1));
  const out = Buffer.alloc(len);
  // Skew towards a few byte values so keys often share prefixes with split keys.
  const alphabet = [0x00, 0x01, 0x40, 0x41, 0x7f, 0x80, 0xfe, 0xff];
  for (let i = 0; i < len; i++) out[i] = next() < 0.5 ? alphabet[Math.floor(next() * alphabet.length)]! : Math.floor(next() * 256);
  return out;
}

describe('PartitionMap.evenlySplit', () => {
  it('covers the whole keyspace with contiguous partitions assigned round-robin', () => {
    const map = PartitionMap.evenlySplit(3, NODES, 8);
    expect(map.version).toBe(3);
    expect(map.partitions).toHaveLength(8);
    expect(map.partitions[0]!.start.length).toBe(0);
    expect(map.partitions[7]!.end.length).toBe(0);
    map.partitions.forEach((p, i) => {
      expect(p.id).toBe(i);
      expect(p.node).toBe(NODES[i % NODES.length]);
      if (i > 0) expect(p.start.equals(map.partitions[i - 1]!.end)).toBe(true);
      if (i > 0) expect(p.start).toEqual(hex((i * 0x2000).toString(16).padStart(4, '0')));
    });
    expect(map.nodes()).toEqual(NODES);
    expect(map.partitionsOf(NODES[1]!).map((p) => p.id)).toEqual([1, 4, 7]);
    expect(map.byId(5)?.start).toEqual(hex('a000'));
    expect(map.byId(8)).toBeUndefined();
  });

  it('uses floor(i * 65536 / count) boundaries for counts that do not divide 65536', () => {
    const map = PartitionMap.evenlySplit(1, NODES, 3);
    expect(map.partitions.map((p) => p.start.toString('hex'))).toEqual(['', '5555', 'aaaa']);
    expect(map.partitions.map((p) => p.end.toString('hex'))).toEqual(['5555', 'aaaa', '']);
  });

  it('a single partition owns everything', () => {
    const map = PartitionMap.evenlySplit(1, ['localhost:1'], 1);
    expect(map.partitions).toHaveLength(1);
    expect(map.lookup(hex('00')).id).toBe(0);
    expect(map.lookup(hex('ffffffff')).id).toBe(0);
    expect(map.lookup(new Uint8Array(0)).id).toBe(0);
  });

  it('a key equal to a partition start belongs to that partition, not the one before', () => {
    const map = PartitionMap.evenlySplit(1, NODES, 4); // starts '', 4000, 8000, c000
    expect(map.lookup(hex('4000')).id).toBe(1);
    expect(map.lookup(hex('8000')).id).toBe(2);
    expect(map.lookup(hex('c000')).id).toBe(3);
    // Just below a start belongs to the previous partition.
    expect(map.lookup(hex('3fff')).id).toBe(0);
    expect(map.lookup(hex('3fffffff')).id).toBe(0);
    expect(map.lookup(hex('bfffff')).id).toBe(2);
    // Longer keys with a start as prefix are above the start.
    expect(map.lookup(hex('400000')).id).toBe(1);
    // A one-byte key that is a prefix of a start sorts below it.
    expect(map.lookup(hex('40')).id).toBe(0);
    expect(map.lookup(hex('ffffffffff')).id).toBe(3);
  });

  it('a key below the first split goes to partition 0', () => {
    const map = PartitionMap.evenlySplit(1, NODES, 16);
    expect(map.lookup(hex('00')).id).toBe(0);
    expect(map.lookup(hex('0000')).id).toBe(0);
    expect(map.lookup(hex('0fff')).id).toBe(0);
    expect(map.lookup(hex('1000')).id).toBe(1);
  });

  it('supports the extremes of the partition count and rejects out-of-range counts', () => {
    const max = PartitionMap.evenlySplit(1, NODES, 65536);
    expect(max.partitions).toHaveLength(65536);
    expect(max.lookup(hex('1234')).id).toBe(0x1234);
    expect(max.lookup(hex('ffff')).id).toBe(0xffff);
    expect(() => PartitionMap.evenlySplit(1, NODES, 0)).toThrow(RangeError);
    expect(() => PartitionMap.evenlySplit(1, NODES, 65537)).toThrow('partitions must be 1–65536, got 65537');
    expect(() => PartitionMap.evenlySplit(1, NODES, 2.5)).toThrow(RangeError);
    expect(() => PartitionMap.evenlySplit(1, [], 2)).toThrow('at least one node is needed');
  });
});

describe('PartitionMap.fromSplitKeys', () => {
  it('builds partitions starting at the split keys', () => {
    const map = PartitionMap.fromSplitKeys(2, NODES.slice(0, 2), [b('g'), b('p')]);
    expect(map.partitions.map((p) => [p.id, p.start.toString(), p.end.toString(), p.node])).toEqual([
      [0, '', 'g', NODES[0]],
      [1, 'g', 'p', NODES[1]],
      [2, 'p', '', NODES[0]],
    ]);
    expect(map.lookup(b('a')).id).toBe(0);
    expect(map.lookup(b('g')).id).toBe(1);
    expect(map.lookup(b('oz')).id).toBe(1);
    expect(map.lookup(b('p')).id).toBe(2);
    expect(map.lookup(Buffer.from([0xff])).id).toBe(2);
  });

  it('no split keys = one partition', () => {
    expect(PartitionMap.fromSplitKeys(1, NODES, []).partitions).toHaveLength(1);
  });

  it('rejects unsorted or duplicate split keys', () => {
    expect(invalidMapMessage(() => PartitionMap.fromSplitKeys(1, NODES, [b('p'), b('g')]))).toMatch(/^invalid partition map: overlap/);
    expect(invalidMapMessage(() => PartitionMap.fromSplitKeys(1, NODES, [b('g'), b('g')]))).toBe(
      'invalid partition map: partition 1 is empty: start "g" is not below end "g"',
    );
  });

  it('copies the bounds it is given', () => {
    const split = b('m');
    const map = PartitionMap.fromSplitKeys(1, NODES, [split]);
    split[0] = 0x7a;
    expect(map.partitions[1]!.start.toString()).toBe('m');
  });
});

describe('PartitionMap.create validation', () => {
  it('accepts partitions given in any order and sorts them', () => {
    const map = PartitionMap.create(1, [part(2, 'm', ''), part(1, '', 'm')]);
    expect(map.partitions.map((p) => p.id)).toEqual([1, 2]);
    expect(Object.isFrozen(map)).toBe(true);
    expect(Object.isFrozen(map.partitions)).toBe(true);
  });

  it('gap between partitions', () => {
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(0, '', 'b'), part(1, 'c', '')]))).toBe(
      'invalid partition map: gap between partition 0 (ends "b") and 1 (starts "c")',
    );
  });

  it('overlap between partitions', () => {
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(0, '', 'c'), part(1, 'b', '')]))).toBe(
      'invalid partition map: overlap between partition 0 (ends "c") and 1 (starts "b")',
    );
  });

  it('overlap: a partition before the last runs to the end of the keyspace', () => {
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(0, '', ''), part(1, 'm', '')]))).toBe(
      'invalid partition map: overlap: partition 0 runs to the end of the keyspace but partition 1 starts at "m"',
    );
  });

  it('first partition does not start at ""', () => {
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(0, 'a', '')]))).toBe(
      'invalid partition map: gap: the first partition (0) must start at the beginning of the keyspace (""), starts at "a"',
    );
  });

  it('last partition does not end at ""', () => {
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(0, '', 'm'), part(1, 'm', 'z')]))).toBe(
      'invalid partition map: gap: the last partition (1) must end at the end of the keyspace (""), ends at "z"',
    );
  });

  it('binary bounds are shown as hex in messages', () => {
    const p0: PartitionSpec = { id: 0, start: Buffer.alloc(0), end: hex('00ff'), node: NODES[0]! };
    const p1: PartitionSpec = { id: 1, start: hex('0100'), end: Buffer.alloc(0), node: NODES[0]! };
    expect(invalidMapMessage(() => PartitionMap.create(1, [p0, p1]))).toBe(
      'invalid partition map: gap between partition 0 (ends "0x00ff") and 1 (starts "0x0100")',
    );
  });

  it('duplicate ids', () => {
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(7, '', 'm'), part(7, 'm', '')]))).toBe(
      'invalid partition map: partition id 7 is used twice',
    );
  });

  it('ids out of range', () => {
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(-1, '', '')]))).toBe(
      'invalid partition map: partition id must be a whole number 0–4294967295, got -1',
    );
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(2 ** 32, '', '')]))).toMatch(/got 4294967296$/);
    expect(PartitionMap.create(1, [part(0xffffffff, '', '')]).partitions[0]!.id).toBe(0xffffffff);
  });

  it.each(['localhost', 'localhost:', ':7001', 'host:123456', 'ho st:1', 'http://h:1', ''])('bad node address %j', (node) => {
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(0, '', '', node)]))).toBe(
      `invalid partition map: partition 0: node must be HOST:PORT, got "${node}"`,
    );
  });

  it.each(['localhost:1', 'node-1.example.com:7001', '10.0.0.1:65535', '[::1]:7001', '[fe80::1]:80'])('good node address %j', (node) => {
    expect(PartitionMap.create(1, [part(0, '', '', node)]).partitions[0]!.node).toBe(node);
  });

  it.each([0, -1, 1.5, Number.NaN, 2 ** 53])('version %d', (version) => {
    expect(invalidMapMessage(() => PartitionMap.create(version, [part(0, '', '')]))).toBe(
      `invalid partition map: version must be a whole number of 1 or more, got ${version}`,
    );
  });

  it('no partitions', () => {
    expect(invalidMapMessage(() => PartitionMap.create(1, []))).toBe('invalid partition map: a map needs at least one partition');
  });

  it('a bound over the key length limit', () => {
    const long = 'k'.repeat(5);
    expect(invalidMapMessage(() => PartitionMap.create(1, [part(0, '', long), part(1, long, '')], 4))).toBe(
      'invalid partition map: partition 0: end key is 5 bytes, over the limit of 4 bytes',
    );
  });
});

describe('PartitionMap.fromJson', () => {
  const good: PartitionMapJson = {
    version: 4,
    partitions: [
      { id: 0, start: '', end: '6d', node: 'a:1' },
      { id: 1, start: '6d', end: '', node: 'b:2' },
    ],
  };

  it('parses a valid map', () => {
    const map = PartitionMap.fromJson(good);
    expect(map.version).toBe(4);
    expect(map.lookup(b('z')).node).toBe('b:2');
  });

  it.each<[string, unknown, string]>([
    ['a bad node', { ...good, partitions: [{ id: 0, start: '', end: '', node: 'nope' }] }, 'partitions.0.node: node must be HOST:PORT'],
    ['a non-hex start', { ...good, partitions: [{ id: 0, start: 'xy', end: '', node: 'a:1' }] }, 'partitions.0.start: start must be hex bytes ("" = beginning)'],
    ['an odd-length end', { version: 1, partitions: [{ id: 0, start: '', end: 'abc', node: 'a:1' }, { id: 1, start: 'abc', end: '', node: 'a:1' }] }, 'partitions.0.end: end must be hex bytes ("" = end)'],
    ['version 0', { ...good, version: 0 }, 'version: version must be 1 or more'],
    ['no partitions', { version: 1, partitions: [] }, 'partitions: a map needs at least one partition'],
  ])('rejects %s with the zod path in the message', (_label, json, detail) => {
    expect(invalidMapMessage(() => PartitionMap.fromJson(json))).toBe(`invalid partition map: ${detail}`);
  });

  it.each<[string, unknown, RegExp]>([
    ['a missing version', { partitions: good.partitions }, /^invalid partition map: version: /],
    ['a string version', { ...good, version: '4' }, /^invalid partition map: version: /],
    ['a fractional id', { ...good, partitions: [{ ...good.partitions[0]!, id: 0.5 }, good.partitions[1]] }, /^invalid partition map: partitions\.0\.id: /],
    ['a missing node', { ...good, partitions: [good.partitions[0], { id: 1, start: '6d', end: '' }] }, /^invalid partition map: partitions\.1\.node: /],
    ['partitions not an array', { version: 1, partitions: {} }, /^invalid partition map: partitions: /],
    ['null', null, /^invalid partition map: map: /],
    ['a string', 'map', /^invalid partition map: map: /],
  ])('rejects %s', (_label, json, pattern) => {
    expect(invalidMapMessage(() => PartitionMap.fromJson(json))).toMatch(pattern);
  });

  it('applies the structural checks after parsing', () => {
    const gap = { version: 1, partitions: [{ id: 0, start: '', end: '61', node: 'a:1' }, { id: 1, start: '62', end: '', node: 'a:1' }] };
    expect(invalidMapMessage(() => PartitionMap.fromJson(gap))).toBe('invalid partition map: gap between partition 0 (ends "a") and 1 (starts "b")');
  });
});

describe('PartitionMap round trips and equality', () => {
  const map = PartitionMap.fromSplitKeys(9, NODES, [hex('00'), b('m'), hex('ff00')]);

  it('toJson / fromJson', () => {
    const json = map.toJson();
    expect(json).toEqual({
      version: 9,
      partitions: [
        { id: 0, start: '', end: '00', node: NODES[0] },
        { id: 1, start: '00', end: '6d', node: NODES[1] },
        { id: 2, start: '6d', end: 'ff00', node: NODES[2] },
        { id: 3, start: 'ff00', end: '', node: NODES[0] },
      ],
    });
    const back = PartitionMap.fromJson(JSON.parse(JSON.stringify(json)));
    expect(back.equals(map)).toBe(true);
    expect(back.toJson()).toEqual(json);
  });

  it('toProto / fromProto, also through the wire encoding', () => {
    expect(PartitionMap.fromProto(map.toProto()).equals(map)).toBe(true);
    const wire = PartitionMapProto.encode(map.toProto()).finish();
    const back = PartitionMap.fromProto(PartitionMapProto.decode(wire));
    expect(back.equals(map)).toBe(true);
    expect(back.version).toBe(9);
  });

  it('fromProto validates', () => {
    const proto = map.toProto();
    const broken = { ...proto, partitions: proto.partitions.slice(1) };
    expect(invalidMapMessage(() => PartitionMap.fromProto(broken))).toMatch(/first partition \(1\) must start/);
  });

  it('equals compares version, ids, bounds and nodes', () => {
    const same = PartitionMap.fromSplitKeys(9, NODES, [hex('00'), b('m'), hex('ff00')]);
    expect(map.equals(same)).toBe(true);
    expect(map.equals(map.withVersion(10))).toBe(false);
    expect(map.withVersion(10).equals(same.withVersion(10))).toBe(true);
    expect(map.equals(PartitionMap.fromSplitKeys(9, [...NODES].reverse(), [hex('00'), b('m'), hex('ff00')]))).toBe(false);
    expect(map.equals(PartitionMap.fromSplitKeys(9, NODES, [hex('00'), b('n'), hex('ff00')]))).toBe(false);
    expect(map.equals(PartitionMap.fromSplitKeys(9, NODES, [hex('00'), b('m')]))).toBe(false);
    const renumbered = PartitionMap.create(
      9,
      map.partitions.map((p) => ({ ...p, id: p.id + 10 })),
    );
    expect(map.equals(renumbered)).toBe(false);
  });
});

describe('PartitionMap.lookup', () => {
  it('agrees with a linear scan over many random keys and maps', () => {
    const next = rng(0x5eed);
    for (let m = 0; m < 40; m++) {
      const splitCount = Math.floor(next() * 40);
      const splits = new Map<string, Buffer>();
      while (splits.size < splitCount) {
        const s = randomBytes(next, 4);
        if (s.length > 0) splits.set(s.toString('hex'), s);
      }
      const sorted = [...splits.values()].sort(Buffer.compare);
      const map = PartitionMap.fromSplitKeys(1, NODES, sorted);
      expect(map.partitions).toHaveLength(splitCount + 1);
      const probes = [...sorted, ...sorted.map((s) => Buffer.concat([s, Buffer.from([0])]))];
      for (let i = 0; i < 250; i++) probes.push(randomBytes(next, 5));
      expect(disagreements(map, probes)).toEqual([]);
    }
  });

  it('agrees with a linear scan on evenly split maps', () => {
    const next = rng(42);
    for (const count of [2, 3, 7, 64, 1000]) {
      const map = PartitionMap.evenlySplit(1, NODES, count);
      const keys = Array.from({ length: 500 }, () => randomBytes(next, 3));
      expect(disagreements(map, keys)).toEqual([]);
      expect(map.partitions.filter((p) => map.lookup(p.start) !== p)).toEqual([]);
    }
  });

  it('partitionContains treats start as inclusive and end as exclusive', () => {
    const p = { start: b('b'), end: b('d') };
    expect(partitionContains(p, b('a'))).toBe(false);
    expect(partitionContains(p, b('b'))).toBe(true);
    expect(partitionContains(p, b('cz'))).toBe(true);
    expect(partitionContains(p, b('d'))).toBe(false);
    expect(partitionContains({ start: b('b'), end: Buffer.alloc(0) }, Buffer.from([0xff, 0xff]))).toBe(true);
  });
});
