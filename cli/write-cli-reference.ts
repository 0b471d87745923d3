// Rewrites the CLI reference in README.md from the command tree (npm run docs:cli).
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { CliContext } from './cli-context.js';
import { loadCliConfig } from './cli-env.js';
import { cliReference, withReference } from './cli-reference.js';
import { buildProgram } from './program.js';

const readmePath = resolve(import.meta.dirname, '../../README.md');
const program = buildProgram(new CliContext(loadCliConfig({})));
writeFileSync(readmePath, withReference(readFileSync(readmePath, 'utf8'), cliReference(program)));
