import type { Etcd3 } from 'etcd3';
import { z } from 'zod';
import { etcdCall } from './etcd-connection.js';
import { ETCD_PREFIX } from './etcd-map-store.js';
import { operationKeys } from './etcd-operations.js';
import type { GcPendingPartition } from './partition-gc.js';

const whole = z.number().int().min(0);
const reportSchema = z.array(z.object({ partition: whole.max(0xffffffff), leftAtMs: whole, deleteAtMs: whole, bytes: whole }));

/** What one node reported under `gc/HOST:PORT`: the partitions that left it and wait for GC. */
export interface GcReport {
  node: string;
  partitions: GcPendingPartition[];
}

/**
 * Every node's data awaiting GC, as reported in etcd (`gc/HOST:PORT`, under each node's lease:
 * a node that is gone has no report). Unreadable reports are left out. Nodes in address order.
 */
export async function readGcReports(etcd: Etcd3, display: string, prefix = ETCD_PREFIX): Promise<GcReport[]> {
  const keys = operationKeys(prefix);
  const res = await etcdCall(display, 'reading GC reports', () => etcd.getAll().prefix(keys.gc).exec());
  const reports: GcReport[] = [];
  for (const kv of res.kvs) {
    const node = kv.key.toString('utf8').slice(keys.gc.length);
    let json: unknown;
    try {
      json = JSON.parse(kv.value.toString('utf8'));
    } catch {
      continue;
    }
    const parsed = reportSchema.safeParse(json);
    if (parsed.success && parsed.data.length > 0) reports.push({ node, partitions: parsed.data });
  }
  return reports.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
}
