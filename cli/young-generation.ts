import { capYoungGeneration } from '../common/index.js';

// The first import of the CLI's entry (main.ts), before any command's modules load: a small young
// generation for every command (common/young-generation.ts says why). Young-generation flags given
// to node, on its command line or in NODE_OPTIONS, win.
const YOUNG_GENERATION_FLAG = /--(max-semi-space-size|min-semi-space-size|semi-space-growth-factor|max-young-generation-size)\b/;

if (![...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((arg) => YOUNG_GENERATION_FLAG.test(arg))) capYoungGeneration();
