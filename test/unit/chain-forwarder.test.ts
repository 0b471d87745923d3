import { describe, expect, it } from 'vitest';
import { forwardsFromProto, forwardsToProto, forwardWireBytes } from '../../store/chain-forwarder.js';
import type { ForwardMessage } from '../../store/chain-replica.js';
import { PackedRowsBuilder } from '../../store/packed-rows.js';
import { ForwardRequest } from '../../store/proto/gen/shardpipe/store/v1/store.js';

const base = { partitionId: 3, epoch: 7, from: '127.0.0.1:9', streamId: 'abc' };

function batch(): ForwardMessage[] {
  const rows = new PackedRowsBuilder();
  rows.add(Buffer.from('k1'), Buffer.from('v1'));
  rows.add(Buffer.from('k2'), Buffer.from('v2'));
  return [
    { ...base, seq: 10, headSeq: 12, op: { kind: 'bulk', rows: rows.finish(), assigned: { firstEtag: 100, nowMs: 1_700_000_000_000 } } },
    { ...base, seq: 11, headSeq: 12, op: { kind: 'points', nowMs: 1_700_000_000_001, writes: [{ key: Buffer.from('p'), record: { value: Buffer.from('x'), etag: 102, updatedAtMs: 1_700_000_000_001, expiresAtMs: 0 } }] } },
    { ...base, seq: 12, headSeq: 12, op: { kind: 'points', nowMs: 1_700_000_000_002, writes: [{ key: Buffer.from('q'), deleted: true }] } },
  ];
}

describe('batched Forward wire form (group commit per hop)', () => {
  it('carries several writes in one ForwardRequest (the first in its own fields, the rest in more) and reads them back in order', () => {
    const sent = batch();
    const wire = ForwardRequest.encode(forwardsToProto(sent)).finish();
    const req = ForwardRequest.decode(wire);
    expect(req.seq).toBe(10);
    expect(req.more.map((w) => w.seq)).toEqual([11, 12]);
    const got = forwardsFromProto(req);
    expect(got.map((m) => [m.partitionId, m.epoch, m.from, m.streamId, m.seq, m.headSeq])).toEqual(sent.map((m) => [3, 7, '127.0.0.1:9', 'abc', m.seq, 12]));
    const bulk = got[0]!.op;
    expect(bulk.kind === 'bulk' && [bulk.rows.count, bulk.rows.key(1).toString(), bulk.assigned.firstEtag]).toEqual([2, 'k2', 100]);
    expect(got[1]!.op).toEqual(sent[1]!.op);
    expect(got[2]!.op).toEqual(sent[2]!.op);
  });

  it('a single write is the old form: no more, same bytes as before batching', () => {
    const one = batch()[1]!;
    const req = forwardsToProto([one]);
    expect(req.more).toEqual([]);
    expect(forwardsFromProto(ForwardRequest.decode(ForwardRequest.encode(req).finish()))).toEqual([{ ...one }]);
    expect(forwardWireBytes(one)).toBe(ForwardRequest.encode(req).finish().length);
  });

  it('refuses a batch whose writes are not in increasing sequence order, or a write with neither rows nor points, naming the write', () => {
    const req = forwardsToProto(batch());
    req.more[1]!.seq = 11;
    expect(() => forwardsFromProto(req)).toThrow(expect.objectContaining({ code: 'STORE_INVALID_ARGUMENT', message: expect.stringContaining('ForwardRequest.more[1].seq is 11, not after 11') }));
    const empty = forwardsToProto(batch());
    empty.more[0]!.points = [];
    expect(() => forwardsFromProto(empty)).toThrow(expect.objectContaining({ code: 'STORE_INVALID_ARGUMENT', message: expect.stringContaining('ForwardRequest.more[0] carries neither packed nor points') }));
  });
});
