import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CliContext } from '../../cli/cli-context.js';
import { loadCliConfig } from '../../cli/cli-env.js';
import { cliReference, withReference } from '../../cli/cli-reference.js';
import { buildProgram } from '../../cli/program.js';

describe('README CLI reference', () => {
  it('matches the --help of every command (run `npm run docs:cli` after changing the CLI)', () => {
    const readme = readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8');
    const program = buildProgram(new CliContext(loadCliConfig({})));
    expect(withReference(readme, cliReference(program))).toBe(readme);
  });

  it('every command has a description and --help', () => {
    const program = buildProgram(new CliContext(loadCliConfig({})));
    const all = (c: typeof program): (typeof program)[] => [c, ...c.commands.flatMap(all)];
    for (const cmd of all(program)) {
      expect(cmd.description(), cmd.name()).not.toBe('');
      expect(cmd.helpInformation()).toContain('--help');
    }
  });
});
