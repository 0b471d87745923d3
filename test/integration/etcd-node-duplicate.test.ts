import { afterEach, describe, expect, it } from 'vitest';
import { CliProcess, EtcdTestCluster } from '../helpers/etcd-cluster.js';

// Real etcd and real `store start --etcd` processes: two nodes must not share one --node address.
let cluster: EtcdTestCluster | undefined;
// Not in the cluster's node list (its address is taken): stopped here if an assertion fails first.
let impostor: CliProcess | undefined;
afterEach(async () => {
  await impostor?.kill();
  impostor = undefined;
  await cluster?.close();
  cluster = undefined;
});

describe('one registration per --node address', () => {
  it('a second node started with the same --node refuses to start with STORE_NODE_DUPLICATE and leaves the first registered; a node SIGKILLed and restarted at once on its data folder takes its registration over', async () => {
    cluster = await EtcdTestCluster.start({ lease: '1s' });
    const first = await cluster.startNode();
    const address = [...cluster.nodes.keys()][0]!;
    const leaseBefore = await cluster.waitForLease(address, (l) => l !== undefined);

    const second = (impostor = new CliProcess(['store', 'start', '--etcd', cluster.etcd.url, '--node', address, '--data', cluster.dir.sub('impostor'), '--lease', '1s']).start());
    const code = await new Promise<number | null>((resolve) => second.child!.once('exit', (exitCode) => resolve(exitCode)));
    expect(code).toBe(1);
    expect(second.stderr).toContain('STORE_NODE_DUPLICATE');
    expect(second.stderr).toContain(`another process is registered in etcd as node ${address}`);
    // The first keeps its registration, under its own lease, and is still the one alive.
    expect(await cluster.waitForLease(address, (l) => l !== undefined)).toBe(leaseBefore);
    expect(first.child!.exitCode).toBeNull();

    // A crash leaves a registration behind until its lease runs out: the same node (its own data folder) takes it over.
    await first.kill('SIGKILL');
    const restarted = await cluster.startNode(address);
    const leaseAfter = await cluster.waitForLease(address, (l) => l !== undefined);
    expect(leaseAfter).not.toBe(leaseBefore);
    expect(restarted.stderr).not.toContain('STORE_NODE_DUPLICATE');
  }, 60_000);
});
