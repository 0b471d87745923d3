import { createRequire } from 'node:module';
import type * as BullMQ from 'bullmq';
import type * as IORedis from 'ioredis';

/*
 * BullMQ and ioredis are CommonJS packages. An ESM `import { Queue } from 'bullmq'` makes Node run
 * cjs-module-lexer over the package and every file it re-exports (about 220 for bullmq) to learn the
 * export names, and wrap them in a module namespace: ~0.12 CPU s and ~0.2 s of wall time at every
 * start of a CLI command that uses the job queues, an ingest's included. `require` loads the same
 * module instance (one CommonJS cache, shared with any `import 'bullmq'`) without that. jobs/ takes
 * BullMQ's and ioredis' classes from here; types still come from the packages.
 */
const require = createRequire(import.meta.url);
const bullmq = require('bullmq') as typeof BullMQ;
const ioredis = require('ioredis') as typeof IORedis;

export const { FlowProducer, Job, Queue, QueueEvents, UnrecoverableError, Worker } = bullmq;
export const { Redis } = ioredis;

// Classes are types too: the same names as types, with the packages' own defaults.
export type FlowProducer = BullMQ.FlowProducer;
export type Job<DataType = any, ReturnType = any, NameType extends string = string> = BullMQ.Job<DataType, ReturnType, NameType>;
export type Queue<DataType = any, ResultType = any, NameType extends string = string> = BullMQ.Queue<DataType, ResultType, NameType>;
export type QueueEvents = BullMQ.QueueEvents;
export type UnrecoverableError = BullMQ.UnrecoverableError;
export type Worker<DataType = any, ResultType = any, NameType extends string = string> = BullMQ.Worker<DataType, ResultType, NameType>;
export type Redis = IORedis.Redis;
