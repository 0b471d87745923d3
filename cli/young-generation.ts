import { capYoungGeneration } from '../common/index.js';

// The first import of the CLI's entry (main.ts), before any command's modules load: a small young
// generation for `shardpipe ingest` (common/young-generation.ts says why). Measured there: the
// ingest child's peak RSS fell and its CPU per row did too (README "Memory"). Not for other
// commands: a store node's scavenges doubled under it (the per-row BulkInsert form more), for
// 15 MiB of its peak. Young-generation flags given to node, on its command line or in
// NODE_OPTIONS, win.
const YOUNG_GENERATION_FLAG = /--(max-semi-space-size|min-semi-space-size|semi-space-growth-factor|max-young-generation-size)\b/;
const CAPPED_COMMANDS = new Set(['ingest']);

const flagGiven = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((arg) => YOUNG_GENERATION_FLAG.test(arg));
if (CAPPED_COMMANDS.has(process.argv[2] ?? '') && !flagGiven) capYoungGeneration();
