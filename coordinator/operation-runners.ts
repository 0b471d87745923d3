import { MovementRunner } from './movement-runner.js';
import type { OperationRunner } from './operation-runner.js';

/** The runners a coordinator uses unless told otherwise: one per family of operation kinds. */
export function defaultRunners(): OperationRunner[] {
  return [new MovementRunner()];
}
