/**
 * CPU per point op of the Get/Put/Multi message codecs: the hand codecs of store/point-codec.ts
 * against the generated ts-proto code they match, on the same messages in alternating rounds
 * (a measurement, not a test; both sides of one Multi call: client encode + node decode of the
 * request, node encode + client decode of the response).
 *
 * Run after `npx tsc -p tsconfig.json`:
 *   node dist/bench/point-codec-bench.js [--ops-per-multi 32] [--rounds 10]
 */
import { randomBytes } from 'node:crypto';
import { POINT_CODECS } from '../store/index.js';
import { fixed, table } from './bench-format.js';
import { parseBenchArgs } from './bench-args.js';

const { values } = parseBenchArgs('node dist/bench/point-codec-bench.js [--ops-per-multi N (default 32)] [--rounds N (default 10)]', { options: { 'ops-per-multi': { type: 'string', default: '32' }, rounds: { type: 'string', default: '10' } } });
const perMulti = Number(values['ops-per-multi']);
const rounds = Number(values.rounds);
if (!Number.isInteger(perMulti) || perMulti < 1 || perMulti > 1000) throw new RangeError(`--ops-per-multi must be 1–1000, got ${values['ops-per-multi']}`);
if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError(`--rounds must be a whole number ≥ 1, got ${values.rounds}`);

const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const NOW = Date.now();
const key = (i: number): Buffer => Buffer.from(`k${String(i).padStart(KEY_BYTES - 1, '0')}`);
const gets = { ops: Array.from({ length: perMulti }, (_, i) => ({ get: { mapVersion: 7, key: key(i), fields: [] } })) };
const puts = { ops: Array.from({ length: perMulti }, (_, i) => ({ put: { mapVersion: 7, key: key(i), value: randomBytes(VALUE_BYTES), ttlMs: 0 } })) };
const ok = { code: 0, errorCode: '', message: '' };
const getResults = {
  results: gets.ops.map((op, i) => ({ ...ok, get: { found: true, entry: { key: op.get.key, value: randomBytes(VALUE_BYTES), etag: 1_000_000 + i, updatedAtMs: NOW, expiresAtMs: 0 } } })),
};
const putResults = { results: puts.ops.map((_, i) => ({ ...ok, put: { etag: 1_000_000 + i, updatedAtMs: NOW, expiresAtMs: 0 } })) };
// What nodes answer since write replies carry timing: a chain of one (the head's write time), and of three (two hops).
const timing = (hops: number): object => ({ queueMs: 0, writeMs: 1.2345, fsyncMs: 0, forwardMs: hops === 0 ? 0 : 2.345, hops: Array.from({ length: hops }, (_, h) => ({ node: `127.0.0.1:${7001 + h}`, writeMs: 0.987, forwardMs: h === hops - 1 ? 0 : 1.01 })) });
const putResultsTimed = (hops: number): object => ({ results: puts.ops.map((_, i) => ({ ...ok, put: { etag: 1_000_000 + i, updatedAtMs: NOW, expiresAtMs: 0, timing: timing(hops) } })) });

interface Side {
  encodeRequest(m: never): Buffer;
  decodeRequest(b: Buffer): unknown;
  encodeResponse(m: never): Buffer;
  decodeResponse(b: Buffer): unknown;
}
const multi = POINT_CODECS.multi;
const hand: Side = multi as unknown as Side;
const generated: Side = {
  encodeRequest: (m) => Buffer.from(multi.generated.request.encode(m).finish()),
  decodeRequest: (b) => multi.generated.request.decode(b),
  encodeResponse: (m) => Buffer.from(multi.generated.response.encode(m).finish()),
  decodeResponse: (b) => multi.generated.response.decode(b),
};

/** Nanoseconds of CPU per op for one full Multi round trip's codec work, over `calls` Multis. */
function measure(side: Side, request: object, response: object, calls: number): number {
  const start = process.cpuUsage();
  for (let i = 0; i < calls; i++) {
    side.decodeRequest(side.encodeRequest(request as never));
    side.decodeResponse(side.encodeResponse(response as never));
  }
  const used = process.cpuUsage(start);
  return ((used.user + used.system) * 1000) / (calls * perMulti);
}

const CALLS = Math.max(200, Math.floor(200_000 / perMulti));
const rows: string[][] = [];
for (const [label, request, response] of [
  ['Multi of gets', gets, getResults],
  ['Multi of puts', puts, putResults],
  ['Multi of puts, replies timed (RF=1)', puts, putResultsTimed(0)],
  ['Multi of puts, replies timed (RF=3, 2 hops)', puts, putResultsTimed(2)],
] as const) {
  // Warm up both before the clock, then alternate rounds so noise from other work hits both.
  measure(hand, request, response, CALLS);
  measure(generated, request, response, CALLS);
  const h: number[] = [];
  const g: number[] = [];
  for (let r = 0; r < rounds; r++) {
    h.push(measure(hand, request, response, CALLS));
    g.push(measure(generated, request, response, CALLS));
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  rows.push([label, String(perMulti), fixed(median(g) / 1000, 2), fixed(median(h) / 1000, 2), `${fixed(median(g) / median(h), 2)}×`]);
}
process.stdout.write(`point message codecs, CPU µs per op (encode + decode of request and response), medians of ${rounds} alternating rounds\n\n`);
process.stdout.write(table(['messages', 'ops per Multi', 'generated µs/op', 'hand µs/op', 'speed-up'], rows) + '\n');
