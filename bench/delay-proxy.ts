import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy that holds every chunk `delayMs` before passing it on, in each direction:
 * one-way latency without a bandwidth cap (chunks in flight overlap; order is kept). For the
 * distributed benchmark, where real clusters are not loopback. Timers fire at millisecond
 * granularity, so the delay added is `delayMs` or up to ~1 ms more.
 */
export class DelayProxy {
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listens on 127.0.0.1:`port` and forwards to `target`. */
  static async start(port: number, target: { host: string; port: number }, delayMs: number): Promise<DelayProxy> {
    if (!Number.isFinite(delayMs) || delayMs < 0) throw new RangeError(`delayMs must be ≥ 0, got ${delayMs}`);
    let proxy: DelayProxy | undefined;
    const server = createServer((client) => proxy!.accept(client, target, delayMs));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    proxy = new DelayProxy(server, port);
    return proxy;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, target: { host: string; port: number }, delayMs: number): void {
    const upstream = connect(target.port, target.host);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    forward(client, upstream, delayMs);
    forward(upstream, client, delayMs);
  }
}

/**
 * Chunks wait in a FIFO, each released `delayMs` after it arrived; the reading side pauses while the
 * writing side is full, so the proxy's memory stays bounded by the socket buffers.
 */
function forward(from: Socket, to: Socket, delayMs: number): void {
  const queue: Array<{ due: number; chunk: Buffer | null }> = [];
  let timer: NodeJS.Timeout | undefined;
  let blocked = false;
  const drain = (): void => {
    timer = undefined;
    if (blocked) return;
    const now = performance.now();
    while (queue.length > 0 && queue[0]!.due <= now) {
      const { chunk } = queue.shift()!;
      if (chunk === null) {
        to.end();
        return;
      }
      if (to.writable && !to.write(chunk)) {
        // Hold the rest (and the reader) until the writer drains; then carry on where this stopped.
        blocked = true;
        from.pause();
        to.once('drain', () => {
          blocked = false;
          from.resume();
          drain();
        });
        return;
      }
    }
    if (queue.length > 0) timer = setTimeout(drain, Math.max(0, queue[0]!.due - performance.now()));
  };
  const push = (chunk: Buffer | null): void => {
    queue.push({ due: performance.now() + delayMs, chunk });
    if (timer === undefined && !blocked) timer = setTimeout(drain, delayMs);
  };
  from.on('data', (chunk: Buffer) => push(chunk));
  from.on('end', () => push(null));
  from.on('close', () => {
    if (timer !== undefined && queue.length === 0) clearTimeout(timer);
  });
}
