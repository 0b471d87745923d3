import { createServer, connect, type Server, type Socket } from 'node:net';

export type ProxyMode = { kind: 'pass' } | { kind: 'reset' } | { kind: 'delay'; ms: number };

/**
 * A loopback TCP proxy in front of a real node, for fault injection a healthy peer cannot produce
 * on demand: connections reset, or every byte delayed. Tests that use it say "fault injection".
 */
export class FaultProxy {
  mode: ProxyMode = { kind: 'pass' };
  /** Client connections accepted so far (refused ones included): a client that reconnects shows here. */
  connectionsAccepted = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(port: number, target: { host: string; port: number }): Promise<FaultProxy> {
    let proxy: FaultProxy | undefined;
    const server = createServer((client) => proxy!.accept(client, target));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    proxy = new FaultProxy(server, port);
    return proxy;
  }

  /** Switches mode; 'reset' also drops every open connection now. */
  setMode(mode: ProxyMode): void {
    this.mode = mode;
    if (mode.kind === 'reset') for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, target: { host: string; port: number }): void {
    this.connectionsAccepted++;
    if (this.mode.kind === 'reset') {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    const forward = (from: Socket, to: Socket): void => {
      // One queue per direction keeps bytes in order when the mode changes mid-stream.
      let tail = Promise.resolve();
      from.on('data', (chunk: Buffer) => {
        const due = Date.now() + (this.mode.kind === 'delay' ? this.mode.ms : 0);
        tail = tail
          .then(() => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, due - Date.now()))))
          .then(() => {
            if (to.writable) to.write(chunk);
          });
      });
      from.on('end', () => {
        tail = tail.then(() => {
          to.end();
        });
      });
    };
    forward(client, upstream);
    forward(upstream, client);
  }
}
