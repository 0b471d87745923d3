export { Coordinator } from './coordinator.js';
export type { CoordinatorOptions } from './coordinator.js';
export { initialMap, promote, reconcile, resync } from './chain-plan.js';
export type { ChainChange, CopiedReplica, InitialRanges } from './chain-plan.js';
export { PrivateEtcd } from './etcd-server-process.js';
export type { PrivateEtcdOptions } from './etcd-server-process.js';
export type { OperationAdvance, OperationContext, OperationRunner } from './operation-runner.js';
export { defaultRunners } from './operation-runners.js';
