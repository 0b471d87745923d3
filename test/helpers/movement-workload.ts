import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { Key, StoreClient, StoreError, type StoredRecord } from '../../store/index.js';

// The live workload of the data-movement tests: keys spread over the key space, a bulk load, and
// point puts + a CAS counter + a reader that checks the counter never goes back.

/** The key of the workload's put `i`: spread over the key space by its first two bytes. */
export function keyOf(i: number, tag: string): Key {
  const key = Buffer.alloc(6);
  key.writeUInt16BE((i * 7919) % 65536);
  key.writeUInt32BE(i, 2);
  return Key.fromBytes(Buffer.concat([key, Buffer.from(tag)]));
}

/** Bulk-loads `rows` rows spread evenly over the key space. */
export async function load(c: StoreClient, rows: number): Promise<void> {
  const data = Array.from({ length: rows }, (_, i) => {
    const key = Buffer.alloc(6);
    key.writeUInt16BE(Math.floor((i * 65536) / rows));
    key.writeUInt32BE(i, 2);
    return { key, value: Buffer.from(`row-${i}-${'x'.repeat(40)}`) };
  });
  const result = await c.bulkPutAll([data], { maxInFlight: 2, batchMaxRows: 1000 });
  expect(result.rows).toBe(rows);
}

/**
 * The client was closed under a running workload (a test that failed before its stop, then its
 * afterEach): the workload ends instead of failing again and again.
 */
function closed(err: unknown): boolean {
  return err instanceof StoreError && err.code === 'STORE_CLOSED';
}

/**
 * Point puts, a CAS counter (one writer: read, compare-and-set + 1; an ambiguous answer is read
 * back and decided) and a reader that checks the counter never goes back, until stopped.
 */
export class Workload {
  readonly acked = new Map<number, string>();
  counter = 0;
  ambiguous = 0;
  reads = 0;
  readonly problems: string[] = [];
  private stopped = false;
  private running: Promise<unknown> | undefined;
  private readonly counterKey = Key.fromBytes(Buffer.from('counter'));

  constructor(private readonly c: StoreClient) {}

  start(): this {
    this.running = Promise.all([this.puts(), this.cas(), this.reader()]);
    return this;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  private async puts(): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      const value = `put-${i}`;
      try {
        await this.c.put(keyOf(i, 'w'), Buffer.from(value));
        this.acked.set(i, value);
      } catch (err) {
        if (closed(err)) return;
        this.problems.push(`put ${i}: ${(err as Error).message}`);
      }
      await sleep(5);
    }
  }

  private async cas(): Promise<void> {
    const first = await this.c.put(this.counterKey, Buffer.from('0'), { expectedEtag: 0 });
    let etag = first.etag;
    while (!this.stopped) {
      try {
        const next = await this.c.put(this.counterKey, Buffer.from(String(this.counter + 1)), { expectedEtag: etag });
        this.counter += 1;
        etag = next.etag;
      } catch (err) {
        if (closed(err)) return;
        if (!(err instanceof StoreError) || (err.code !== 'STORE_AMBIGUOUS' && err.code !== 'STORE_ETAG_MISMATCH')) {
          this.problems.push(`cas: ${(err as Error).message}`);
        } else {
          // Read it back and decide: the value says whether that attempt took effect.
          this.ambiguous += 1;
          let seen: StoredRecord | undefined;
          try {
            seen = await this.c.get(this.counterKey);
          } catch (e) {
            if (closed(e)) return;
            throw e;
          }
          if (seen === undefined) throw new Error('cas: the counter key is gone');
          const value = Number(seen.value.toString());
          if (value !== this.counter && value !== this.counter + 1) this.problems.push(`cas: counter ${value} after ${this.counter} acknowledged`);
          this.counter = value;
          etag = seen.etag;
        }
      }
      // Also after a failure: a loop that only fails in microtasks would starve the event loop.
      await sleep(5);
    }
  }

  private async reader(): Promise<void> {
    let last = -1;
    while (!this.stopped) {
      try {
        const seen = await this.c.get(this.counterKey);
        const value = seen === undefined ? -1 : Number(seen.value.toString());
        if (value < last) this.problems.push(`read went backwards: ${value} after ${last}`);
        last = Math.max(last, value);
        this.reads += 1;
      } catch (err) {
        if (closed(err)) return;
        this.problems.push(`read: ${(err as Error).message}`);
      }
      await sleep(5);
    }
  }

  /** Every acknowledged put reads back with its value; the counter holds the last acknowledged CAS. */
  async verify(): Promise<void> {
    for (const [i, value] of this.acked) expect((await this.c.get(keyOf(i, 'w')))?.value.toString(), `put ${i}`).toBe(value);
    expect(Number((await this.c.get(this.counterKey))!.value.toString())).toBe(this.counter);
  }
}
