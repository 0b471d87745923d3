import { once } from 'node:events';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeConnection } from '../../store/index.js';
import { DEFAULT_FLOW_CONTROL_WINDOW_BYTES, DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES } from '../../store/http2-window.js';
import { StoreCluster } from '../helpers/store-cluster.js';

/**
 * The HTTP/2 flow-control windows in effect: a real node advertises its window (16 MiB unless
 * `--flow-control-window` says otherwise) in its SETTINGS and widens the connection window to it;
 * the client's channel advertises 16 MiB toward nodes.
 * (With HTTP/2's 64 KiB default a peer sends 64 KiB per round trip: a 1 MiB batch takes 16.)
 */

function ping(session: http2.ClientHttp2Session | http2.ServerHttp2Session): Promise<void> {
  return new Promise((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
}

describe('HTTP/2 windows', () => {
  let cluster: StoreCluster;
  let plain: StoreCluster;
  const WIDE = 16 * 1024 * 1024;

  beforeAll(async () => {
    cluster = await StoreCluster.start({ nodes: 1, partitions: 1 });
    plain = await StoreCluster.start({ nodes: 1, partitions: 1, extraArgs: ['--flow-control-window', '65535'] });
  });

  afterAll(async () => {
    await cluster?.close();
    await plain?.close();
  });

  it('a node started with --flow-control-window 65535 advertises HTTP/2\'s 64 KiB window', async () => {
    const session = http2.connect(`http://${plain.seeds[0]}`);
    try {
      const [settings] = (await once(session, 'remoteSettings')) as [http2.Settings];
      expect(settings.initialWindowSize).toBe(65_535);
    } finally {
      session.destroy();
    }
  });

  it('a node without --flow-control-window advertises a 16 MiB stream window and widens the connection window to it', async () => {
    const session = http2.connect(`http://${cluster.seeds[0]}`);
    try {
      const [settings] = (await once(session, 'remoteSettings')) as [http2.Settings];
      expect(DEFAULT_NODE_FLOW_CONTROL_WINDOW_BYTES).toBe(WIDE);
      expect(settings.initialWindowSize).toBe(WIDE);
      // The node's WINDOW_UPDATE goes out when the session starts, before its answer to a ping.
      await ping(session);
      expect(session.state.remoteWindowSize).toBe(WIDE);
    } finally {
      session.destroy();
    }
  });

  it("a client's channel to a node advertises the same windows", async () => {
    const server = http2.createServer();
    const sessions: http2.ServerHttp2Session[] = [];
    const settingsSeen = new Promise<http2.Settings>((resolve) => {
      server.on('session', (session) => {
        sessions.push(session);
        session.once('remoteSettings', resolve);
      });
    });
    // A stream the test never answers: the call waits until the connection is torn down.
    server.on('stream', () => {});
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const connection = new NodeConnection(`127.0.0.1:${(server.address() as AddressInfo).port}`);
    const controller = new AbortController();
    const call = connection.unary('getPartitionMap', {}, { signal: controller.signal, deadline: Date.now() + 30_000 }).catch(() => undefined);
    try {
      const settings = await settingsSeen;
      expect(settings.initialWindowSize).toBe(DEFAULT_FLOW_CONTROL_WINDOW_BYTES);
      await ping(sessions[0]!);
      expect(sessions[0]!.state.remoteWindowSize).toBe(DEFAULT_FLOW_CONTROL_WINDOW_BYTES);
    } finally {
      controller.abort();
      await call;
      connection.close();
      for (const s of sessions) s.destroy();
      server.close();
    }
  });
});
