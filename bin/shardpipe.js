#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm run build` (run by `npm run setup`).
// The young-generation cap (dist/cli/young-generation.js) goes first, before the CLI's modules are
// loaded: loading them grows V8's young generation.
await import('../dist/cli/young-generation.js');
await import('../dist/cli/main.js');
