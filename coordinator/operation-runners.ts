import { MovementRunner } from './movement-runner.js';
import type { OperationRunner } from './operation-runner.js';
import { MergeRunner } from './merge-runner.js';
import { SplitRunner } from './split-runner.js';

/** The runners a coordinator uses unless told otherwise: one per family of operation kinds. */
export function defaultRunners(): OperationRunner[] {
  return [new MovementRunner(), new SplitRunner(), new MergeRunner()];
}
